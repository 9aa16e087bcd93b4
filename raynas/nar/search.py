"""NAR's tier-guided sampling search (``sampler/``, ``process/sample*.py`` of AlbertiPot/nar).

Training records, per batch and per tier, histograms of total FLOPs (units of 1e6) and params (1e3) over the
batch's range, and the op-type counts (NB201) or vertex counts (NB101). At search time each iteration:
  1. draws candidates guided by the top tier's histograms: an upper bound on FLOPs and on params every
     ``reuse_step`` candidates, then cells (NB201: each edge op from the top tier's op counts; NB101: a random
     DAG with a vertex count from the top tier's) until one fits the bounds (``max_trials``). A histogram guides
     only while the top tier holds ``batch_factor`` of the batch and differs from every tier >= ``last_tier``
     by at least a KL threshold; otherwise the draw is uniform;
  2. fills ``noisy_factor`` of the sample with uniformly random cells;
  3. ranks the sample with NAR: predicted tier first, then the score; tier embeddings are the running means of
     the encodings by predicted tier over the whole search;
  4. queries the benchmark for the top ``top_k`` not queried before (the only lookups of the search).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynas.nar.data import BenchData
from raynas.nar.tier_stats import batch_tier_stats
from search_spaces.nb101 import random_spec
from search_spaces.nb201 import OPS_NB201

if TYPE_CHECKING:
    from raynas.nar.train import NARConfig, NARRun


def _kl(low: list[float], top: list[float]) -> float:
    """``F.kl_div(log_softmax(low), log_softmax(top), 'batchmean', log_target=True)`` on raw counts, as NAR."""
    lp, lq = (np.asarray(v, dtype=np.float64) for v in (low, top))
    lp, lq = lp - np.logaddexp.reduce(lp), lq - np.logaddexp.reduce(lq)
    return float((np.exp(lq) * (lq - lp)).sum() / len(low))


def guide(hists: list[dict[int, float]], cfg: NARConfig, threshold: float) -> dict[int, float] | None:
    """The top tier's histogram, if it is big enough and far (KL) from every low tier; else None (uniform)."""
    total = sum(sum(h.values()) for h in hists)
    top = hists[0]
    if cfg.force_uniform or sum(top.values()) < cfg.batch_factor * total or sum(top.values()) == 0:
        return None
    for low in hists[cfg.last_tier - 1:]:
        if _kl(list(low.values()), list(top.values())) < threshold:
            return None
    return top


def draw(rng: random.Random, hists: list[dict[int, float]], dist: dict[int, float] | None) -> int:
    """A value from the guiding histogram ``dist``, or uniformly over the bins when there is none."""
    if dist is None:
        return rng.choice(list(hists[0]))
    return rng.choices(list(dist), weights=list(dist.values()))[0]


class Draw:
    """:func:`draw` with its lists built once: the same values from the same random numbers, for the inner
    loop of the sampler (millions of draws per search)."""

    def __init__(self, hists: list[dict[int, float]], dist: dict[int, float] | None):
        self.keys = list(hists[0]) if dist is None else list(dist)
        self.cum = None if dist is None else list(itertools.accumulate(dist.values()))

    def __call__(self, rng: random.Random) -> int:
        if self.cum is None:
            return rng.choice(self.keys)
        # random.choices(keys, weights)[0], step by step: one random() against the cumulative weights
        return self.keys[bisect.bisect(self.cum, rng.random() * (self.cum[-1] + 0.0), 0, len(self.keys) - 1)]


