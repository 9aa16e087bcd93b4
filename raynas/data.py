"""Datasets held in memory as uint8 tensors, and seeded batched augmentation.

Why not a ``DataLoader``: the datasets used for architecture search are small (CIFAR-10 is 150 MiB as
uint8), so the whole split lives in (GPU) memory and each batch is cropped, flipped and normalised in
one vectorised step.  Every random draw comes from a ``torch.Generator`` the caller owns, so a search
is bit-reproducible, and resumable from an epoch boundary by saving ``generator.get_state()``; there
are no worker processes and no per-step Python work per image.

Loading never downloads unless ``download=True``.  Pickled files (the CIFAR python release and
ImageNet16) are read with :class:`RestrictedUnpickler`, which resolves only the numpy globals needed to
rebuild arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "BatchStream",
    "check_dataset",
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

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "imagenet16-120", "fashion-mnist", "digits")

#: Where Debian's ``dataset-fashion-mnist`` package puts the four idx files (gzipped).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_FIX = "pass --data-dir DIR pointing at it, or --download"


class DataError(ValueError):
    """A dataset cannot be found or read; the message says where we looked and which flag fixes it."""


# --------------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """One labelled train/test pair, uint8 NCHW in host memory (moved to a device by BatchStream)."""

    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    crop_padding: int  # zero padding of the random crop (0: no crop)
    flip: bool  # random horizontal flip is label-preserving for this dataset

    def __post_init__(self) -> None:
        # Fail at load time, not deep inside a trial, if a reader produced something malformed.
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name} {split}_x must be uint8 [N,C,H,W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name} {split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{self.name} {split} labels outside 0..{self.num_classes - 1}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} "
                f"!= test images {tuple(self.test_x.shape[1:])}"
            )
        if not len(self.mean) == len(self.std) == self.train_x.shape[1]:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.train_x.shape[1]})")

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Side of the (square) images."""
        return int(self.train_x.shape[2])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"classes={self.num_classes}, crop_padding={self.crop_padding}, flip={self.flip})"
        )


class _Spec(NamedTuple):
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool


def _div255(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(v / 255 for v in values)


# Normalisation constants and augmentation are those of the papers' code:
# CIFAR-10: DARTS utils.py (CIFAR_MEAN/STD); CIFAR-100, ImageNet16-120: NAS-Bench-201 / xautodl
# get_datasets (RandomCrop(32, 4) / RandomCrop(16, 2) + RandomHorizontalFlip).  SVHN: digits are not
# mirror-symmetric, but RobustDARTS (the reference code that searches on SVHN) flips them too
# (src/utils.py _data_transforms_svhn), so flip.  Fashion-MNIST: flipping clothes left/right keeps the
# class (a mirrored shoe is still a shoe), so flip=True with a 2-pixel crop for 28x28.  sklearn digits (8x8):
# no crop, no flip; its mean/std are computed from its train split at load time.
_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(10, (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768), 4, True),
    "cifar100": _Spec(100, _div255((129.3, 124.1, 112.4)), _div255((68.2, 65.4, 70.4)), 4, True),
    "svhn": _Spec(10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, True),
    "imagenet16-120": _Spec(120, _div255((122.68, 116.66, 104.01)), _div255((63.22, 61.26, 65.09)), 2, True),
    "fashion-mnist": _Spec(10, (0.2860,), (0.3530,), 2, True),
    "digits": _Spec(10, (0.0,), (1.0,), 0, False),  # mean/std replaced at load time
}


