"""Drawings of a genotype's cell DAG, to .png or .svg.

With graphviz' ``dot`` on PATH the layout is dot's; otherwise matplotlib draws a fixed left-to-right
layout, so a missing graphviz never fails a command. DARTS-family genotypes get two panels (normal and
reduction cell), NB201 one; ``none`` edges carry nothing and are left out.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

FORMATS = (".png", ".svg")
_COLORS = {"skip_connect": "#2ca02c", "max_pool_3x3": "#1f77b4", "avg_pool_3x3": "#17becf",
           "sep_conv_3x3": "#d62728", "sep_conv_5x5": "#ff7f0e", "sep_conv_7x7": "#8c564b",
           "dil_conv_3x3": "#9467bd", "dil_conv_5x5": "#e377c2", "noise": "#7f7f7f",
           "nor_conv_1x1": "#ff7f0e", "nor_conv_3x3": "#d62728"}

Graph = tuple[str, list[str], list[tuple[str, str, str]]]  # title, node names, (src, dst, op) edges


def cell_graphs(space: str, genotype: Any) -> list[Graph]:
    """The cell(s) of a genotype as plain graphs; node names are what the drawing shows."""
    if space == "nb201":
        nodes = [f"{i}" for i in range(4)]
        k, edges = 0, []
        for i in range(1, 4):
            edges += [(nodes[j], nodes[i], genotype.ops[k + j]) for j in range(i) if genotype.ops[k + j] != "none"]
            k += i
        return [("NB201 cell (0: input, 3: output)", nodes, edges)]
    graphs = []
    for cell in ("normal", "reduce"):
        entries, concat = getattr(genotype, cell), getattr(genotype, cell + "_concat")
        nodes = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(len(entries) // 2)] + ["c_{k}"]
        edges = [(nodes[j], nodes[2 + i // 2], op) for i, (op, j) in enumerate(entries) if op != "none"]
        edges += [(nodes[j], "c_{k}", "") for j in concat]
        graphs.append((f"{cell} cell", nodes, edges))
    return graphs


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
    _draw_matplotlib(graphs, path)
    return path


def to_dot(graphs: list[Graph]) -> str:
    """Graphviz source: one left-to-right cluster per cell."""
    lines = ["digraph G {", "  rankdir=LR; node [shape=box, style=filled, fontname=Helvetica];",
             "  edge [fontname=Helvetica, fontsize=10];"]
    for g, (title, nodes, edges) in enumerate(graphs):
        lines.append(f'  subgraph cluster_{g} {{ label="{title}";')
        for n in nodes:
            fill = "lightblue" if _is_io(n, nodes) else "lightyellow"
            lines.append(f'    "{g}:{n}" [label="{n}", fillcolor={fill}];')
        for src, dst, op in edges:
            style = f'label="{op}", color="{_COLORS.get(op, "black")}"' if op else "style=dashed, color=gray"
            lines.append(f'    "{g}:{src}" -> "{g}:{dst}" [{style}];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _is_io(node: str, nodes: list[str]) -> bool:
    """Cell inputs and output (drawn in blue): c_* for DARTS cells, nodes 0 and 3 for NB201."""
    return node.startswith("c_") or (len(nodes) == 4 and node in ("0", "3"))


def _positions(nodes: list[str]) -> dict[str, tuple[float, float]]:
    """Inputs on the left, intermediate nodes staggered up and down, output on the right."""
    middle = [n for n in nodes if not n.startswith("c_")]
    if nodes[0] != "c_{k-2}":  # NB201: input and output on the axis, the two inner nodes off it
        return {n: (1.6 * i, 0.0 if i in (0, len(middle) - 1) else 0.9 * (-1) ** i) for i, n in enumerate(middle)}
    pos = {"c_{k-2}": (0.0, 1.6), "c_{k-1}": (0.0, -1.6), "c_{k}": (1.6 * (len(middle) + 1), 0.0)}
    pos.update({n: (1.6 * (i + 1), 0.9 * (-1) ** i) for i, n in enumerate(middle)})
    return pos


def _draw_matplotlib(graphs: list[Graph], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(10, 4.5 * len(graphs)))
    for g, (title, nodes, edges) in enumerate(graphs):
        ax = fig.add_subplot(len(graphs), 1, g + 1)
        pos = _positions(nodes)
        seen: dict[tuple[str, str], int] = {}
        for src, dst, op in edges:
            k = seen[(src, dst)] = seen.get((src, dst), -1) + 1
            rad = (0.15, -0.3, 0.45)[k % 3] if op else 0.0  # bent, parallel edges apart
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            color = _COLORS.get(op, "gray")
            ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.4, ls="-" if op else "--",
                                        shrinkA=14, shrinkB=14, connectionstyle=f"arc3,rad={rad}"))
            if op:  # label at the arc's midpoint (quadratic Bezier through the arc3 control point)
                mx, my = (x1 + x2) / 2 + rad * (y2 - y1) / 2, (y1 + y2) / 2 - rad * (x2 - x1) / 2
                ax.text(mx, my, op, color=color, fontsize=7, ha="center", va="center",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        for n, (x, y) in pos.items():
            fill = "#cde4f7" if _is_io(n, nodes) else "#fff7c2"
            ax.text(x, y, n, ha="center", va="center", fontsize=9, zorder=3,
                    bbox=dict(boxstyle="round,pad=0.35", fc=fill, ec="black"))
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, format=path.suffix[1:].lower(), dpi=150)
