"""Alpha-evolution heatmap: for each cell type, epochs (x) against (edge, op) rows (y), colour = how far the
op's weight is from uniform on its edge (weight - 1/#ops), on a diverging scale of its own per panel.

Early in a search every weight is close to 1/#ops (0.2 on NB201), so an absolute 0-1 scale is one flat
block; the deviation shows which op each edge is leaning to from the first epoch, and when ``skip_connect``
takes over (DARTS' collapse). A dot marks each edge's strongest op at the last epoch. Ops pruned during a
search (DrNAS stages) are blank from the epoch they disappear.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Alpha = dict[str, dict[str, dict[str, float]]]  # cell -> edge -> op -> weight
CMAP = "RdBu_r"  # red: above uniform, blue: below


def _alphas(history: list[dict[str, Any]]) -> list[tuple[int, Alpha]]:
    """(epoch, alpha) pairs from alpha dicts or per-epoch metrics carrying one under ``alpha`` (and ``epoch``);
    entries without alpha are skipped, missing epochs numbered 1, 2, ..."""
    out = []
    for i, h in enumerate(history):
        a = h.get("alpha") if "alpha" in h else h
        if isinstance(a, dict) and a and all(isinstance(v, dict) for v in a.values()):
            epoch = h.get("epoch") if "alpha" in h else None
            out.append((int(epoch) if isinstance(epoch, (int, float)) else i + 1, a))
    return out


def alpha_matrix(history: list[dict[str, Any]], cell: str, relative: bool = True
                 ) -> tuple[list[str], list[list[float]]]:
    """Row labels ``"edge op"`` (first-seen order) and rows of per-epoch values (NaN where absent): the weight
    minus uniform (1 / the ops present on the edge that epoch), or the weight itself with ``relative=False``."""
    alphas = [a for _, a in _alphas(history)]
    rows: dict[tuple[str, str], None] = {}
    for a in alphas:
        for edge, ops in a.get(cell, {}).items():
            for op in ops:
                rows.setdefault((edge, op))

    def value(a: Alpha, edge: str, op: str) -> float:
        ops = a.get(cell, {}).get(edge, {})
        if op not in ops:
            return math.nan
        return float(ops[op]) - (1.0 / len(ops) if relative else 0.0)

    return [f"{e} {o}" for e, o in rows], [[value(a, e, o) for a in alphas] for e, o in rows]


def alpha_heatmap_figure(history: list[dict[str, Any]]) -> Any:
    """The heatmap as a matplotlib ``Figure`` (no pyplot); one panel per cell type."""
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global state

    alphas = _alphas(history)
    if not alphas:
        raise ValueError("no alpha history to draw")
    epochs = [e for e, _ in alphas]
    cells = list(dict.fromkeys(c for _, a in alphas for c in a))
    panels = [(c, *alpha_matrix(history, c)) for c in cells]
    n_rows = max(len(labels) for _, labels, _ in panels)
    width = 2.6 + max(2.8, 0.08 * min(len(epochs), 100))  # labels + epochs + colour bar, per panel
    fig = Figure(figsize=(width * len(panels), max(3.5, 0.14 * n_rows + 1.8)))
    for i, (cell, labels, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        scale = max((abs(v) for row in values for v in row if v == v), default=0.0) or 1e-6
        im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=CMAP, vmin=-scale, vmax=scale,
                       extent=(0.5, len(epochs) + 0.5, len(labels) - 0.5, -0.5))
        ax.set_yticks(range(len(labels)), labels, fontsize=6 if len(labels) > 40 else 8)
        edges = [label.split(" ", 1)[0] for label in labels]
        for r in range(1, len(edges)):
            if edges[r] != edges[r - 1]:  # a line between edges
                ax.axhline(r - 0.5, color="black", lw=0.5)
        for edge in dict.fromkeys(edges):  # the strongest op of each edge at the last epoch
            rows = [r for r, e in enumerate(edges) if e == edge and values[r][-1] == values[r][-1]]
            if rows:
                best = max(rows, key=lambda r: values[r][-1])
                ax.plot(len(epochs), best, marker="o", ms=3, color="black")
        step = max(1, math.ceil(len(epochs) / 12))
        ticks = list(range(1, len(epochs) + 1, step))
        ax.set_xticks(ticks, [str(epochs[t - 1]) for t in ticks])
        ax.set_xlim(0.5, len(epochs) + 0.5)
        ax.set_xlabel("epoch")
        name = "" if cell == "cell" else f" ({cell} cell)"  # NB201 has one cell type, named "cell"
        ax.set_title(f"α − uniform{name}\n● strongest op at epoch {epochs[-1]}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="weight − 1/#ops of the edge")
    fig.tight_layout()
    return fig


def draw_alpha_heatmap(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the heatmap (PNG/SVG by suffix) of a non-empty alpha history."""
    fig = alpha_heatmap_figure(history)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix[1:].lower() or "png", dpi=110)
    return path
