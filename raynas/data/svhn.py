"""SVHN from torchvision's ``{train,test}_32x32.mat`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raynas.data.specs import FIX_HINT, Source, make_dataset
from trials.batches import DataError, Dataset

_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def locate(root: Path, download: bool) -> Source:
    cands = (root, root / "svhn", root / "SVHN")
    d = next((c for c in cands if all((c / n).is_file() for n in _SVHN_FILES)), None)
    if d is None and download:
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import download_url

        try:
            for split in ("train", "test"):
                url, fname, md5 = SVHN.split_list[split]
                download_url(url, str(root), filename=fname, md5=md5)
        except Exception as e:  # network errors come in many types
            raise DataError(f"svhn: download into {root} failed ({e}); pass --data-dir DIR with a copy") from e
        d = root
    if d is None:
        raise DataError(
            f"svhn not found under {root} (looked for {' and '.join(_SVHN_FILES)}, also in svhn/); {FIX_HINT}"
        )
    return Source("svhn", d)


def read(name: str, d: Path) -> Dataset:
    return make_dataset("svhn", *_read_svhn_mat(d / _SVHN_FILES[0]), *_read_svhn_mat(d / _SVHN_FILES[1]))


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's SVHN layout: X is (32, 32, 3, N) uint8, y is (N, 1) with digit 0 stored as 10."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=("X", "y"))
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise DataError(f"svhn: cannot read {path}: {e}") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"svhn: {path} X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, {len(y)})")
    return x.transpose(3, 2, 0, 1), np.where(y == 10, 0, y)
