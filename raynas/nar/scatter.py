"""The predicted-vs-true rank scatter of a trained NAR on its held-out architectures (an MLflow artifact).

Both axes are ranks with 1 = best (highest accuracy), so a perfect ranker is the diagonal and the best
architectures sit at the lower left; the title says which benchmark, dataset, seed and epoch (the
best-validation one, whose weights are scored) it shows, and Kendall's tau.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats


def _rank_label(x: float, _pos: Any = None) -> str:
    return f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"


def scatter_figure(pred: np.ndarray, true: np.ndarray, *, bench: str, dataset: str, seed: int,
                   epoch: int | None = None, epochs: int | None = None) -> Any:
    """The scatter as a matplotlib ``Figure`` (no pyplot)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    pred, true = np.asarray(pred), np.asarray(true)
    pr, tr = stats.rankdata(-pred), stats.rankdata(-true)
    n = len(tr)
    tau = float(stats.kendalltau(pred, true).statistic)
    fig = Figure(figsize=(4.8, 5.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(tr, pr, s=3 if n > 2000 else 8, alpha=0.35 if n > 2000 else 0.7, linewidths=0)
    ax.plot([1, n], [1, n], color="gray", lw=0.8, label="perfect ranking")
    ticks = [1, *(t for t in MaxNLocator(nbins=5, integer=True).tick_values(1, n) if 1 < t <= n)]  # no rank 0
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks)
        axis.set_major_formatter(FuncFormatter(_rank_label))
    ax.set_xlim(1 - 0.02 * n, n * 1.02)
    ax.set_ylim(1 - 0.02 * n, n * 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("true rank by test accuracy (rank 1 = best)")
    ax.set_ylabel("predicted rank (rank 1 = best)")
    at = "" if epoch is None else f", epoch {epoch}" + (f" of {epochs} (best validation)" if epochs else "")
    ax.set_title(f"NAR on {bench}/{dataset}, seed {seed}{at}\nKendall τ = {tau:.3f} on {n:,} held-out "
                 "architectures", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def scatter_png(pred: np.ndarray, true: np.ndarray, path: str | Path, **title: Any) -> Path:
    """Write the scatter (``title``: bench, dataset, seed, epoch, epochs of ``scatter_figure``)."""
    scatter_figure(pred, true, **title).savefig(path)
    return Path(path)
