"""What every cell searcher shares: a Ray Tune ``Searcher`` that proposes each NB-201 cell at most once and
learns only from the metric it optimises, at the fidelity (epochs) it was reported at.

Subclasses implement :meth:`CellSearcher.propose` (the next cell, or None to wait) and
:meth:`CellSearcher.observe` (a finished cell's scores by fidelity). Everything else a result holds, the test
accuracy above all, never reaches them. The same object drives a real ``tune.Tuner`` and the in-process
simulator (:mod:`raynas.searchers.simulate`), so both see the same proposals for the same seed.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

from ray.tune.search import Searcher

from raynas.searchers.space import CELL_KEY, N_CELLS, all_archs, arch_of_index, cell_config

METRIC, MODE = "valid_acc", "max"
#: the result key that says how long a cell was trained (NB-201 epochs: 12, then 200)
FIDELITY = "epoch"


def fidelity_score(result: dict[str, Any] | None, metric: str, mode: str) -> tuple[int, float] | None:
    """(fidelity, score) of one result, score = the metric signed so that higher is better; None without it."""
    if not result or result.get(metric) is None:
        return None
    value = float(result[metric])
    return int(result.get(FIDELITY, result.get("training_iteration", 0))), value if mode == "max" else -value


def best_of(scores: dict[int, float]) -> tuple[int, float]:
    """(fidelity, score) at a cell's highest fidelity: cells compare by fidelity first, then score."""
    f = max(scores)
    return f, scores[f]


class CellSearcher(Searcher):
    """Base of the random, evolution and NAR searchers; ``seed`` fixes every proposal."""

    def __init__(self, seed: int = 0, metric: str = METRIC, mode: str = MODE, key: str = CELL_KEY):
        super().__init__(metric=metric, mode=mode)
        self.seed, self.key = seed, key
        self.rng = random.Random(seed)
        self.proposed: list[str] = []                 # every cell, in proposal order
        self.seen: set[str] = set()
        self.pending: dict[str, str] = {}             # trial id -> cell
        self.partial: dict[str, dict[int, float]] = {}  # trial id -> score by fidelity, while it runs
        self.scores: dict[str, dict[int, float]] = {}   # finished cells -> score by fidelity

    # --- Tune's interface ---------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        self._metric = self._metric or metric or METRIC
        self._mode = self._mode or mode or MODE
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.seen) >= N_CELLS:
            return Searcher.FINISHED
        arch = self.propose()
        if arch is None:
            return None
        if arch in self.seen:
            raise RuntimeError(f"{type(self).__name__} proposed {arch} twice")
        self.seen.add(arch)
        self.proposed.append(arch)
        self.pending[trial_id] = arch
        return cell_config(arch, self.key)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        fs = fidelity_score(result, self._metric, self._mode)
        if fs is not None and trial_id in self.pending:
            self.partial.setdefault(trial_id, {})[fs[0]] = fs[1]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        arch = self.pending.pop(trial_id, None)
        scores = self.partial.pop(trial_id, {})
        fs = fidelity_score(result, self._metric, self._mode)
        if fs is not None:
            scores[fs[0]] = fs[1]
        if arch is not None and scores:  # an errored cell without a score stays seen, never observed
            self.scores[arch] = scores
            self.observe(arch, dict(scores))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    # --- what a searcher implements -----------------------------------------------------------------
    def propose(self) -> str | None:
        raise NotImplementedError

    def observe(self, arch: str, scores: dict[int, float]) -> None:
        """A finished cell: its score (higher is better) at each fidelity it was reported at."""

    # --- helpers ------------------------------------------------------------------------------------
    def random_unseen(self) -> str:
        """A uniformly random cell not proposed before."""
        if len(self.seen) > N_CELLS // 2:  # rejection would crawl: pick from what is left
            return self.rng.choice([a for a in all_archs() if a not in self.seen])
        while True:
            arch = arch_of_index(self.rng.randrange(N_CELLS))
            if arch not in self.seen:
                return arch
