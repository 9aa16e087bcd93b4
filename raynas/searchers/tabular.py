"""The NAS-Bench-201 table as a trainable: "training" a cell reads its row, after a simulated training time.

A cell reports twice: its 12-epoch validation accuracy after 12 simulated epochs, then its 200-epoch one after
200 (one run whose early result is read off the low-fidelity columns, as NASLib and syne-tune simulate it; a
table without the ``*_12ep`` columns reports the 200-epoch result only). ``test_acc`` (the 200-epoch test
accuracy) rides along for the curves and tables and never reaches a searcher (``raynas.searchers.base``).

Cost model (the table has no per-cell times): one epoch of a cell takes
``images / 25,000 * (base_s + per_mflop_s * MFLOPs)`` seconds, MFLOPs from the table's ``flops_<dataset>``
(``flops`` for CIFAR-10), images the dataset's training split (CIFAR-10-valid 25,000, CIFAR-100 50,000,
ImageNet16-120 151,700). The defaults put the mean CIFAR-10 epoch at about 9.1 s, the average per-epoch
time NB-201 records for its cifar10-valid runs (``train-per-time``, as users of its API report), a third of it
fixed cost; a 12-epoch query thus costs about 110 s on average, so the NB-201 paper's 12,000 s budget is
about 110 such queries. A table with a ``<dataset>_epoch_s`` column (seconds per epoch per cell) is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from raynas.tables.nb201 import NB201Table, TableError, accuracy_keys
from raynas.config import ConfigError

LOW, HIGH = 12, 200  # the table's two fidelities (epochs)
#: dataset -> training images of the split the validation accuracy comes from
TRAIN_IMAGES = {"cifar10": 25_000, "cifar100": 50_000, "imagenet16": 151_700}
DATASETS = tuple(TRAIN_IMAGES)


@dataclass
class CostModel:
    """Seconds per epoch = images / 25,000 * (base_s + per_mflop_s * MFLOPs); see the module docstring."""

    base_s: float = 3.0
    per_mflop_s: float = 0.112

    def epoch_seconds(self, mflops: np.ndarray, dataset: str) -> np.ndarray:
        return TRAIN_IMAGES[dataset] / 25_000 * (self.base_s + self.per_mflop_s * np.asarray(mflops, dtype=float))


def dataset_name(name: str) -> str:
    """``imagenet16-120`` -> ``imagenet16``; one-line error for a dataset NB-201 has no columns of."""
    key = "imagenet16" if name.lower() in ("imagenet16-120", "imagenet16") else name.lower()
    if key not in TRAIN_IMAGES:
        raise ConfigError(f"unknown NB201 dataset {name!r}; valid: {', '.join(DATASETS)}")
    return key


class TabularBench:
    """One dataset of the table: the reports of a cell (:meth:`reports`) and its simulated cost."""

    def __init__(self, table: NB201Table, dataset: str = "cifar10", cost: CostModel | None = None,
                 need_low: bool = False, scheduler: str = "ASHA"):
        self.table, self.dataset, self.cost = table, dataset_name(dataset), cost or CostModel()
        self.valid_key, self.test_key = accuracy_keys(self.dataset)  # type: ignore[misc]
        self.low_key = f"{self.valid_key}_{LOW}ep"
        self.has_low = self.low_key in table.columns
        if need_low and not self.has_low:
            name = {"asha": "ASHA", "hyperband": "Hyperband"}.get(scheduler, scheduler)
            raise TableError(f"NB201 table {table.path} has no {self.low_key} column: {name} needs the 12-epoch "
                             f"columns (the shared nb201.csv.gz has them)")
        self.valid, self.test = table.column(self.valid_key), table.column(self.test_key)
        self.low = table.column(self.low_key) if self.has_low else None
        if f"{self.dataset}_epoch_s" in table.columns:
            self.epoch_s = table.column(f"{self.dataset}_epoch_s")
        else:
            flops = f"flops_{self.dataset}" if f"flops_{self.dataset}" in table.columns else "flops"
            self.epoch_s = self.cost.epoch_seconds(table.column(flops), self.dataset)

    def row(self, arch: str) -> int:
        if arch not in self.table.index:
            raise TableError(f"{arch} is a valid NB201 cell but not in {self.table.path}")
        return self.table.index[arch]

    def reports(self, arch: str) -> list[dict[str, Any]]:
        """What the trainable reports, in order: ``epoch``, ``valid_acc``, ``sim_time`` (simulated seconds
        since the cell started) and ``test_acc`` (reporting only)."""
        i = self.row(arch)
        test = float(self.test[i])
        out = []
        if self.low is not None:
            out.append({"epoch": LOW, "valid_acc": float(self.low[i]), "sim_time": LOW * float(self.epoch_s[i]),
                        "test_acc": test})
        out.append({"epoch": HIGH, "valid_acc": float(self.valid[i]), "sim_time": HIGH * float(self.epoch_s[i]),
                    "test_acc": test})
        return out

    def optimum(self) -> dict[str, Any]:
        """The cell with the best 200-epoch validation accuracy, and the best test accuracy of the table."""
        i = int(np.nanargmax(self.valid))
        return {"arch": self.table.archs[i], "valid_acc": float(self.valid[i]), "test_acc": float(self.test[i]),
                "best_test_acc": float(np.nanmax(self.test))}


@lru_cache(maxsize=4)
def load_table(path: str) -> NB201Table:
    """One table per path and process (Tune workers reuse it across trials)."""
    return NB201Table.load(path)


def load_bench(path: str, dataset: str = "cifar10", cost: dict[str, float] | None = None,
               need_low: bool = False, scheduler: str = "ASHA") -> TabularBench:
    return TabularBench(load_table(str(path)), dataset, CostModel(**(cost or {})), need_low, scheduler)
