"""NAS-Bench-201 lookup: genotype string -> the benchmark's 200-epoch accuracies, FLOPs and params.

Reads a compact CSV (``COLUMNS``; extra columns are kept), written from the official release files
by :func:`export` (``raynas bench nb201 export --from FILE --to nb201.csv``).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.nb201 import GenotypeError, NB201Genotype, format_genotype, parse_genotype

COLUMNS = ("arch", "cifar10_valid", "cifar10_test", "cifar100_valid", "cifar100_test", "imagenet16_valid",
           "imagenet16_test", "flops", "params")
EXPORT_HINT = "make it with `raynas bench nb201 export --from NAS-Bench-201-v1_1-096897.pth --to nb201.csv`"
#: dataset -> (valid column, test column) that are the headline numbers of a search on it
ACCURACY_KEYS = {"cifar10": ("cifar10_valid", "cifar10_test"), "cifar100": ("cifar100_valid", "cifar100_test"),
                 "imagenet16-120": ("imagenet16_valid", "imagenet16_test")}


class TableError(ValueError):
    """A missing or malformed benchmark table; one line saying what to fix."""


def accuracy_keys(dataset: str) -> tuple[str, str] | None:
    return ACCURACY_KEYS.get(dataset)


def _number(text: str) -> float | int | str | None:
    """CSV cell -> int / float (None when empty); non-numeric extra columns stay strings."""
    if text == "" or text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class NB201Table:
    """All rows of the table, indexed by canonical arch string."""

    def __init__(self, rows: list[dict[str, Any]], columns: list[str], path: str = "<memory>"):
        self.rows, self.columns, self.path = rows, columns, path
        self.index = {r["arch"]: i for i, r in enumerate(rows)}

    @classmethod
    def load(cls, path: str | Path) -> NB201Table:
        p = Path(path)
        if not p.is_file():
            raise TableError(f"NB201 table {p} does not exist; {EXPORT_HINT}")
        try:
            raw = gzip.open(p, "rt") if p.suffix == ".gz" else open(p, newline="")
            with raw as f:
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or [])
                missing = [c for c in COLUMNS if c not in columns]
                if missing:
                    raise TableError(f"NB201 table {p} lacks columns {', '.join(missing)}; {EXPORT_HINT}")
                rows = []
                for line, r in enumerate(reader, start=2):
                    try:
                        arch = format_genotype(parse_genotype(r["arch"]))
                    except GenotypeError as e:
                        raise TableError(f"{p}:{line}: {e}") from None
                    row: dict[str, Any] = {k: _number(v) for k, v in r.items() if k != "arch"}
                    row["arch"] = arch
                    rows.append(row)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
            if isinstance(e, TableError):
                raise
            raise TableError(f"cannot read NB201 table {p}: {e}") from None
        return cls(rows, columns, str(p))

    def __len__(self) -> int:
        return len(self.rows)

    def query(self, arch: str | NB201Genotype) -> dict[str, Any]:
        """The row of one cell (keys: the CSV columns). Invalid strings raise ``GenotypeError``."""
        g = arch if isinstance(arch, NB201Genotype) else parse_genotype(arch)
        key = format_genotype(g)
        if key not in self.index:
            raise TableError(f"{key} is a valid NB201 cell but not in {self.path}")
        row = self.rows[self.index[key]]
        return {c: row.get(c) for c in self.columns}

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise TableError(f"NB201 table {self.path} has no column {name!r}")
        return np.array([np.nan if r.get(name) is None else r[name] for r in self.rows], dtype=float)

    @property
    def archs(self) -> list[str]:
        return [r["arch"] for r in self.rows]

    def best(self, column: str) -> dict[str, Any]:
        values = self.column(column)
        return self.query(self.rows[int(np.nanargmax(values))]["arch"])


def _rows_from_api(source: str) -> list[dict[str, Any]]:
    """Rows from the official release through its PyPI API (nas-bench-201 or nats_bench)."""
    p = Path(source)
    try:
        if p.is_file() and p.suffix == ".pth":
            from nas_201_api import NASBench201API  # package nas-bench-201
            api = NASBench201API(str(p), verbose=False)
        else:
            from nats_bench import create
            api = create(str(p), "tss", fast_mode=True, verbose=False)
    except ImportError as e:
        raise TableError(f"reading {source} needs the official API ({e.name}); pip install 'raynas[nb201]'") from None
    rows = []
    for i in range(len(api)):
        c10v = api.get_more_info(i, "cifar10-valid", hp="200", is_random=False)
        c10 = api.get_more_info(i, "cifar10", hp="200", is_random=False)
        c100 = api.get_more_info(i, "cifar100", hp="200", is_random=False)
        in16 = api.get_more_info(i, "ImageNet16-120", hp="200", is_random=False)
        cost = api.get_cost_info(i, "cifar10")
        rows.append({"arch": api.arch(i), "cifar10_valid": c10v["valid-accuracy"], "cifar10_test": c10["test-accuracy"],
                     "cifar100_valid": c100["valid-accuracy"], "cifar100_test": c100["test-accuracy"],
                     "imagenet16_valid": in16["valid-accuracy"], "imagenet16_test": in16["test-accuracy"],
                     "flops": cost["flops"], "params": cost["params"]})
    return rows


def export(source: str | Path, dest: str | Path) -> int:
    """Write the compact CSV from the official files (or normalise an existing CSV); returns rows."""
    src = Path(source)
    if not src.exists():
        raise TableError(f"{src} does not exist; pass the NAS-Bench-201 .pth file or NATS-Bench directory")
    if src.name.endswith((".csv", ".csv.gz")):
        table = NB201Table.load(src)
        rows = [{c: r.get(c) for c in COLUMNS} for r in table.rows]
    else:
        rows = _rows_from_api(str(src))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    Path(dest).write_text(buf.getvalue())
    return len(rows)
