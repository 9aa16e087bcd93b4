"""Fashion-MNIST from LeCun's idx files (plain or gzipped), e.g. Debian's ``dataset-fashion-mnist``."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from raynas.data.specs import FIX_HINT, Source, make_dataset
from trials.batches import DataError, Dataset

#: Where Debian's ``dataset-fashion-mnist`` package puts the four idx files (gzipped).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _find_idx(d: Path, stem: str) -> Path | None:
    for p in (d / stem, d / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def locate(root: Path, explicit: bool, download: bool) -> Source:
    cands = [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    if not explicit:
        cands.insert(0, DEBIAN_FASHION_MNIST)
    d = next((c for c in cands if all(_find_idx(c, s) for s in _FMNIST_FILES)), None)
    if d is None and download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), train=True, download=True)  # reads idx itself: no pickle involved
        except Exception as e:  # network errors come in many types
            raise DataError(f"fashion-mnist: download into {root} failed ({e}); pass --data-dir DIR") from e
        d = root / "FashionMNIST" / "raw"
    if d is None:
        where = f"{root}" + ("" if explicit else f" or {DEBIAN_FASHION_MNIST}")
        raise DataError(
            f"fashion-mnist not found under {where} (looked for train-images-idx3-ubyte[.gz] and the "
            f"other idx files, also in FashionMNIST/raw/); {FIX_HINT} (Debian: apt-get install "
            f"dataset-fashion-mnist)"
        )
    return Source("idx", d)


def read(name: str, d: Path) -> Dataset:
    paths = [_find_idx(d, s) for s in _FMNIST_FILES]
    if None in paths:
        raise DataError(f"fashion-mnist: idx files vanished from {d}")
    x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in paths if p is not None)
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"fashion-mnist: idx files in {d} have shapes {x.shape} and {y.shape}")
    return make_dataset("fashion-mnist", x_tr[:, None], y_tr, x_te[:, None], y_te)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format): 0, 0, type 0x08 (ubyte), ndim, big-endian dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupted .gz
        raise DataError(f"fashion-mnist: cannot read {path} ({e}); the file is truncated or corrupted") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"fashion-mnist: {path} is not a ubyte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DataError(f"fashion-mnist: {path} has {data.size} values, header says {dims}")
    return data.reshape(dims)
