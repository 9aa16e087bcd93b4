"""Restricted unpickling of dataset files.

Dataset pickles (the CIFAR python release, Downsampled ImageNet) come from outside the project, and
plain ``pickle.load`` would run any callable a file names (``os.system`` ...).  This unpickler
resolves only the numpy globals needed to rebuild arrays and a few inert builtins.
"""

from __future__ import annotations

import codecs
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

__all__ = ["RestrictedUnpickler", "restricted_pickle_load"]


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
