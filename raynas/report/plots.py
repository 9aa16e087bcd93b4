"""The report's figures (matplotlib ``Figure`` without pyplot, so no global backend state): one PNG each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_STYLES = ["-", "--", ":", "-."]


def _grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, axes: np.ndarray, used: int, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat[:used]:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_alpha(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    """Per method: the weight of each op on the first edge over epochs; colours = ops, styles = seeds."""
    panels = []
    for (space, dataset), col in _by_column(trials).items():
        for method in sorted({t["method"] for t in col}):
            runs = [(t, [h for h in histories[t["key"]] if h.get("alpha")]) for t in col if t["method"] == method]
            runs = [(t, h) for t, h in runs if h]
            if runs:
                panels.append((f"{method} · {space}/{dataset}", runs))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (title, runs) in zip(axes.flat, panels):
        cell = next(iter(runs[0][1][0]["alpha"]))
        edge = next(iter(runs[0][1][0]["alpha"][cell]))
        ops = list(runs[0][1][0]["alpha"][cell][edge])
        for i, (_, hist) in enumerate(runs):
            epochs = [h["epoch"] for h in hist]
            for j, op in enumerate(ops):
                ax.plot(epochs, [h["alpha"][cell][edge].get(op, np.nan) for h in hist], color=f"C{j}",
                        linestyle=_STYLES[i % len(_STYLES)], marker=".",
                        label=op if i == 0 else None)
        ax.set_title(f"{title}\n{cell} edge {edge} (styles: seeds {', '.join(str(t['seed']) for t, _ in runs)})",
                     fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("op weight")
        ax.legend(fontsize=7)
    return _save(fig, axes, len(panels), path)


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
        ax.set_title(f"{space}/{dataset}", fontsize=9)
        ax.set_ylabel(col[0]["objective_name"])
    return _save(fig, axes, len(cols), path)


def plot_hessian(trials: list[dict[str, Any]], histories: dict[str, list], path: Path) -> Path | None:
    """Dominant Hessian eigenvalue per epoch; colours = methods, styles = seeds. None when never reported."""
    cols = {c: ts for c, ts in _by_column(trials).items()
            if any(h.get("hessian_eigenvalue") is not None for t in ts for h in histories[t["key"]])}
    if not cols:
        return None
    fig, axes = _grid(len(cols))
    for ax, ((space, dataset), col) in zip(axes.flat, cols.items()):
        methods = sorted({t["method"] for t in col})
        seeds, labelled = sorted({t["seed"] for t in col}), set()
        for t in col:
            pts = [(h["epoch"], h["hessian_eigenvalue"]) for h in histories[t["key"]]
                   if h.get("hessian_eigenvalue") is not None]
            if pts:
                ax.plot(*zip(*pts), color=f"C{methods.index(t['method'])}", marker=".",
                        linestyle=_STYLES[seeds.index(t["seed"]) % len(_STYLES)],
                        label=None if t["method"] in labelled else t["method"])
                labelled.add(t["method"])
        ax.set_title(f"{space}/{dataset} (styles: seeds)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dominant eigenvalue of ∇²α L_val")
        ax.legend(fontsize=7)
    return _save(fig, axes, len(cols), path)
