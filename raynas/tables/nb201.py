"""NAS-Bench-201 lookup: genotype string -> the benchmark's 200-epoch accuracies, FLOPs and params.

The official release is a multi-GB torch/pickle archive, so searches read a compact CSV instead
(``COLUMNS``, accuracies in percent; extra columns are kept). :func:`export` writes that CSV from
the release files through their own APIs: ``raynas bench nb201 export --from FILE --to nb201.csv``.
"""

from __future__ import annotations

import zlib

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_spaces.nb201_genotype import GenotypeError, NB201Genotype, format_genotype, parse_genotype

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("arch", "cifar10_valid", "cifar10_test", "cifar100_valid", "cifar100_test", "imagenet16_valid",
           "imagenet16_test", "flops", "params")
EXPORT_HINT = ("make it with `raynas bench nb201 export --from FILE --to nb201.csv` "
               "(FILE: the NAS-Bench-201 .pth or NATS-tss release)")
INSTALL_HINT = "pip install 'raynas[nb201]'"
#: dataset -> (valid column, test column): the headline numbers of a search on that dataset
ACCURACY_KEYS = {"cifar10": ("cifar10_valid", "cifar10_test"), "cifar100": ("cifar100_valid", "cifar100_test"),
                 "imagenet16-120": ("imagenet16_valid", "imagenet16_test")}
#: what ``nb201_headline`` adds to a search trial's result (with an ``nb201_table``)
NB201_METRICS = ("nb201_valid", "nb201_test")


def nb201_headline(row: dict[str, Any] | None, dataset: str) -> dict[str, float]:
    """``nb201_valid``/``nb201_test`` of the searched dataset (CIFAR-10's for other datasets)."""
    if not row:
        return {}
    valid, test = ACCURACY_KEYS.get(dataset, ACCURACY_KEYS["cifar10"])
    return dict(zip(NB201_METRICS, (row.get(valid), row.get(test))))



class TableError(ValueError):
    """A missing or malformed benchmark table; one line saying what to fix."""


def accuracy_keys(dataset: str) -> tuple[str, str] | None:
    """(valid, test) columns for a raynas dataset name; None for datasets NB201 never trained on."""
    key = dataset.lower()
    return ACCURACY_KEYS.get("imagenet16-120" if key == "imagenet16" else key)


def _canonical(arch: object) -> str:
    return format_genotype(parse_genotype(str(arch)))


