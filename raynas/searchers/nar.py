"""NAR as a Ray Tune searcher: the ranker (``raynas.nar``) learns from the cells evaluated so far and proposes
cells by its tier-guided sampling.

* The first ``n_init`` proposals (default ``refit_every``) are uniformly random cells.
* Then the ranker is retrained every ``refit_every`` finished cells, or every ``refit_growth`` x the cells
  finished once that is more (10 until 50, then 20%), and once a refit trained on ``max_train`` cells (its cap),
  every ``max_train`` new cells: at 10, 20, ..., 215, 258, then 514 and 770 (16 refits in 1,000 queries; the
  20% rule alone gives 21, its seven after 300 queries half of NAR's CPU time), warm-started
  (same weights, optimizer and Noam schedule), for ``refit_epochs`` epochs of ``NARRun``: quintile tiers and the
  ranking loss over the finished cells (a fresh random ``max_train`` of them once there are more), a
  ``val_frac`` share held out to pick the best epoch (0: pick on the training cells). A cell's label is its
  score at its highest fidelity, cells trained longer ranking above (as REA's fitness).
* Proposals: NAR's ``TierSampler`` draws ``sample_size`` candidates guided by the tier statistics (FLOPs,
  params, op counts per quintile tier) of all finished cells (``stats: batches``: NAR's per-batch statistics
  of the best epoch, one batch per draw); the ranker orders them by predicted tier, then score, and the best
  ``top_k`` never proposed are queued. On NB-201 the guidance's KL thresholds rarely let it switch on (the
  authors' NB-201 config forces uniform sampling), so the candidates are mostly uniform and ``sample_size``
  decides how much the ranker chooses from: a perfect ranker finds the optimum by 200 queries from 4,096
  candidates, but reaches only ~94.0 from NAR's 128-256.
* ``local`` (default 3; ``local: 0`` is NAR's sampler as published): the one-edge mutants of the ``local``
  best finished cells join every draw's candidates, a local search the ranker arbitrates (tuned on CIFAR-10
  seeds 100-119 at 300 queries, ``local: 3`` moved the 100-query mean 94.17 -> 94.22 and 300 94.25 -> 94.27,
  inside the noise; see benchmarks/RESULTS.md).
* ``local_share`` (default 3; 0: the ranker alone chooses): of each round's ``top_k`` proposals, that many are
  the ranker's best unseen mutants, the rest its best of all candidates. The ranker alone rarely prefers a
  mutant to the sampled cells; reserving slots is a local search it steers. Tuned on seeds 100-119
  (benchmarks/RESULTS.md), 100 / 300 queries: 0 -> 2 moved CIFAR-100 72.90 / 73.40 -> 73.18 / 73.51,
  ImageNet16-120 45.87 / 46.05 -> 45.98 / 46.26, CIFAR-10 94.22 / 94.27 -> 94.18 / 94.37; 2 -> 3 moved
  CIFAR-10 to 94.23 / 94.35, CIFAR-100 to 73.21 / 73.51, ImageNet16-120 to 46.21 / 46.38 (4: 94.20, 73.20,
  46.03 at 100).

Two deliberate differences from ``raynas rank``'s one-shot search, both for cost: the tier embeddings are the
mean encodings of the labelled cells by their true tiers (as NAR's validation computes them), fixed until the
next refit, so each candidate is predicted once per refit; and with ``preselect`` (default 4) the score head
picks the best ``preselect * top_k`` candidates before the tier decoder (5x a score's cost) orders them
(``preselect: 0`` classifies every candidate). The ranker is small (``SEARCH_RANKER``: one layer, width 32; the
paper's size costs ~50x more per step); ``ranker`` overrides any ``NARConfig`` field. The searcher never reads
the table: features come from the cells alone.
"""

from __future__ import annotations

import dataclasses
import time
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from raynas.config import ConfigError
from raynas.nar.data import BenchData, nb201_data
from raynas.nar.search import TierSampler
from raynas.nar.tier_stats import batch_tier_stats
from raynas.nar.train import NARRun, quintile_tiers, resolve_nar
from raynas.searchers.base import CellSearcher
from raynas.searchers.evolution import mutants
from raynas.searchers.space import N_CELLS, all_archs
from raynas.searchers.tabular import dataset_name

