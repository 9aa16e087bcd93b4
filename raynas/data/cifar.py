"""CIFAR-10 / CIFAR-100 from the official python release (pickled batches of CHW rows).

The same batch layout (a dict of ``data`` rows and labels) is used by Downsampled ImageNet, so
:func:`read_batch` serves :mod:`raynas.data.imagenet16` too.  The batches are read with the
restricted unpickler; an image-folder copy of CIFAR is located here and read by :mod:`raynas.data.folder`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from raynas.data import folder
from raynas.data.specs import FIX_HINT, Source, make_dataset
from raynas.data.unpickler import restricted_pickle_load
from trials.batches import DataError, Dataset

_CIFAR_PY = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def read_batch(path: Path, dataset: str, label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch file: uint8 images [N, 3, side, side] and int64 labels ``entry[label_key]``."""
    return _pickled_images(_read_pickled_batch(path, dataset), label_key, side, path, dataset)


def _read_pickled_batch(path: Path, dataset: str) -> dict[str, Any]:
    try:
        entry = restricted_pickle_load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{dataset}: cannot read {path}: {e}") from e
    if not isinstance(entry, dict):
        raise DataError(f"{dataset}: {path} holds a {type(entry).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _pickled_images(
    entry: dict[str, Any], label_key: str, side: int, path: Path, dataset: str
) -> tuple[np.ndarray, np.ndarray]:
    """``entry['data']`` rows are CHW-flattened uint8 images (the CIFAR/ImageNet16 layout)."""
    try:
        data, labels = entry["data"], entry[label_key]
    except KeyError as e:
        raise DataError(f"{dataset}: {path} has no {e.args[0]!r} entry") from None
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side * side or len(labels) != len(data):
        raise DataError(
            f"{dataset}: {path} data is {data.dtype} {data.shape} with {len(labels)} labels, "
            f"expected uint8 (N, {3 * side * side})"
        )
    return data.reshape(-1, 3, side, side), labels


def locate(name: str, root: Path, download: bool) -> Source:
    """The python release if present (fetched if ``download``), else an image-folder copy."""
    py_dir = _find_cifar_python(name, root)
    images = None if py_dir else folder.find(name, root)
    if py_dir is None and images is None and download:
        _download_cifar(name, root)
        py_dir = _find_cifar_python(name, root)
    if py_dir is not None:
        return Source("cifar-python", py_dir)
    if images is not None:
        return Source("image-folder", images)
    raise DataError(
        f"{name} not found under {root} (looked for {_CIFAR_PY[name]}/ or train/<class>/ and "
        f"test/<class>/ images, also in {name}-jpeg/); {FIX_HINT}"
    )


def _find_cifar_python(name: str, root: Path) -> Path | None:
    marker = "data_batch_1" if name == "cifar10" else "train"
    for cand in (root / _CIFAR_PY[name], root):
        if (cand / marker).is_file():
            return cand
    return None


def read(name: str, d: Path) -> Dataset:
    """The official python release: pickled dicts of 'data' (N, 3072) uint8 CHW rows and labels."""
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_files = ["test_batch"] if name == "cifar10" else ["test"]
    label_key = "labels" if name == "cifar10" else "fine_labels"  # CIFAR-100: the 100-class labels

    def read_files(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            if not (d / f).is_file():
                raise DataError(f"{name}: {d / f} is missing (incomplete {_CIFAR_PY[name]}?); {FIX_HINT}")
            x, y = read_batch(d / f, name, label_key, 32)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    return make_dataset(name, *read_files(train_files), *read_files(test_files))


def _download_cifar(name: str, root: Path) -> None:
    # Only the archive download/extraction of torchvision: constructing CIFAR10 would unpickle the
    # batches with plain pickle, which we avoid even for checksummed files.
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:  # network errors come in many types
        raise DataError(f"{name}: download into {root} failed ({e}); pass --data-dir DIR with a copy") from e