def _plain(name: str, value: Any) -> Any:
    """numpy/pandas scalar -> JSON-able Python value (NaN -> None, integral params -> int)."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if name == "params" and value.is_integer():
            return int(value)
    return value


class NB201Table:
    """The whole table (``frame``, one row per cell, canonical ``arch`` strings) indexed by arch."""

    def __init__(self, frame: pd.DataFrame, path: str = "<memory>"):
        self.frame, self.path = frame.reset_index(drop=True), path
        self.columns: list[str] = [str(c) for c in self.frame.columns]
        self.archs: list[str] = list(self.frame["arch"])
        self.index: dict[str, int] = {a: i for i, a in enumerate(self.archs)}
        self._values = {c: self.frame[c].to_numpy() for c in self.columns}  # fast per-row lookup
        if len(self.index) != len(self.archs):
            dup = self.frame["arch"][self.frame["arch"].duplicated()].iloc[0]
            raise TableError(f"NB201 table {path} lists {dup} more than once")

    @classmethod
    def load(cls, path: str | Path) -> NB201Table:
        """Read a .csv / .csv.gz, check the compact columns and canonicalise every arch string."""
        import pandas as pd

        p = Path(path)
        if not p.is_file():
            raise TableError(f"NB201 table {p} does not exist; {EXPORT_HINT}")
        try:
            frame = pd.read_csv(p)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, pd.errors.ParserError,
                pd.errors.EmptyDataError) as e:  # EOFError, zlib.error: a truncated or corrupted .gz
            raise TableError(f"cannot read NB201 table {p}: {str(e).splitlines()[0] if str(e) else e!r}") from None
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise TableError(f"NB201 table {p} lacks columns {', '.join(missing)}; {EXPORT_HINT}")
        for c in COLUMNS[1:]:
            if not pd.api.types.is_numeric_dtype(frame[c]):
                raise TableError(f"NB201 table {p}: column {c} is not numeric")
        archs = []
        for line, arch in enumerate(frame["arch"], start=2):
            try:
                archs.append(_canonical(arch))
            except GenotypeError as e:
                raise TableError(f"{p}:{line}: {e}") from None
        frame["arch"] = archs
        return cls(frame, str(p))

    def __len__(self) -> int:
        return len(self.frame)

    def query(self, arch: str | NB201Genotype) -> dict[str, Any]:
        """The row of one cell (keys: the CSV columns); a malformed string raises ``GenotypeError``."""
        key = format_genotype(arch if isinstance(arch, NB201Genotype) else parse_genotype(arch))
        if key not in self.index:
            raise TableError(f"{key} is a valid NB201 cell but not in {self.path}")
        i = self.index[key]
        return {c: _plain(c, v[i]) for c, v in self._values.items()}

    def column(self, name: str) -> np.ndarray:
        """One numeric column as floats, aligned with ``archs``."""
        if name not in self.columns:
            raise TableError(f"NB201 table {self.path} has no column {name!r}")
        try:
            return self.frame[name].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise TableError(f"NB201 table {self.path}: column {name!r} is not numeric") from None

    def best(self, column: str) -> dict[str, Any]:
        """The row with the highest ``column`` (first on ties)."""
        values = self.column(column)
        if np.isnan(values).all():
            raise TableError(f"NB201 table {self.path}: column {column!r} has no values")
        return self.query(self.archs[int(np.nanargmax(values))])


def _open_api(src: Path) -> tuple[Any, str]:
    """The official API object: ``nas_201_api`` for a .pth, ``nats_bench`` (topology) otherwise."""
    try:
        if src.is_file() and src.suffix == ".pth":
            from nas_201_api import NASBench201API  # PyPI: nas-bench-201

            return NASBench201API(str(src), verbose=False), "nas_201_api"
        from nats_bench import create  # PyPI: nats_bench

        # NATS wants fast_mode for the per-arch archive directory and not for the single-file release
        return create(str(src), "tss", fast_mode=src.is_dir(), verbose=False), "nats_bench"
    except ImportError as e:
        raise TableError(f"reading {src} needs the official API ({e.name}); {INSTALL_HINT}") from None


def _rows_from_api(src: Path) -> list[dict[str, Any]]:
    """One compact row per benchmark index, 200-epoch results averaged over seeds (``is_random=False``)."""
    api, name = None, "the official API"
    try:
        api, name = _open_api(src)
        rows = []
        for i in range(len(api)):
            info = {ds: api.get_more_info(i, ds, hp="200", is_random=False)
                    for ds in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")}
            cost = api.get_cost_info(i, "cifar10", hp="200")
            rows.append({
                "arch": _canonical(api.arch(i)),
                "cifar10_valid": info["cifar10-valid"]["valid-accuracy"],  # train split, x-valid
                "cifar10_test": info["cifar10"]["test-accuracy"],  # train+valid, ori-test
                "cifar100_valid": info["cifar100"]["valid-accuracy"],
                "cifar100_test": info["cifar100"]["test-accuracy"],
                "imagenet16_valid": info["ImageNet16-120"]["valid-accuracy"],
                "imagenet16_test": info["ImageNet16-120"]["test-accuracy"],
                "flops": float(cost["flops"]),  # MFLOPs
                "params": round(float(cost["params"]) * 1e6),  # the APIs report millions ("MB")
            })
        return rows
    except TableError:
        raise
    except Exception as e:  # the APIs raise AssertionError/ValueError/KeyError/pickle errors
        hint = "; torch>=2.6 may need TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" if "weights_only" in str(e) else ""
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TableError(f"cannot export {src} with {name}: {first}{hint}") from None


def export(source: str | Path, dest: str | Path) -> int:
    """Write the compact CSV (only ``COLUMNS``) from the official files or an existing CSV; returns rows."""
    import pandas as pd

    src = Path(source)
    if not src.exists():
        raise TableError(f"{src} does not exist; pass the NAS-Bench-201 .pth, a NATS-tss file/directory or a CSV")
    if src.name.endswith((".csv", ".csv.gz")):
        frame = NB201Table.load(src).frame[list(COLUMNS)]
    else:
        frame = pd.DataFrame(_rows_from_api(src), columns=list(COLUMNS))
    frame.to_csv(dest, index=False)
    return len(frame)
