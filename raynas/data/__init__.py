"""Datasets by name: find the files, read them into memory, hand the loop a :class:`Dataset`.

Loading never downloads unless ``download=True``.  One module per on-disk format / dataset family
(:mod:`~raynas.data.cifar`, :mod:`~raynas.data.folder`, :mod:`~raynas.data.svhn`,
:mod:`~raynas.data.imagenet16`, :mod:`~raynas.data.fashion_mnist`, :mod:`~raynas.data.digits`), each
with ``locate`` (where are the files, fetching them if asked) and ``read``; per-dataset constants live
in :mod:`~raynas.data.specs`.  Pickled files (the CIFAR python release and ImageNet16) are read with
:class:`RestrictedUnpickler`, which resolves only the numpy globals needed to rebuild arrays, so a
tampered file cannot run code.

The batch side (:class:`Dataset`, :class:`BatchStream`, ``cutout``, ``split_indices``) belongs to the
search loop and lives in :mod:`trials.batches`; it is re-exported here for older imports.
"""

from __future__ import annotations

import os
from pathlib import Path

from raynas.data import cifar, digits, fashion_mnist, folder, imagenet16, svhn
from raynas.data.cache import cache_dir
from raynas.data.fashion_mnist import DEBIAN_FASHION_MNIST
from raynas.data.specs import DATASETS, SPECS, Source
from raynas.data.unpickler import RestrictedUnpickler, restricted_pickle_load
from trials.batches import BatchStream, DataError, Dataset, crop_flip, cutout, normalize, split_indices

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "BatchStream",
    "check_dataset",
    "cutout",
    "DataError",
    "Dataset",
    "RestrictedUnpickler",
    "crop_flip",
    "default_data_dir",
    "load_dataset",
    "normalize",
    "restricted_pickle_load",
    "split_indices",
]


def default_data_dir() -> Path:
    """``$RAYNAS_DATA_DIR`` or ``CACHE/data`` (``raynas.data.cache``): absolute, so Ray trials that chdir
    still find it."""
    return Path(os.environ["RAYNAS_DATA_DIR"]).expanduser() if os.environ.get("RAYNAS_DATA_DIR") \
        else cache_dir() / "data"


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) fully into memory.

    ``data_dir`` defaults to :func:`default_data_dir` (fashion-mnist also looks in
    :data:`DEBIAN_FASHION_MNIST`; digits needs none).  Nothing is fetched unless ``download`` is true.
    """
    key = _canonical(name)
    src = _locate(key, data_dir, download)
    if src.kind == "sklearn":
        return digits.load()
    assert src.path is not None
    return _READERS[src.kind](key, src.path)


def check_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> Path | None:
    """Make sure :func:`load_dataset` will work, before trials start; return the directory found.

    Meant for the driver process: it fetches missing files now if ``download`` (once, instead of every
    trial racing to download), decodes an image-folder layout once so that trials read its cache, and
    reads every other layout once, so that a truncated or corrupted file is one line naming it here
    rather than an error in every trial attempt.  Raises :class:`DataError`.
    """
    key = _canonical(name)
    src = _locate(key, data_dir, download)
    if src.kind != "sklearn":
        assert src.path is not None
        _READERS[src.kind](key, src.path)
    return src.path


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = {"imagenet16": "imagenet16-120", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}.get(key, key)
    if key not in SPECS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _locate(key: str, data_dir: str | os.PathLike[str] | None, download: bool) -> Source:
    if key == "digits":
        return Source("sklearn", None)
    explicit = data_dir is not None
    root = Path(data_dir).expanduser().resolve() if explicit else default_data_dir()
    if key in ("cifar10", "cifar100"):
        return cifar.locate(key, root, download)
    if key == "svhn":
        return svhn.locate(root, download)
    if key == "imagenet16-120":
        return imagenet16.locate(root, download)
    return fashion_mnist.locate(root, explicit, download)


_READERS = {
    "cifar-python": cifar.read,
    "image-folder": folder.read,
    "svhn": svhn.read,
    "imagenet16": imagenet16.read,
    "idx": fashion_mnist.read,
}
