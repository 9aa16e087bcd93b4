"""Reading checkpoints safely: tensors and plain containers only, one clear error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars and arrays as Python numbers and lists, so that a checkpoint holding it
    reads back with ``weights_only=True`` (which admits tensors and plain containers only)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def load_state(path: str | Path, map_location: Any = None) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)``; a truncated or corrupted file raises ``RuntimeError``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / corrupted / not a checkpoint
        raise RuntimeError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}") from None