def _make(name: str, train_x: np.ndarray, train_y: Any, test_x: np.ndarray, test_y: Any, **override: Any) -> Dataset:
    spec = _SPECS[name]._replace(**override)

    def tx(a: np.ndarray) -> torch.Tensor:
        # Own, writable, contiguous memory: np.frombuffer / np.load views are read-only.
        return torch.from_numpy(np.require(a, requirements=["C", "W", "O"]))

    return Dataset(
        name,
        tx(train_x),
        tx(np.asarray(train_y, np.int64)),
        tx(test_x),
        tx(np.asarray(test_y, np.int64)),
        *spec,
    )


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$RAYNAS_DATA_DIR`` or ``~/.cache/raynas/data``: absolute, so Ray trials that chdir still find it."""
    return Path(os.environ.get("RAYNAS_DATA_DIR") or "~/.cache/raynas/data").expanduser()


class _Source(NamedTuple):
    """Where a dataset was found: which reader to use, and its directory (None for digits)."""

    kind: str  # "cifar-python" | "image-folder" | "svhn" | "imagenet16" | "idx" | "sklearn"
    path: Path | None


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) fully into memory.

    ``data_dir`` defaults to :func:`default_data_dir` (fashion-mnist also looks in
    :data:`DEBIAN_FASHION_MNIST`; digits needs none).  Nothing is fetched unless ``download`` is true.
    """
    key = _canonical(name)
    src = _locate(key, data_dir, download)
    if src.kind == "sklearn":
        return _load_digits()
    assert src.path is not None
    return _READERS[src.kind](key, src.path)


def check_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> Path | None:
    """Make sure :func:`load_dataset` will work, before trials start; return the directory found.

    Meant for the driver process: it fetches missing files now if ``download`` (once, instead of every
    trial racing to download), and decodes an image-folder layout once so that trials read its cache.
    Other layouts are only located, not read.  Raises :class:`DataError`.
    """
    key = _canonical(name)
    src = _locate(key, data_dir, download)
    if src.kind == "image-folder":
        assert src.path is not None
        _read_image_folder(key, src.path)
    return src.path


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = {"imagenet16": "imagenet16-120", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}.get(key, key)
    if key not in _SPECS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _locate(key: str, data_dir: str | os.PathLike[str] | None, download: bool) -> _Source:
    if key == "digits":
        return _Source("sklearn", None)
    explicit = data_dir is not None
    root = Path(data_dir).expanduser().resolve() if explicit else default_data_dir()
    if key in ("cifar10", "cifar100"):
        return _locate_cifar(key, root, download)
    if key == "svhn":
        return _locate_svhn(root, download)
    if key == "imagenet16-120":
        return _locate_imagenet16(root, download)
    return _locate_fashion_mnist(root, explicit, download)


# --------------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------------


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes; only latin-1 is allowed."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(obj, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Take the callables from numpy's own reducers rather than importing numpy.core (deprecated in
    # numpy 2), and accept both module spellings: files from numpy 1 say numpy.core.*, numpy 2 numpy._core.*.
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.empty(1).__reduce_ex__(5)[0]  # protocol 5 out-of-band arrays
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


_SAFE_BUILTINS = {"bytearray": bytearray, "set": set, "frozenset": frozenset, "complex": complex}
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("_codecs", "encode"): _latin1_encode,
    **{(mod, k): v for mod in ("builtins", "__builtin__") for k, v in _SAFE_BUILTINS.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array-reconstruction globals and a few inert builtins.

    Dataset pickles come from outside the project; plain ``pickle.load`` would run any callable a
    file names (``os.system`` ...).  Everything else is refused with ``pickle.UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data file") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a data file")


