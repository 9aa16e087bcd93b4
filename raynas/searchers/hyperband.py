"""Hyperband over the table's two fidelities: Ray Tune's asynchronous Hyperband (``ASHAScheduler`` with
``brackets=2``, Li et al. 2020), with the bracket of each cell drawn from a seeded generator.

With two fidelities (12 and 200 epochs as training iterations 1 and 2, ``grace_period=1``, ``max_t=2``)
Hyperband has two brackets: bracket 0 is ASHA (every cell trains 12 epochs, and continues to 200 only at or
above the ``1 - 1/reduction_factor`` quantile of that bracket's 12-epoch results so far); bracket 1 trains
every cell to 200 epochs (Ray's bracket ``s=1`` has no rung below ``max_t``). Ray draws a cell's bracket with
probability ``exp(rungs - max rungs)`` (0.73 / 0.27 for any ``reduction_factor`` >= 2; synchronous Hyperband
at eta 3 would split cells 3:2 between the two brackets) from NumPy's *global* random state; here the
draw is the same but from ``numpy.random.default_rng(seed)``, so the simulator and a real ``tune.Tuner``
assign the same brackets for the same seed. Everything else (rungs, cutoffs, stopping) is Ray's own code: the
simulator drives this very object.

Ray's synchronous ``HyperBandScheduler`` does not fit two fidelities: with ``max_t=2`` and eta 3 its only
low-fidelity bracket starts at ``int(2 / 3) = 0`` iterations and is skipped, so it never stops a cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler

from raynas.config import ConfigError

BRACKETS = 2  # one per fidelity the table has below and at 200 epochs


class SeededHyperband(ASHAScheduler):
    """``ASHAScheduler(brackets=2)`` over iterations 1 (12 epochs) and 2 (200); brackets drawn from ``seed``."""

    def __init__(self, reduction_factor: float = 3, seed: int = 0, metric: str | None = None,
                 mode: str | None = None):
        if reduction_factor <= 1:
            raise ConfigError(f"hyperband needs reduction_factor > 1, got {reduction_factor}")
        super().__init__(time_attr="training_iteration", metric=metric, mode=mode, max_t=2, grace_period=1,
                         reduction_factor=reduction_factor, brackets=BRACKETS)
        self._rng = np.random.default_rng(seed)
        self.bracket_of: dict[str, int] = {}  # trial id -> bracket index (0: stops at 12 epochs, 1: never)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._metric or not self._metric_op:
            raise ValueError("SeededHyperband needs metric and mode (from tune.TuneConfig or the constructor)")
        sizes = np.array([len(b._rungs) for b in self._brackets])  # Ray's probabilities, as ASHAScheduler
        probs = np.e ** (sizes - sizes.max())
        idx = int(self._rng.choice(len(self._brackets), p=probs / probs.sum()))
        self._trial_info[trial.trial_id] = self._brackets[idx]
        self.bracket_of[trial.trial_id] = idx


class TrialRef:
    """What Ray's ASHA reads of a trial in the simulator: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id
