"""Alpha-evolution heatmap: for each cell type, epochs (x) against (edge, op) rows (y), colour = weight.

It shows at a glance when an edge settles and when ``skip_connect`` takes over (DARTS' collapse).
Ops pruned during a search (DrNAS stages) are blank from the epoch they disappear.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Alpha = dict[str, dict[str, dict[str, float]]]  # cell -> edge -> op -> weight


def _alphas(history: list[dict[str, Any]]) -> list[Alpha]:
    """Alpha dicts, or per-epoch metrics dicts carrying one under ``alpha``; entries without are skipped."""
    out = []
    for h in history:
        a = h.get("alpha") if "alpha" in h else h
        if isinstance(a, dict) and a and all(isinstance(v, dict) for v in a.values()):
            out.append(a)
    return out


def alpha_matrix(history: list[dict[str, Any]], cell: str) -> tuple[list[str], list[list[float]]]:
    """Row labels ``"edge op"`` (first-seen order) and rows of weights per epoch (NaN where absent)."""
    alphas = _alphas(history)
    rows: dict[tuple[str, str], None] = {}
    for a in alphas:
        for edge, ops in a.get(cell, {}).items():
            for op in ops:
                rows.setdefault((edge, op))
    values = [[float(a.get(cell, {}).get(e, {}).get(o, math.nan)) for a in alphas] for e, o in rows]
    return [f"{e} {o}" for e, o in rows], values


def draw_alpha_heatmap(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the heatmap (PNG/SVG by suffix) of a non-empty alpha history; one panel per cell type."""
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global state
    from matplotlib.ticker import MaxNLocator

    alphas = _alphas(history)
    if not alphas:
        raise ValueError("no alpha history to draw")
    cells = list(dict.fromkeys(c for a in alphas for c in a))
    panels = [(c, *alpha_matrix(alphas, c)) for c in cells]
    n_rows = max(len(labels) for _, labels, _ in panels)
    fig = Figure(figsize=(5.5 * len(panels), max(3.5, 0.14 * n_rows + 1.8)))
    for i, (cell, labels, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        epochs = len(alphas)
        im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0,
                       vmax=max(1e-9, max((v for row in values for v in row if v == v), default=1.0)),
                       extent=(0.5, epochs + 0.5, len(labels) - 0.5, -0.5))
        ax.set_yticks(range(len(labels)), labels, fontsize=6 if len(labels) > 40 else 8)
        edges = [label.split(" ", 1)[0] for label in labels]
        for r in range(1, len(edges)):
            if edges[r] != edges[r - 1]:  # a thin line between edges
                ax.axhline(r - 0.5, color="white", lw=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(f"alpha ({cell})")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="weight")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix[1:].lower() or "png", dpi=110)
    return path
