"""Anytime curves and fixed-budget tables of a searcher comparison, mean ± std over seeds.

The incumbent after k queries is the evaluated cell a user would pick: the one trained longest (200 epochs
before 12), then with the best validation accuracy there; its curve value is its 200-epoch test accuracy,
which no searcher ever sees. Curves run over queries and over simulated time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from raynas.searchers.simulate import Query

#: Runs of one comparison: searcher -> one list of queries per seed
Runs = dict[str, list[list[Query]]]


def incumbent_rows(queries: Sequence[Query]) -> list[int]:
    """Index of the incumbent after each query: longest trained first, then best validation (first on ties)."""
    out, best = [], 0
    for k, q in enumerate(queries):
        if (q.epochs, q.valid) > (queries[best].epochs, queries[best].valid):
            best = k
        out.append(best)
    return out


#: what a curve can show of the incumbent: its 200-epoch test accuracy, or the validation accuracy the
#: searcher saw (at the fidelity the cell was trained to)
FIELDS = ("test", "valid")


def incumbents(queries: Sequence[Query], field: str = "test") -> np.ndarray:
    """(n,) test accuracy (or ``field``: ``valid``, what the searchers optimise) of the incumbent after each
    query."""
    if field not in FIELDS:
        raise ValueError(f"unknown curve field {field!r}; valid: {', '.join(FIELDS)}")
    return np.array([getattr(queries[i], field) for i in incumbent_rows(queries)], dtype=float)


def holds(queries: Sequence[Query], arch: str, budgets: Sequence[int]) -> np.ndarray:
    """Whether the incumbent after each budget of queries is ``arch`` (e.g. the table's best by validation)."""
    rows = incumbent_rows(queries)
    return np.array([bool(rows) and queries[rows[min(b, len(rows)) - 1]].arch == arch for b in budgets])


def at_queries(queries: Sequence[Query], budgets: Sequence[int], field: str = "test") -> np.ndarray:
    """Incumbent test accuracy (or ``field``) after each budget of queries (a run that stopped early: its last
    incumbent)."""
    inc = incumbents(queries, field)
    return np.array([inc[min(b, len(inc)) - 1] if len(inc) else np.nan for b in budgets])


def at_times(queries: Sequence[Query], times: Sequence[float], field: str = "test") -> np.ndarray:
    """Incumbent test accuracy (or ``field``) at each simulated time (NaN before the first cell finished)."""
    inc, ends = incumbents(queries, field), np.array([q.time for q in queries])
    k = np.searchsorted(ends, np.asarray(times, dtype=float), side="right")
    return np.array([inc[i - 1] if i else np.nan for i in k])


def mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over seeds (axis 0), ignoring NaN; std is the sample std (0 for one seed)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: before any cell finished
        n = np.sum(~np.isnan(values), axis=0)
        mean = np.nanmean(values, axis=0) if values.size else values
        std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])
    return mean, np.where(n > 1, std, 0.0)


def table_rows(runs: Runs, budgets: Sequence[float], by: str = "queries", field: str = "test") -> list[dict]:
    """One row per searcher: mean/std of the incumbent test accuracy (or ``field``) at each budget (``by``
    queries, or simulated seconds), plus what the largest budget took: simulated hours, or queries."""
    rows = []
    for name, seeds in runs.items():
        pick = at_queries if by == "queries" else at_times
        mean, std = mean_std(np.array([pick(q, budgets, field) for q in seeds]))
        if by == "queries":
            cost = [q[min(int(budgets[-1]), len(q)) - 1].time / 3600 for q in seeds if q]
        else:
            cost = [float(np.searchsorted([x.time for x in q], budgets[-1], side="right")) for q in seeds]
        rows.append({"searcher": name, "seeds": len(seeds), "by": by, "budgets": list(budgets),
                     "mean": [float(m) for m in mean], "std": [float(s) for s in std],
                     "cost": float(np.mean(cost)) if cost else float("nan")})
    return rows


def markdown(rows: list[dict], title: str = "") -> str:
    """The fixed-budget table: mean ± std per searcher and budget."""
    budgets, by = (rows[0]["budgets"], rows[0]["by"]) if rows else ([], "queries")
    if by == "queries":
        head = [f"{b:g} queries" for b in budgets] + [f"sim. h ({budgets[-1]:g})" if budgets else "sim. h"]
    else:
        head = [f"{b / 3600:.4g} sim. h" for b in budgets] + ["queries (mean)"]
    head = ["searcher", "seeds"] + head
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                      "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(r["mean"], r["std"])]
        lines.append("| " + " | ".join([r["searcher"], str(r["seeds"]), *cells, f"{r['cost']:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: Runs, path: str | Path, title: str = "", optimum: float | None = None) -> Path:
    """Two panels, incumbent test accuracy (mean ± std over seeds) vs queries (from the 5th) and vs simulated
    hours; the dashed line is ``optimum`` (the test accuracy of the table's best cell by validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_q, ax_t) = plt.subplots(1, 2, figsize=(11, 4), dpi=110, sharey=True)
    ends = [q[-1].time for seeds in runs.values() for q in seeds if q]
    starts = [q[0].time for seeds in runs.values() for q in seeds if q]
    grid = np.geomspace(max(min(starts, default=1.0), 1.0), max(ends, default=10.0), 200)
    for name, seeds in runs.items():
        n = max((len(q) for q in seeds), default=0)
        if not n:
            continue
        by_query = np.array([at_queries(q, range(1, n + 1)) for q in seeds])
        by_time = np.array([at_times(q, grid) for q in seeds])
        for ax, x, values in ((ax_q, np.arange(1, n + 1), by_query), (ax_t, grid / 3600, by_time)):
            mean, std = mean_std(values)
            line, = ax.plot(x, mean, label=name, lw=1.4)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
    fifth = [q[min(4, len(q) - 1)].time / 3600 for seeds in runs.values() for q in seeds if q]
    ax_q.set_xlim(5, None)  # the first few queries spread over the whole accuracy range
    ax_t.set_xlim(float(np.median(fifth)) if fifth else None, None)
    for ax, label in ((ax_q, "queries"), (ax_t, "simulated hours")):
        if optimum is not None:
            ax.axhline(optimum, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    ax_q.set_ylabel("incumbent test accuracy (%)")
    values = [v for seeds in runs.values() for q in seeds for v in incumbents(q)[len(q) // 10:]]
    if values:
        ax_q.set_ylim(np.percentile(values, 1) - 0.3, (optimum or max(values)) + 0.15)
    ax_q.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