def restricted_pickle_load(file: str | os.PathLike[str] | BinaryIO) -> Any:
    """Load a (possibly Python 2) data pickle with :class:`RestrictedUnpickler`; latin-1 like torchvision."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    return RestrictedUnpickler(file, encoding="latin1").load()


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


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------------------------------

_CIFAR_PY = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def _locate_cifar(name: str, root: Path, download: bool) -> _Source:
    py_dir = _find_cifar_python(name, root)
    folder = None if py_dir else _find_image_folder(name, root)
    if py_dir is None and folder is None and download:
        _download_cifar(name, root)
        py_dir = _find_cifar_python(name, root)
    if py_dir is not None:
        return _Source("cifar-python", py_dir)
    if folder is not None:
        return _Source("image-folder", folder)
    raise DataError(
        f"{name} not found under {root} (looked for {_CIFAR_PY[name]}/ or train/<class>/ and "
        f"test/<class>/ images, also in {name}-jpeg/); {_FIX}"
    )


def _find_cifar_python(name: str, root: Path) -> Path | None:
    marker = "data_batch_1" if name == "cifar10" else "train"
    for cand in (root / _CIFAR_PY[name], root):
        if (cand / marker).is_file():
            return cand
    return None


def _read_cifar_python(name: str, d: Path) -> Dataset:
    """The official python release: pickled dicts of 'data' (N, 3072) uint8 CHW rows and labels."""
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_files = ["test_batch"] if name == "cifar10" else ["test"]
    label_key = "labels" if name == "cifar10" else "fine_labels"  # CIFAR-100: the 100-class labels

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            if not (d / f).is_file():
                raise DataError(f"{name}: {d / f} is missing (incomplete {_CIFAR_PY[name]}?); {_FIX}")
            x, y = _pickled_images(_read_pickled_batch(d / f, name), label_key, 32, d / f, name)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    return _make(name, *read(train_files), *read(test_files))


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


def _find_image_folder(name: str, root: Path) -> Path | None:
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


def _read_image_folder(name: str, root: Path) -> Dataset:
    """``root/{train,test}/<class>/*.jpg|png``; labels are the sorted class names' ranks.

    Sorted names give CIFAR-10's airplane..truck and CIFAR-100's fine-label order.  The train set is
    put in a fixed (seed 0) random order: the folder order is grouped by class, and DARTS' split takes
    the first/second half of the index order.
    """
    side = 32  # CIFAR; the only datasets read from image folders
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    want = _SPECS[name].num_classes
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
    return _make(name, trx[perm], try_[perm], tex, tey)


_CACHE_VERSION = "raynas-image-cache-v1"


def _decode_cached(root: Path, split: str, files: list[_ImageFile], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode the images, reusing ``root/.raynas-cache-<split>.npz`` when it matches the files.

    Decoding 60k JPEGs takes seconds; the cache loads in a fraction of one.  It is keyed on every
    file's path, size and mtime, holds no pickles (read with allow_pickle=False), and is skipped
    silently if ``root`` is not writable.
    """
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for f in files:
        h.update(f"{f.rel}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
    key = h.hexdigest()
    cache = root / f".raynas-cache-{split}.npz"
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


# --------------------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------------------


_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _locate_svhn(root: Path, download: bool) -> _Source:
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
        raise DataError(f"svhn not found under {root} (looked for {' and '.join(_SVHN_FILES)}, also in svhn/); {_FIX}")
    return _Source("svhn", d)


def _read_svhn(name: str, d: Path) -> Dataset:
    return _make("svhn", *_read_svhn_mat(d / _SVHN_FILES[0]), *_read_svhn_mat(d / _SVHN_FILES[1]))


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


# --------------------------------------------------------------------------------------------------
# ImageNet16-120
# --------------------------------------------------------------------------------------------------


_IN16_TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))


def _locate_imagenet16(root: Path, download: bool) -> _Source:
    cands = (root, root / "ImageNet16", root / "imagenet16")
    d = next((c for c in cands if (c / "val_data").is_file() or (c / "train_data_batch_1").is_file()), None)
    if d is None:
        hint = "--download cannot fetch it (image-net.org needs a login)" if download else "there is no --download"
        raise DataError(
            f"imagenet16-120 not found under {root} (looked for train_data_batch_1..10 and val_data, "
            f"also in ImageNet16/); pass --data-dir DIR pointing at the 16x16 Downsampled ImageNet "
            f"from image-net.org ({hint})"
        )
    missing = [f for f in [*_IN16_TRAIN, "val_data"] if not (d / f).is_file()]
    if missing:
        raise DataError(f"imagenet16-120: {d} lacks {', '.join(missing)}; pass --data-dir DIR with the full set")
    return _Source("imagenet16", d)


def _read_imagenet16(name: str, d: Path) -> Dataset:
    """Downsampled ImageNet 16x16 pickles; keep classes 1..120 as 0..119, as xautodl's ImageNet16 does."""

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:  # filter per file: the full training set is 1 GiB, the 120 classes a tenth of it
            x, y = _pickled_images(_read_pickled_batch(d / f, "imagenet16-120"), "labels", 16, d / f, "imagenet16-120")
            keep = (y >= 1) & (y <= 120)
            xs.append(x[keep])
            ys.append(y[keep] - 1)
        return np.concatenate(xs), np.concatenate(ys)

    return _make("imagenet16-120", *read(list(_IN16_TRAIN)), *read(["val_data"]))


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------------

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


def _locate_fashion_mnist(root: Path, explicit: bool, download: bool) -> _Source:
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
            f"other idx files, also in FashionMNIST/raw/); {_FIX} (Debian: apt-get install "
            f"dataset-fashion-mnist)"
        )
    return _Source("idx", d)


def _read_fashion_mnist(name: str, d: Path) -> Dataset:
    paths = [_find_idx(d, s) for s in _FMNIST_FILES]
    if None in paths:
        raise DataError(f"fashion-mnist: idx files vanished from {d}")
    x_tr, y_tr, x_te, y_te = (_read_idx(p) for p in paths if p is not None)
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"fashion-mnist: idx files in {d} have shapes {x.shape} and {y.shape}")
    return _make("fashion-mnist", x_tr[:, None], y_tr, x_te[:, None], y_te)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format): 0, 0, type 0x08 (ubyte), ndim, big-endian dims, data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"fashion-mnist: {path} is not a ubyte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DataError(f"fashion-mnist: {path} has {data.size} values, header says {dims}")
    return data.reshape(dims)


# --------------------------------------------------------------------------------------------------
# sklearn digits
# --------------------------------------------------------------------------------------------------


def _load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits: a fixed seed-0 permutation, first 80% train, rest test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(np.asarray(bunch.images, np.float64) * (255 / 16)).astype(np.uint8)[:, None]
    y = np.asarray(bunch.target, np.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).numpy()
    n_train = round(0.8 * len(y))
    tr, te = perm[:n_train], perm[n_train:]
    pix = x[tr].astype(np.float64) / 255
    return _make("digits", x[tr], y[tr], x[te], y[te], mean=(float(pix.mean()),), std=(float(pix.std()),))


_READERS = {
    "cifar-python": _read_cifar_python,
    "image-folder": _read_image_folder,
    "svhn": _read_svhn,
    "imagenet16": _read_imagenet16,
    "idx": _read_fashion_mnist,
}


# --------------------------------------------------------------------------------------------------
# Splits and batches
# --------------------------------------------------------------------------------------------------


def split_indices(n: int, portion: float, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DARTS' ``train_portion`` split of the train set: (weights indices, architecture indices).

    With ``seed=None`` it is the reference's split, ``indices[:floor(portion*n)]`` and the rest in index
    order (DARTS shuffles only inside each half, as BatchStream does); with an int seed the halves come
    from a seeded permutation instead, for data whose index order is not random.
    """
    if not 0 < portion < 1:
        raise ValueError(f"portion must be in (0, 1), got {portion}")
    split = math.floor(portion * n)
    if split == 0 or split == n:
        raise ValueError(f"portion {portion} of {n} samples leaves one side empty")
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:split].clone(), order[split:].clone()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float32 ``(x/255 - mean) / std`` per channel (what BatchStream yields)."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return _normalize(x, m, s)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255).sub_(mean).div_(std)


def crop_flip(
    x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Random-crop-with-zero-padding and horizontal flip of a whole batch, without a per-image loop.

    Sample ``i`` is the window at rows ``dy[i]..dy[i]+H`` and columns ``dx[i]..dx[i]+W`` of the
    zero-padded image (offsets in ``0..2*padding``), mirrored if ``flip[i]``: exactly torchvision's
    ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` per sample.  Two ``gather`` calls on
    broadcast index views, so no index tensor of the batch's size is materialised.
    """
    b, c, h, w = x.shape
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.to(x.device).view(b, 1) + ar_h  # [B, H]
    cols = ar_w.expand(b, w) if flip is None else torch.where(flip.to(x.device).view(b, 1), ar_w.flip(0), ar_w)
    cols = dx.to(x.device).view(b, 1) + cols  # [B, W]
    x = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, x.shape[3]))
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


class BatchStream:
    """Batches of one index subset, augmented and normalised on ``device``.

    The subset's images are copied to ``device`` once.  ``epoch(generator)`` draws all of the epoch's
    randomness (permutation, crop offsets, flips) up front, in that order, so the generator's state
    after the call does not depend on how many batches are consumed: save ``generator.get_state()``
    at an epoch boundary to resume bit-exactly.  Draws happen on the generator's device; use a CPU
    generator to get the same batches on CPU and GPU.
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        indices: torch.Tensor | Sequence[int] | None,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int,
        flip: bool,
        augment: bool,
        device: torch.device | str = "cpu",
        drop_last: bool = True,
    ) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise ValueError(f"x_uint8 must be uint8 [N,C,H,W], got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if batch_size < 1 or crop_padding < 0:
            raise ValueError(f"need batch_size >= 1 and crop_padding >= 0, got {batch_size}, {crop_padding}")
        self.device = torch.device(device)
        idx = torch.arange(len(x_uint8)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        idx = idx.to(x_uint8.device)
        self.x = x_uint8[idx].to(self.device)
        self.y = y[idx.to(y.device)].to(self.device, torch.long)
        self.n = len(idx)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.crop_padding, self.flip, self.augment = crop_padding, flip, augment
        self.mean, self.std = tuple(mean), tuple(std)
        c = self.x.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean/std need {c} values, got {len(self.mean)} and {len(self.std)}")
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        if len(self) == 0:
            raise ValueError(f"{self.n} samples make no batch of {batch_size} with drop_last=True")

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: ``(x float32 [B,C,H,W] normalised, y int64 [B])`` on ``device``.

        With ``generator=None`` the subset is read in order without augmentation (evaluation); that
        needs ``augment=False``.
        """
        dy = dx = flips = None
        if generator is None:
            if self.augment:
                raise ValueError("an augmenting BatchStream needs a generator")
            return self._batches(torch.arange(self.n, device=self.device), dy, dx, flips)
        gen = {"generator": generator, "device": generator.device}
        order = torch.randperm(self.n, **gen).to(self.device)
        if self.augment and self.crop_padding > 0:
            dy, dx = torch.randint(0, 2 * self.crop_padding + 1, (2, self.n), **gen).to(self.device)
        if self.augment and self.flip:
            flips = torch.randint(0, 2, (self.n,), **gen).bool().to(self.device)
        return self._batches(order, dy, dx, flips)

    def _batches(
        self,
        order: torch.Tensor,
        dy: torch.Tensor | None,
        dx: torch.Tensor | None,
        flips: torch.Tensor | None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl]
            x = self.x[idx]
            if dy is not None or flips is not None:
                b = len(idx)
                zeros = torch.zeros(b, dtype=torch.long, device=self.device)
                x = crop_flip(
                    x,
                    self.crop_padding,
                    zeros if dy is None else dy[sl],
                    zeros if dx is None else dx[sl],
                    None if flips is None else flips[sl],
                )
            yield _normalize(x, self._mean, self._std), self.y[idx]


def cutout(x: torch.Tensor, length: int, generator: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """DARTS ``utils.Cutout`` on a whole batch: per image, zero the ``length`` square (clipped at the
    border) centred on a uniformly drawn pixel. Applied after normalisation, as in the reference.
    ``prob < 1``: each image is cut with that probability (RobustDARTS' ``Cutout(length, prob)``)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator, device=generator.device).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    half = length // 2
    in_y = (rows >= (cy - half)[:, None]) & (rows < (cy + half)[:, None])  # [B, H]
    in_x = (cols >= (cx - half)[:, None]) & (cols < (cx + half)[:, None])  # [B, W]
    cut = in_y[:, :, None] & in_x[:, None, :]
    if prob < 1.0:
        chosen = torch.rand(b, generator=generator, device=generator.device).to(x.device) < prob
        cut = cut & chosen[:, None, None]
    return x * (~cut)[:, None].to(x.dtype)

