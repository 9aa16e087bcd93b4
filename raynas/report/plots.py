"""The report's figures (matplotlib ``Figure`` without pyplot, so no global backend state): one PNG each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_STYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def seed_style(i: int) -> dict[str, Any]:
    """Line style and marker of the i-th seed: 32 distinct combinations, readable in greyscale too."""
    return {"linestyle": _STYLES[i % len(_STYLES)], "marker": _MARKERS[i % len(_MARKERS)]}


def _grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def epoch_ticks(ax: Any, epochs: list[int]) -> None:
    """Integer epoch ticks: each epoch when there are few, else at most ~10 integers; a 1-epoch run gets one
    tick, centred, rather than a dot between fractional ticks."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted(set(epochs))
    if not epochs:
        return
    if len(epochs) <= 12:
        ax.set_xticks(epochs, [str(e) for e in epochs])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)


def _save(fig: Any, axes: np.ndarray, used: int, path: Path) -> Path:
    for ax in axes.flat[used:]:
        ax.set_visible(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _by_column(trials: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in sorted(trials, key=lambda t: (t["space"], t["dataset"], t["method"], t["seed"])):
        out.setdefault((t["space"], t["dataset"]), []).append(t)
    return out


def alpha_figure(trials: list[dict[str, Any]], histories: dict[str, list]) -> tuple[Any, np.ndarray, int] | None:
    """Per method x column: the weight of each op on the first edge over epochs; colour = op, line style and
    marker = seed, the same in every panel (two figure legends). None when no trial has an alpha history."""
    from matplotlib.lines import Line2D

    panels = []
    for (space, dataset), col in _by_column(trials).items():
        for method in sorted({t["method"] for t in col}):
            runs = [(t, [h for h in histories[t["key"]] if h.get("alpha")]) for t in col if t["method"] == method]
            runs = [(t, h) for t, h in runs if h]
            if runs:
                panels.append((f"{method} · {space}/{dataset}", runs))
    if not panels:
        return None

    def first_edge(hist: list[dict[str, Any]]) -> tuple[str, str, list[str]]:
        cell = next(iter(hist[0]["alpha"]))
        edge = next(iter(hist[0]["alpha"][cell]))
        return cell, edge, list(hist[0]["alpha"][cell][edge])

    all_ops = list(dict.fromkeys(op for _, runs in panels for op in first_edge(runs[0][1])[2]))
    seeds = sorted({t["seed"] for _, runs in panels for t, _ in runs})
    fig, axes = _grid(len(panels), width=4.6, height=3.9)
    for ax, (title, runs) in zip(axes.flat, panels):
        cell, edge, ops = first_edge(runs[0][1])
        epochs = []
        for t, hist in runs:
            epochs += [h["epoch"] for h in hist]
            for op in ops:
                ax.plot([h["epoch"] for h in hist], [h["alpha"][cell][edge].get(op, np.nan) for h in hist],
                        color=f"C{all_ops.index(op) % 10}", ms=5, lw=1.3, **seed_style(seeds.index(t["seed"])))
        ax.axhline(1 / len(ops), color="gray", lw=0.8, ls=(0, (1, 3)))
        where = "" if cell == "cell" else f"{cell} cell, "
        ax.set_title(f"{title}\n{where}edge {edge} (dotted: uniform 1/{len(ops)})", fontsize=9)
        epoch_ticks(ax, epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("op weight")
    fig.legend([Line2D([], [], color=f"C{j % 10}", lw=2) for j in range(len(all_ops))], all_ops, title="op",
               loc="outside right upper", fontsize=8, title_fontsize=8)
    fig.legend([Line2D([], [], color="black", ms=5, **seed_style(i)) for i in range(len(seeds))],
               [f"seed {s}" for s in seeds], title="seed", loc="outside right lower", fontsize=8, title_fontsize=8)
    return fig, axes, len(panels)


def plot_alpha(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    made = alpha_figure(trials, histories)
    return None if made is None else _save(*made, path)


def plot_accuracy(trials: list[dict[str, Any]], path: Path) -> Path | None:
    """Per column: the objective of each seed per method (box + points)."""
    cols = {c: ts for c, ts in _by_column(trials).items() if any(t["objective"] is not None for t in ts)}
    if not cols:
        return None
    fig, axes = _grid(len(cols))
    for ax, ((space, dataset), col) in zip(axes.flat, cols.items()):
        methods = sorted({t["method"] for t in col})
        data = [[t["objective"] for t in col if t["method"] == m and t["objective"] is not None] for m in methods]
        ax.boxplot(data, positions=range(len(methods)), widths=0.5, showfliers=False)
        for i, values in enumerate(data):
            ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=18, zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=20)
        ax.set_title(f"{space}/{dataset}: one point per seed", fontsize=9)
        ax.set_ylabel(col[0]["objective_name"])
    return _save(fig, axes, len(cols), path)


def plot_hessian(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    """Dominant Hessian eigenvalue per epoch; colour = method, line style and marker = seed (figure legends).
    None when never reported."""
    from matplotlib.lines import Line2D

    cols = {c: ts for c, ts in _by_column(trials).items()
            if any(h.get("hessian_eigenvalue") is not None for t in ts for h in histories[t["key"]])}
    if not cols:
        return None
    shown = [t for ts in cols.values() for t in ts
             if any(h.get("hessian_eigenvalue") is not None for h in histories[t["key"]])]
    methods, seeds = sorted({t["method"] for t in shown}), sorted({t["seed"] for t in shown})
    fig, axes = _grid(len(cols), width=4.6, height=3.9)
    for ax, ((space, dataset), col) in zip(axes.flat, cols.items()):
        epochs = []
        for t in col:
            pts = [(h["epoch"], h["hessian_eigenvalue"]) for h in histories[t["key"]]
                   if h.get("hessian_eigenvalue") is not None]
            if pts and t in shown:
                epochs += [e for e, _ in pts]
                ax.plot(*zip(*pts), color=f"C{methods.index(t['method']) % 10}", ms=4,
                        **seed_style(seeds.index(t["seed"])))
        ax.set_title(f"{space}/{dataset}", fontsize=9)
        epoch_ticks(ax, epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dominant eigenvalue of ∇²α L_val")
    fig.legend([Line2D([], [], color=f"C{j % 10}", lw=2) for j in range(len(methods))], methods, title="method",
               loc="outside right upper", fontsize=8, title_fontsize=8)
    fig.legend([Line2D([], [], color="black", ms=4, **seed_style(i)) for i in range(len(seeds))],
               [f"seed {s}" for s in seeds], title="seed", loc="outside right lower", fontsize=8, title_fontsize=8)
    return _save(fig, axes, len(cols), path)
