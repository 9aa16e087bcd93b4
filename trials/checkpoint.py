"""Reading checkpoints safely: tensors and plain containers only, one clear error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_state(path: str | Path, map_location: Any = None) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)``; a truncated or corrupted file raises ``RuntimeError``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / corrupted / not a checkpoint
        raise RuntimeError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}") from None
