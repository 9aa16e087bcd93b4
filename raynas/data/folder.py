"""Image folders, ``root/{train,test}/<class>/*.png``, decoded once into a checksummed ``.npz`` cache under
``raynas.data.cache.cache_dir()`` (never inside the data directory)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from raynas.data.cache import cache_dir
from raynas.data.specs import SPECS, make_dataset
from trials.batches import DataError, Dataset

_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def find(name: str, root: Path) -> Path | None:
    """The directory holding ``train/`` and ``test/`` (``root``, ``root/<name>-jpeg`` or ``root/<name>``)."""
    for cand in (root, root / f"{name}-jpeg", root / name):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    return None


class _ImageFile(NamedTuple):
    path: str
    rel: str  # relative to the layout root: part of the cache key
    label: int
    size: int
    mtime_ns: int


def _image_files(root: Path, split: str, classes: list[str]) -> list[_ImageFile]:
    # os.scandir, not pathlib: for 60k files pathlib's per-path overhead costs seconds.
    files = []
    for label, cls in enumerate(classes):
        cdir = root / split / cls
        if not cdir.is_dir():
            continue
        with os.scandir(cdir) as it:
            entries = sorted(
                (e for e in it if os.path.splitext(e.name)[1].lower() in _IMAGE_EXTS), key=lambda e: e.name
            )
        for e in entries:
            st = e.stat()
            files.append(_ImageFile(e.path, f"{split}/{cls}/{e.name}", label, st.st_size, st.st_mtime_ns))
    return files


def read(name: str, root: Path) -> Dataset:
    """``root/{train,test}/<class>/*.jpg|png``; labels are the sorted class names' ranks.

    Sorted names give CIFAR-10's airplane..truck and CIFAR-100's fine-label order.  The train set is
    put in a fixed (seed 0) random order: the folder order is grouped by class, and DARTS' split takes
    the first/second half of the index order.
    """
    side = 32  # CIFAR; the only datasets read from image folders
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    want = SPECS[name].num_classes
    if len(classes) != want:
        raise DataError(f"{name}: {root / 'train'} has {len(classes)} class folders, expected {want}")
    extra = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(f"{name}: {root / 'test'} has class folders not in train/: {extra[:5]}")
    splits = {}
    for split in ("train", "test"):
        files = _image_files(root, split, classes)
        if not files:
            raise DataError(f"{name}: no images ({'/'.join(sorted(_IMAGE_EXTS))}) under {root / split}/<class>/")
        x, y = _decode_cached(root, split, files, name)
        if x.shape[2:] != (side, side):
            raise DataError(
                f"{name}: images under {root / split} are {x.shape[2]}x{x.shape[3]}, expected {side}x{side}"
            )
        splits[split] = (x, y)
    perm = torch.randperm(len(splits["train"][1]), generator=torch.Generator().manual_seed(0)).numpy()
    (trx, try_), (tex, tey) = splits["train"], splits["test"]
    return make_dataset(name, trx[perm], try_[perm], tex, tey)


_CACHE_VERSION = "raynas-image-cache-v1"


def image_cache(name: str, split: str, key: str) -> Path:
    """The cache file of one split of one image folder (``key``: its content key)."""
    return cache_dir() / "images" / f"{name}-{split}-{key[:20]}.npz"


def _decode_cached(root: Path, split: str, files: list[_ImageFile], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode the images, reusing ``CACHE/images/<name>-<split>-<key>.npz`` when it matches the files.

    Decoding 60k JPEGs takes seconds; the cache loads in a fraction of one.  It is keyed on the data
    directory and every file's path, size and mtime, holds no pickles (read with allow_pickle=False),
    and is skipped silently if the cache directory is not writable.  The data directory is only read.
    """
    h = hashlib.sha256(f"{_CACHE_VERSION}\0{root.resolve()}\n".encode())
    for f in files:
        h.update(f"{f.rel}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
    key = h.hexdigest()
    cache = image_cache(name, split, key)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["x"], z["y"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable: rebuild
    x, y = _decode_images(files, name), np.array([f.label for f in files], np.int64)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), x=x, y=y)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return x, y


def _decode_images(files: list[_ImageFile], name: str) -> np.ndarray:
    """Decode to uint8 [N, 3, H, W] with Pillow (torchvision.io's decoders are deprecated since 0.29)."""
    from PIL import Image, UnidentifiedImageError

    out: np.ndarray | None = None
    for i, f in enumerate(files):
        try:
            with Image.open(f.path) as im:
                img = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{name}: cannot decode {f.path}: {e}") from e
        if out is None:
            out = np.empty((len(files), *img.shape), np.uint8)
        if img.shape != out.shape[1:]:
            raise DataError(f"{name}: {f.path} is {img.shape}, other images are {out.shape[1:]} (C,H,W)")
        out[i] = img
    assert out is not None
    return out
