"""Where raynas keeps what it derives from datasets: ``$RAYNAS_CACHE``, else ``$XDG_CACHE_HOME/raynas``, else
``~/.cache/raynas``. Never the data directory itself, which may be read-only or shared."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "RAYNAS_CACHE"


def cache_dir() -> Path:
    """The cache root, absolute (Ray trials run in their own working directories)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(base).expanduser() / "raynas").resolve()
