"""Drawings of a genotype's cell DAG, to .png or .svg.

With graphviz' ``dot`` on PATH the layout is dot's; otherwise matplotlib draws a fixed left-to-right
layout and places each op label at the first point along its edge where it overlaps no other label or
node, so a missing graphviz never fails a command nor gives an unreadable drawing. DARTS-family genotypes
get two panels (normal and reduction cell), NB201 one. ``none`` edges carry nothing: they are drawn
dotted grey and labelled ``none`` (absent on purpose, not forgotten); a degenerate cell says why in red.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from search_spaces.cell_graph import CONCAT, NONE, CellGraph, cell_graphs, graph_reasons

FORMATS = (".png", ".svg")
_COLORS = {"skip_connect": "#2ca02c", "max_pool_3x3": "#1f77b4", "avg_pool_3x3": "#17becf",
           "sep_conv_3x3": "#d62728", "sep_conv_5x5": "#ff7f0e", "sep_conv_7x7": "#8c564b",
           "dil_conv_3x3": "#9467bd", "dil_conv_5x5": "#e377c2", "noise": "#7f7f7f",
           "nor_conv_1x1": "#ff7f0e", "nor_conv_3x3": "#d62728", NONE: "#9a9a9a"}
NOTE = "dotted grey: none (no op, the edge is absent)"
CONCAT_NOTE = "dashed grey: concatenation into the cell output"
_T_CANDIDATES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75, 0.2, 0.8, 0.15, 0.85)  # where along an edge a label may go


def draw_cell(space: str, genotype: Any, path: str | Path) -> Path:
    """Draw the genotype's cell(s) to ``path`` (.png or .svg); graphviz if available, else matplotlib."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot draw to {path.name}: use a .png or .svg file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    graphs = cell_graphs(space, genotype)
    dot = shutil.which("dot")
    if dot is not None:
        try:
            subprocess.run([dot, f"-T{path.suffix[1:].lower()}", "-o", str(path)], input=to_dot(graphs),
                           text=True, check=True, capture_output=True, timeout=60)
            return path
        except (OSError, subprocess.SubprocessError):
            pass  # a broken graphviz install: fall through to matplotlib
    cell_figure(graphs).savefig(path, format=path.suffix[1:].lower(), dpi=150, bbox_inches="tight", pad_inches=0.15)
    return path


def _title(g: CellGraph, newline: str = "\n") -> str:
    reasons = graph_reasons(g)
    return g.title + (newline + "degenerate: " + "; ".join(r.split(": ", 1)[1] for r in reasons) if reasons else "")


def to_dot(graphs: list[CellGraph]) -> str:
    """Graphviz source: one left-to-right cluster per cell; none edges dotted grey, labelled none."""
    lines = ["digraph G {", "  rankdir=LR; node [shape=box, style=filled, fontname=Helvetica];",
             "  edge [fontname=Helvetica, fontsize=10];"]
    for i, g in enumerate(graphs):
        color = '; fontcolor="#c00000"' if graph_reasons(g) else ""
        lines.append(f'  subgraph cluster_{i} {{ label="{_title(g, chr(92) + "n")}"{color};')
        for n in g.nodes:
            fill = "lightblue" if _is_io(g, n) else "lightyellow"
            lines.append(f'    "{i}:{n}" [label="{n}", fillcolor={fill}];')
        for src, dst, op in g.edges:
            if op == CONCAT:
                style = "style=dashed, color=gray"
            elif op == NONE:
                style = f'label="none", style=dotted, color="{_COLORS[NONE]}", fontcolor="{_COLORS[NONE]}"'
            else:
                style = f'label="{op}", color="{_COLORS.get(op, "black")}"'
            lines.append(f'    "{i}:{src}" -> "{i}:{dst}" [{style}];')
        lines.append("  }")
    note = NOTE + ("; " + CONCAT_NOTE if any(op == CONCAT for g in graphs for *_, op in g.edges) else "")
    lines.append(f'  label="{note}"; fontsize=10; fontcolor=gray30; labelloc=b;')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _is_io(g: CellGraph, node: str) -> bool:
    """Cell inputs and output (drawn in blue)."""
    return node in g.inputs or node == g.output


