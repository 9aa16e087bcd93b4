"""The per-tier histograms NAR records while it trains and samples from when it searches.

Per batch and per tier: histograms of total FLOPs (units of 1e6) and params (1e3) over the batch's
range, and the op-type counts (NB201) or vertex counts (NB101) (NAR's ``build_counts_dict``).
"""

from __future__ import annotations

import math

import numpy as np

from raynas.nar.data import BenchData


def histogram(values: np.ndarray, lo: float, hi: float, bins: int, unit: float) -> dict[int, int]:
    """NAR ``build_counts_dict``: equal bins of width ceil((hi - lo) / bins) over the batch range, keyed by their
    upper edge (in raw units); a value equal to the minimum falls into the first bin."""
    step = max(1, math.ceil((hi - lo) / bins))
    counts = {int(unit * (lo + i * step)): 0 for i in range(1, bins + 1)}
    for v in values:
        v = v + step if v == lo else v
        counts[int(unit * (math.ceil((v - lo) / step) * step + lo))] += 1
    return counts


def batch_tier_stats(data: BenchData, rows: np.ndarray, tiers: np.ndarray, n_tier: int, bins: int) -> dict[str, list]:
    """Per-tier histograms of one batch: ``flops``, ``params`` and ``kind`` (op counts or vertex counts)."""
    f, p = np.ceil(data.flops[rows] / 1e6), np.ceil(data.params[rows] / 1e3)
    kind = data.kind[rows]
    out: dict[str, list] = {"flops": [], "params": [], "kind": []}
    for t in range(n_tier):
        sel = tiers == t
        out["flops"].append(histogram(f[sel], f.min(), f.max(), bins, 1e6))
        out["params"].append(histogram(p[sel], p.min(), p.max(), bins, 1e3))
        if data.bench == "nb201":
            out["kind"].append({k: int(c) for k, c in enumerate(kind[sel].sum(axis=0))})
        else:
            out["kind"].append({k: int((kind[sel] == k).sum()) for k in range(int(kind.min()), int(kind.max()) + 1)})
    return out
