"""Benchmark tables as NAR training data: features computed from the cells, accuracies from the table."""

from __future__ import annotations

import zlib

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from raynas.config import ConfigError
from raynas.nar.encoding import nb101_costs, nb101_features, nb201_features, nb201_totals
from search_spaces.nb101 import ModelSpec, SpecError, parse_flat
from search_spaces.nb201 import OPS_NB201, NB201Genotype, format_genotype, parse_genotype

#: NB201 dataset -> (validation column: labels and ranking target, test column: reported)
NB201_COLUMNS = {"cifar10": ("cifar10_valid", "cifar10_test"), "cifar100": ("cifar100_valid", "cifar100_test"),
                 "imagenet16": ("imagenet16_valid", "imagenet16_test")}
NB201_HINT = ("rank --bench nb201 needs the NAS-Bench-201 table: pass --table nb201.csv "
              "(make it with `raynas bench nb201 export --from NAS-Bench-201-v1_1-096897.pth --to nb201.csv`)")
NB101_HINT = ("rank --bench nb101 needs a NAS-Bench-101 CSV: pass --table FILE with columns adjacency (row-major 0/1 "
              "string), ops (comma-separated), val_accuracy [, test_accuracy], one row per cell of "
              "nasbench_only108.tfrecord (NASLib's zc_nasbench101 sample layout is read too)")


@dataclass
class BenchData:
    """One row per unique cell. ``target`` (validation accuracy) labels tiers and trains the ranking loss;
    ``test`` is only reported (equal to ``target`` when the table has no test accuracy)."""

    bench: str
    dataset: str
    names: list[str]
    features: torch.Tensor          # (N, P, d, d)
    target: np.ndarray
    test: np.ndarray
    flops: np.ndarray               # NAR total FLOPs: tier histograms and sampling bounds
    params: np.ndarray
    kind: np.ndarray                # NB201: (N, 5) op-type counts; NB101: (N,) vertices
    op_index: np.ndarray | None = None            # NB201: (N, 6) indices into OPS_NB201
    index: dict[str, int] = field(default_factory=dict)  # name (arch string / NB101 hash) -> row
    cells: list[dict] | None = None                      # NB101: {"matrix", "ops"} (pruned) of each row

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, rows: np.ndarray) -> BenchData:
        """The given rows only (small fixtures, ablations); ranks are then relative to the subset."""
        rows = np.asarray(rows)
        names = [self.names[i] for i in rows]
        return BenchData(self.bench, self.dataset, names, self.features[rows], self.target[rows], self.test[rows],
                         self.flops[rows], self.params[rows], self.kind[rows],
                         None if self.op_index is None else self.op_index[rows], {n: i for i, n in enumerate(names)},
                         None if self.cells is None else [self.cells[i] for i in rows])

    def rank(self, i: int) -> int:
        """1-based rank of row i by test accuracy over the whole table (1 = best)."""
        return int((self.test > self.test[i]).sum()) + 1


def require_table(bench: str, path: str) -> None:
    """One-line ``ConfigError`` naming the file the bench needs and how to make it."""
    hint = NB201_HINT if bench == "nb201" else NB101_HINT
    if not path:
        raise ConfigError(hint)
    if not Path(path).is_file():
        raise ConfigError(f"{hint}; {path} does not exist")


def load_bench(bench: str, table: str, dataset: str = "cifar10", scale_features: bool = False) -> BenchData:
    if bench == "nb201":
        return load_nb201(table, dataset, scale_features)
    if bench == "nb101":
        return load_nb101(table)
    raise ConfigError(f"unknown bench {bench!r}; valid: nb201, nb101")


def load_nb201(path: str, dataset: str = "cifar10", scale_features: bool = False) -> BenchData:
    from raynas.tables.nb201 import NB201Table, TableError

    require_table("nb201", path)
    if dataset not in NB201_COLUMNS:
        raise ConfigError(f"unknown NB201 dataset {dataset!r}; valid: {', '.join(NB201_COLUMNS)}")
    try:
        table = NB201Table.load(path)
        valid, test = (table.column(c) for c in NB201_COLUMNS[dataset])
    except TableError as e:
        raise ConfigError(str(e)) from None
    return nb201_data(table.archs, valid, test, dataset, scale_features)


def nb201_data(names: list[str], target: np.ndarray, test: np.ndarray, dataset: str = "cifar10",
               scale_features: bool = False) -> BenchData:
    """NB201 cells (canonical arch strings) with their features and costs, computed from the cells alone;
    ``target``/``test`` are the accuracies (NaN where unknown, e.g. a searcher's cells not evaluated yet)."""
    ops = np.array([[OPS_NB201.index(op) for op in parse_genotype(a).ops] for a in names], dtype=np.int64)
    costs = nb201_totals(ops, dataset)
    flops, params = costs["flops_nar"].astype(np.float64), costs["params"].astype(np.float64)
    kind = np.stack([(ops == k).sum(axis=1) for k in range(len(OPS_NB201))], axis=1)
    return BenchData("nb201", dataset, list(names), torch.from_numpy(nb201_features(ops, dataset, scale_features)),
                     target, test, flops, params, kind, ops, {a: i for i, a in enumerate(names)})


def _pick(columns: list[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in columns), None)


def load_nb101(path: str) -> BenchData:
    import pandas as pd

    require_table("nb101", path)
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise ConfigError(f"cannot read NB101 table {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    cols = list(df.columns)
    adj = _pick(cols, "adjacency", "pruned_adjacency", "adjacency_7x7")
    ops = _pick(cols, "ops", "pruned_ops", "ops_7")
    val = _pick(cols, "val_accuracy", "valid_accuracy", "validation_accuracy")
    test = _pick(cols, "test_accuracy")
    if not (adj and ops and val):
        raise ConfigError(f"NB101 table {path} lacks adjacency/ops/val_accuracy columns; {NB101_HINT}")
    cells: dict[str, list] = {}
    for line, (a, o, v, t) in enumerate(zip(df[adj], df[ops], df[val], df[test] if test else df[val]), start=2):
        try:
            spec = parse_flat(a, o)
            h = spec.hash()
        except SpecError as e:
            raise ConfigError(f"{path}:{line}: {e}") from None
        if not spec.is_valid():
            raise ConfigError(f"{path}:{line}: not a valid NB101 cell (disconnected or over 7 vertices / 9 edges)")
        cells.setdefault(h, [spec, [], []])
        cells[h][1].append(float(v))
        cells[h][2].append(float(t))
    names = list(cells)  # isomorphic duplicates (e.g. single runs of one cell) are merged by their mean
    specs: list[ModelSpec] = [cells[h][0] for h in names]
    costs = [nb101_costs(s) for s in specs]
    feats = torch.from_numpy(np.stack([nb101_features(s, c) for s, c in zip(specs, costs)]))
    return BenchData("nb101", "cifar10", names, feats, np.array([np.mean(cells[h][1]) for h in names]),
                     np.array([np.mean(cells[h][2]) for h in names]),
                     np.array([c["flops"] for c in costs], dtype=np.float64),
                     np.array([c["params"] for c in costs], dtype=np.float64),
                     np.array([s.num_vertices for s in specs]), None, {h: i for i, h in enumerate(names)},
                     [{"matrix": s.matrix.tolist(), "ops": s.ops} for s in specs])


def nb201_name(ops: tuple[str, ...]) -> str:
    return format_genotype(NB201Genotype(ops))