def _positions(g: CellGraph) -> dict[str, tuple[float, float]]:
    """Inputs on the left, intermediate nodes left to right and staggered up and down, output on the right."""
    middle = [n for n in g.nodes if not _is_io(g, n)]
    if len(g.inputs) == 1:  # NB201: input and output on the axis, the inner nodes off it
        pos = {g.inputs[0]: (0.0, 0.0), g.output: (2.2 * (len(middle) + 1), 0.0)}
        pos.update({n: (2.2 * (i + 1), 1.3 * (-1) ** i) for i, n in enumerate(middle)})
        return pos
    pos = {g.inputs[0]: (0.0, 2.0), g.inputs[1]: (0.0, -2.0), g.output: (2.5 * (len(middle) + 1), 0.0)}
    pos.update({n: (2.5 * (i + 1), 1.25 * (-1) ** i) for i, n in enumerate(middle)})
    return pos


def _bezier(p0: tuple[float, float], p2: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at ``t`` of matplotlib's ``arc3,rad=rad`` curve (a quadratic Bezier; equal aspect axes)."""
    (x1, y1), (x2, y2) = p0, p2
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    u = 1 - t
    return u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def cell_figure(graphs: list[CellGraph]) -> Any:
    """The matplotlib drawing as a ``Figure`` (no pyplot): nodes, curved edges, op labels placed free of
    overlaps, a note on what dotted and dashed edges mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(11 if len(graphs) > 1 else 8, 4.8 * len(graphs)))
    canvas = FigureCanvasAgg(fig)  # a renderer to measure labels with (sizes scale alike at any save dpi)
    axes = [fig.add_subplot(len(graphs), 1, i + 1) for i in range(len(graphs))]
    layouts = [_positions(g) for g in graphs]
    for ax, g, pos in zip(axes, graphs, layouts):
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 0.9, max(xs) + 0.9)
        ax.set_ylim(min(ys) - 1.5, max(ys) + 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(_title(g), color="#c00000" if graph_reasons(g) else "black")
    fig.text(0.5, 0.005, NOTE + ("; " + CONCAT_NOTE if len(graphs) > 1 else ""), ha="center", va="bottom",
             fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))  # before any label is placed: placement needs the final axes
    renderer = canvas.get_renderer()
    for ax, g, pos in zip(axes, graphs, layouts):
        boxes = []
        for n, (x, y) in pos.items():
            fill = "#cde4f7" if _is_io(g, n) else "#fff7c2"
            t = ax.text(x, y, n, ha="center", va="center", fontsize=10, zorder=4,
                        bbox=dict(boxstyle="round,pad=0.4", fc=fill, ec="black"))
            boxes.append(t.get_window_extent(renderer).expanded(1.05, 1.1))
        seen: dict[tuple[str, str], int] = {}
        for src, dst, op in sorted(g.edges, key=lambda e: e[2] == CONCAT):
            k = seen[(src, dst)] = seen.get((src, dst), -1) + 1
            rad = (0.12, -0.28, 0.4)[k % 3] if op != CONCAT else 0.0  # parallel edges bent apart
            color = _COLORS.get(op, "gray") if op != CONCAT else "gray"
            ls = {NONE: ":", CONCAT: "--"}.get(op, "-")
            ax.annotate("", xy=pos[dst], xytext=pos[src], zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6 if op != NONE else 1.2, ls=ls,
                                        shrinkA=16, shrinkB=16, connectionstyle=f"arc3,rad={rad}"))
            if op != CONCAT:
                boxes.append(_place_label(ax, renderer, boxes, op, color, pos[src], pos[dst], rad))
    return fig


def _place_label(ax: Any, renderer: Any, boxes: list, op: str, color: str, p0: tuple[float, float],
                 p2: tuple[float, float], rad: float) -> Any:
    """Put ``op`` at the first point along its edge that overlaps no box placed before (else the least
    overlapping one); return its box."""
    style = dict(color=color, fontsize=7.5, ha="center", va="center", zorder=5, style="italic" if op == NONE else None,
                 bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    best = None
    for t in _T_CANDIDATES:
        text = ax.text(*_bezier(p0, p2, rad, t), op, **style)
        box = text.get_window_extent(renderer).expanded(1.06, 1.15)
        cost = sum(_overlap(box, b) for b in boxes)
        if best is None or cost < best[0]:
            if best is not None:
                best[1].remove()
            best = (cost, text, box)
        else:
            text.remove()
        if cost == 0:
            break
    return best[2]