class TierSampler:
    """Candidate rows of the table, guided by one batch's tier statistics, then uniformly random; all unique."""

    def __init__(self, data: BenchData, cfg: NARConfig, rng: random.Random):
        self.data, self.cfg, self.rng = data, cfg, rng
        self.flops, self.params = data.flops.tolist(), data.params.tolist()  # Python floats for the loop
        self.row_of = _nb201_rows(data) if data.bench == "nb201" else None

    def _propose(self, stats: dict[str, list], op: Draw) -> int | None:
        if self.row_of is not None:  # six edge ops -> the row of that cell (None when the table lacks it)
            code = 0
            for e in range(6):
                code += op(self.rng) * len(OPS_NB201) ** e
            row = self.row_of[code]
            return None if row < 0 else row
        n = self.rng.choice(list(stats["kind"][0]))  # vertices: uniform over the histogram (NAR forces it)
        spec = random_spec(self.rng, n)
        return self.data.index.get(spec.hash()) if spec.is_valid() else None

    def sample(self, stats: dict[str, list], size: int | None = None) -> list[int]:
        cfg, size = self.cfg, size or self.cfg.sample_size
        chosen: list[int] = []
        seen: set[int] = set()
        fb = pb = math.inf
        dist = {k: guide(stats[k], cfg, thr) for k, thr in (("flops", cfg.flops_kl), ("params", cfg.params_kl),
                                                            ("kind", cfg.ops_kl))}
        draw_flops, draw_params = Draw(stats["flops"], dist["flops"]), Draw(stats["params"], dist["params"])
        draw_op = Draw(stats["kind"], dist["kind"])
        for k in range(int(size * (1 - cfg.noisy_factor))):
            if k % cfg.reuse_step == 0:
                fb, pb = draw_flops(self.rng), draw_params(self.rng)
            last = None
            for _ in range(cfg.max_trials + 1):
                i = self._propose(stats, draw_op)
                if i is None or i in seen:
                    continue
                last = i
                if self.flops[i] <= fb and self.params[i] <= pb:
                    break
            if last is not None:
                chosen.append(last)
                seen.add(last)
        n = len(self.data)
        while len(chosen) < min(size, n):
            i = self.rng.randrange(n)
            if i not in seen:
                chosen.append(i)
                seen.add(i)
        return chosen


def _nb201_rows(data: BenchData) -> list[int]:
    """Row of each NB201 cell by its code sum(op_e * 5^e) over the edges (-1: not in the table)."""
    rows = np.full(len(OPS_NB201) ** 6, -1, dtype=np.int64)
    rows[data.op_index @ (len(OPS_NB201) ** np.arange(6))] = np.arange(len(data))
    return rows.tolist()


@torch.no_grad()
def tier_search(run: NARRun, budget: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Search with the trained ranker (best-validation weights); ``budget`` = benchmark queries of the search.

    The best architecture is the queried one with the highest validation accuracy (what a search can see);
    ``best_test_acc_oracle`` is the best test accuracy among the queried ones (how the authors' code reports).
    ``queries`` counts every labelled architecture: training + validation + search lookups.
    """
    cfg, data = run.cfg, run.data
    budget = budget if budget is not None else cfg.budget
    rng = random.Random(cfg.seed if seed is None else seed)
    run.use_best()
    run.model.eval()
    distri = list(run.best["distri"]) or [batch_tier_stats(data, run.train_idx, run.train_tier.numpy(),
                                                             cfg.n_tier, cfg.bins)]
    rng.shuffle(distri)
    iters = math.ceil(budget / cfg.top_k)
    reuse = max(1, math.ceil(iters / len(distri)))
    sampler, bank = TierSampler(data, cfg, rng), run.bank()
    queried: list[int] = []
    for it in range(iters):
        rows = np.array(sampler.sample(distri[min(it // reuse, len(distri) - 1)]))
        logits, enc, score = run.model(data.features[rows], bank.embeddings())
        tier = logits.argmax(1)
        bank.update(enc, tier)
        order = np.lexsort((-score.numpy(), tier.numpy()))  # tier first, then score (descending)
        done = set(queried)
        fresh = [int(rows[j]) for j in order if int(rows[j]) not in done]
        queried += fresh[:min(cfg.top_k, budget - len(queried))]
        if len(queried) >= budget:
            break
    if not queried:
        return {"search_queries": 0, "queries": len(run.train_idx) + len(run.val_idx)}
    q = np.array(queried)
    best = int(q[np.argmax(data.target[q])])
    rank = data.rank(best)
    out = {"best_arch": data.names[best], "best_test_acc": float(data.test[best]),
           "best_valid_acc": float(data.target[best]), "rank": rank, "percentile": 100.0 * rank / len(data),
           "best_test_acc_oracle": float(data.test[q].max()), "optimum_test_acc": float(data.test.max()),
           "search_queries": len(q), "queries": len(run.train_idx) + len(run.val_idx) + len(q)}
    if data.cells is not None:  # NB101: the name is the benchmark hash; give the cell too
        out["best_cell"] = data.cells[best]
    return out
