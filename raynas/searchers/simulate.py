"""The in-process simulator: a searcher against the tabular trainable in simulated time, no Ray actors.

One simulated worker trains one cell at a time, as a real ``tune.Tuner`` with ``max_concurrent_trials=1`` does,
and every call reaches the searcher as Tune makes it (``suggest``, ``on_trial_result``, ``on_trial_complete``),
so a searcher proposes the same cells here and under real Tune for the same seed (tested). The clock advances
by the cost model of :mod:`raynas.searchers.tabular`; ``time_budget`` ends the study mid-training, and the cell
then running counts with what it had reported by then.

``RungStopper`` is Ray's ASHA (``ASHAScheduler``, one bracket) over the table's two fidelities: a cell's 12-epoch
result is compared with the 12-epoch results recorded so far and the cell stops below their
``1 - 1 / reduction_factor`` quantile; nothing but that 12-epoch accuracy enters the decision. ``hyperband`` is
Ray's asynchronous Hyperband itself (:class:`raynas.searchers.hyperband.SeededHyperband`, brackets drawn from
the run's ``seed``), driven here exactly as ``tune.Tuner`` drives it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raynas.config import ConfigError
from raynas.searchers.space import CELL_KEY, arch_of
from raynas.searchers.tabular import TabularBench

FINISHED = "FINISHED"  # ray.tune.search.Searcher.FINISHED
SCHEDULERS = ("fifo", "asha", "hyperband")
#: schedulers that stop cells at 12 epochs: they need the table's 12-epoch columns
LOW_FIDELITY = ("asha", "hyperband")


@dataclass
class Query:
    """One evaluated cell: the fidelity it reached, its validation accuracy there, the 200-epoch test accuracy
    (reporting only) and the simulated clock when its training ended."""

    arch: str
    epochs: int
    valid: float
    test: float
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RungStopper:
    """ASHA's stopping rule at the first rung (Ray's ``_Bracket.on_result`` with ``brackets=1``, mode max)."""

    def __init__(self, reduction_factor: float = 3):
        if reduction_factor <= 1:
            raise ConfigError(f"asha needs reduction_factor > 1, got {reduction_factor}")
        self.rf = reduction_factor
        self.recorded: dict[str, float] = {}

    def stop(self, trial_id: str, value: float) -> bool:
        cutoff = np.nanpercentile(list(self.recorded.values()), (1 - 1 / self.rf) * 100) if self.recorded else None
        self.recorded[trial_id] = value
        return cutoff is not None and value < cutoff


def check_budget(budget: int, time_budget: float) -> None:
    if budget < 0 or time_budget < 0 or (budget == 0 and time_budget == 0):
        raise ConfigError(f"give a budget > 0: --budget N queries or --time-budget S simulated seconds "
                          f"(got budget {budget}, time budget {time_budget:g})")


def simulate(searcher: Any, bench: TabularBench, budget: int = 0, time_budget: float = 0.0,
             scheduler: str = "fifo", reduction_factor: float = 3, key: str = CELL_KEY, seed: int = 0,
             metric: str = "valid_acc", mode: str = "max") -> list[Query]:
    """Drive ``searcher`` until ``budget`` cells were queried or the clock passed ``time_budget`` (0: no limit);
    ``seed`` draws Hyperband's brackets."""
    check_budget(budget, time_budget)
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    stopper = RungStopper(reduction_factor) if scheduler == "asha" else None
    hyperband = None
    if scheduler == "hyperband":
        from raynas.searchers.hyperband import SeededHyperband, TrialRef

        hyperband = SeededHyperband(reduction_factor, seed)
        hyperband.set_search_properties(metric, mode)
    clock, queries = 0.0, []
    while (not budget or len(queries) < budget) and (not time_budget or clock < time_budget):
        trial_id = f"sim_{len(queries):05d}"
        config = searcher.suggest(trial_id)
        if config is None or config == FINISHED:
            break
        arch = arch_of(config, key)
        reports, start, last = bench.reports(arch), clock, None
        if hyperband is not None:
            ref = TrialRef(trial_id)
            hyperband.on_trial_add(None, ref)
        for it, report in enumerate(reports, start=1):
            if time_budget and start + report["sim_time"] > time_budget:
                clock = time_budget
                break
            last = {**report, "training_iteration": it, "trial_id": trial_id, "done": it == len(reports)}
            clock = start + report["sim_time"]
            if it == len(reports):
                break
            if stopper is not None and stopper.stop(trial_id, last["valid_acc"]):
                break  # Ray's scheduler decides before the searcher hears of the result
            if hyperband is not None and hyperband.on_trial_result(None, ref, last) == "STOP":
                break
            searcher.on_trial_result(trial_id, last)
        if hyperband is not None and last is not None:
            hyperband.on_trial_complete(None, ref, last)
        searcher.on_trial_complete(trial_id, last)
        if last is None:
            break
        queries.append(Query(arch, last["epoch"], last["valid_acc"], last["test_acc"], clock))
    return queries