#: the ranker and sampler of the searcher (``NARConfig`` fields; ``train_size``/``val_size`` are unused here)
SEARCH_RANKER: dict[str, Any] = {"d_model": 32, "d_ffn": 64, "n_layers": 1, "n_head": 2, "d_tier_hidden": 64,
                                 "d_score_hidden": 128, "dropout": 0.1, "batch_size": 64, "warmup": 10,
                                 "lr_mul": 0.1, "scale_features": True, "threads": 1,
                                 "top_k": 5, "train_size": 5, "val_size": 5, "sample_size": 2048,
                                 "ops_kl": 0.0, "flops_kl": 0.0, "params_kl": 0.0}


@lru_cache(maxsize=3)
def space_data(dataset: str, scale_features: bool) -> BenchData:
    """Every NB-201 cell with its NAR features, no accuracies (NaN): what the searcher ranks."""
    nan = np.full(N_CELLS, np.nan)
    return nb201_data(list(all_archs()), nan, nan, dataset, scale_features)


class NARSearcher(CellSearcher):
    """NAR over the NB-201 cell; ``ranker`` entries override ``SEARCH_RANKER`` (any ``NARConfig`` field)."""

    def __init__(self, seed: int = 0, dataset: str = "cifar10", refit_every: int = 10, n_init: int = 0,
                 refit_growth: float = 0.2, refit_epochs: int = 20, val_frac: float = 0.0, max_train: int = 256,
                 stats: str = "all", preselect: int = 4, local: int = 3, local_share: int = 3,
                 ranker: dict[str, Any] | None = None, **kw):
        super().__init__(seed, **kw)
        self.cfg = resolve_nar({**SEARCH_RANKER, **(ranker or {}), "bench": "nb201", "seed": seed,
                                "dataset": dataset_name(dataset)})
        self.refit_every, self.refit_epochs, self.val_frac = refit_every, refit_epochs, val_frac
        self.max_train, self.stats, self.preselect, self.refit_growth = max_train, stats, preselect, refit_growth
        self.local, self.local_share = local, local_share
        self.n_init = n_init or refit_every
        if min(refit_every, refit_epochs) < 1 or refit_growth < 0 or not 0 <= val_frac < 1 \
                or max_train < 2 * self.cfg.n_tier or stats not in ("all", "batches") or preselect < 0 \
                or local < 0 or not 0 <= local_share <= self.cfg.top_k:
            raise ConfigError(f"nar needs refit_every >= 1, refit_epochs >= 1, refit_growth >= 0, val_frac in [0, 1), "
                              f"max_train >= {2 * self.cfg.n_tier}, stats all|batches, preselect >= 0, local >= 0 and "
                              f"local_share in [0, top_k = {self.cfg.top_k}]")
        if self.n_init < 2 * self.cfg.n_tier:
            raise ConfigError(f"nar needs n_init >= {2 * self.cfg.n_tier} (two cells per tier) to fit the ranker")
        base = space_data(self.cfg.dataset, self.cfg.scale_features)
        self.data = dataclasses.replace(base, target=base.target.copy())  # labels fill in as cells finish
        self.run: NARRun | None = None
        self.fitted_at = self.trained_on = 0  # finished cells at the last refit, and how many it trained on
        self.queue: list[str] = []
        self.refits, self.refit_seconds = 0, 0.0

    def propose(self) -> str:
        if len(self.scores) < self.n_init:
            return self.random_unseen()
        if self.run is None or len(self.scores) - self.fitted_at >= self.refit_interval():
            self.refit()
        for _ in range(100):
            if self.queue:
                return self.queue.pop(0)
            self._fill_queue()
        return self.random_unseen()  # the sampler keeps drawing proposed cells: the space is nearly spent

    def refit_interval(self) -> int:
        """Finished cells between refits: ``refit_every``, or ``refit_growth`` of those finished once more, and
        at least ``max_train`` once the last refit trained on that many (a cheaper tail, same start)."""
        every = max(self.refit_every, round(self.refit_growth * self.fitted_at))
        return max(every, self.max_train) if self.trained_on >= self.max_train else every

    def observe(self, arch: str, scores: dict[int, float]) -> None:
        f = max(scores)
        self.data.target[self.data.index[arch]] = 1000.0 * f + scores[f]  # fidelity first, then score

    def refit(self) -> None:
        """Warm-started training on every finished cell, then the fixed tier embeddings and sampling stats."""
        t0 = time.process_time()
        if self.run is None:
            self.run = NARRun(self.cfg, self.data)
        rows = np.array(sorted(self.data.index[a] for a in self.scores))
        perm = np.random.default_rng([self.seed, self.refits]).permutation(rows)
        n_val = max(self.cfg.n_tier, min(round(self.val_frac * len(rows)), self.max_train // 4)) \
            if self.val_frac else 0
        train = perm[n_val:][:self.max_train]  # a fresh random subset each refit bounds its cost
        val = perm[:n_val] if n_val else train
        self.run.label(train, val)
        for _ in range(self.refit_epochs):
            self.run.run_epoch()
        self.run.use_best()
        tiers = self._fix_tiers(rows)
        if self.stats == "all":
            self.distri = [batch_tier_stats(self.data, rows, tiers, self.cfg.n_tier, self.cfg.bins)]
        else:
            self.distri = list(self.run.best["distri"])
            self.rng.shuffle(self.distri)
        self.sampler = TierSampler(self.data, self.cfg, self.rng)
        self.fitted_at, self.trained_on = len(self.scores), len(train)
        self.refits, self.draws, self.queue = self.refits + 1, 0, []
        self.refit_seconds += time.process_time() - t0

    @torch.no_grad()
    def _fix_tiers(self, rows: np.ndarray) -> np.ndarray:
        """Tier embeddings: mean encoding of the labelled cells per true tier; clears the candidate cache."""
        run = self.run
        run.model.eval()
        bank = run.bank()
        tiers = quintile_tiers(self.data.target[rows], self.cfg.n_tier)
        bank.update(run.model.encode(self.data.features[rows]), torch.from_numpy(tiers))
        self.tiers = bank.embeddings()
        self.score_cache: dict[int, float] = {}
        self.tier_cache: dict[int, int] = {}
        return tiers

    @torch.no_grad()
    def predict_score(self, rows: np.ndarray) -> np.ndarray:
        """The ranker's relative score of each row (a test swaps in a perfect ranker)."""
        model = self.run.model
        return model.score(model.encode(self.data.features[rows])).numpy()

    @torch.no_grad()
    def predict_tier(self, rows: np.ndarray) -> np.ndarray:
        """The ranker's predicted tier of each row, 0 = best (the decoder pass: ~5x the cost of a score)."""
        model = self.run.model
        return model.classify(model.encode(self.data.features[rows]), self.tiers).argmax(1).numpy()

    @staticmethod
    def _cached(cache: dict[int, Any], predict: Any, rows: np.ndarray) -> np.ndarray:
        todo = [r for r in dict.fromkeys(rows.tolist()) if r not in cache]
        if todo:
            cache.update(zip(todo, predict(np.array(todo, dtype=np.int64)).tolist()))
        return np.array([cache[r] for r in rows.tolist()])

    def _rank(self, rows: np.ndarray) -> np.ndarray:
        """The unseen ``rows`` best first: by predicted tier, then score. With ``preselect`` only the best
        ``preselect * top_k`` by score get a tier (every prediction is cached until the next refit)."""
        rows = np.array([r for r in dict.fromkeys(rows.tolist()) if self.data.names[r] not in self.seen],
                        dtype=np.int64)
        score = self._cached(self.score_cache, self.predict_score, rows)
        if self.preselect:
            keep = np.argsort(-score, kind="stable")[:self.preselect * self.cfg.top_k]
            rows, score = rows[keep], score[keep]
        tier = self._cached(self.tier_cache, self.predict_tier, rows)
        return rows[np.lexsort((-score, tier))]

    def _fill_queue(self) -> None:
        stats = self.distri[self.draws % len(self.distri)]
        self.draws += 1
        names = self.data.names
        near = self._neighbours()
        rows = self._rank(np.array(list(self.sampler.sample(stats)) + near, dtype=np.int64)).tolist()
        if self.local_share and near:  # the best-ranked mutants take their reserved slots first
            mine = self._rank(np.array(near, dtype=np.int64))[:self.local_share].tolist()
            rows = mine + [r for r in rows if r not in mine]
        self.queue = [names[r] for r in rows[:self.cfg.top_k]]

    def _neighbours(self) -> list[int]:
        """Rows of the one-edge mutants of the ``local`` best finished cells (none when ``local`` is 0)."""
        if not self.local:
            return []
        best = sorted(self.scores, key=lambda a: self.data.target[self.data.index[a]], reverse=True)[:self.local]
        return [self.data.index[m] for a in best for m in mutants(a)]
