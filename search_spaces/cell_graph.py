"""A genotype's cell as a plain graph (nodes, inputs, output, ``(src, dst, op)`` edges) and its degeneracies.

The drawing (``raynas.diagram``) and the degenerate-cell check read the same graph, so what a drawing
shows as absent (a ``none`` edge) is what the check counts as absent. ``none`` edges are kept in the
graph; edges into the output with op ``""`` are the DARTS cell's concatenation, not ops.

A cell is *degenerate* when its output cannot depend on its input: every edge is ``none``, the output is
unreachable from the input(s) through non-``none`` edges, or a node that feeds the output (directly or
through later nodes) has no input: it only ever contributes zeros (NB201) or zero channels to the
concatenation (DARTS). Such a cell is a search failure, not an architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NONE = "none"
CONCAT = ""  # op of a DARTS concatenation edge into the output


@dataclass(frozen=True)
class CellGraph:
    title: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    output: str
    edges: tuple[tuple[str, str, str], ...]  # (src, dst, op); none edges included

    def live_edges(self) -> list[tuple[str, str, str]]:
        return [e for e in self.edges if e[2] != NONE]


def cell_graphs(space: str, genotype: Any) -> list[CellGraph]:
    """The cell(s) of a parsed genotype: one for NB201, the normal and reduction cell for DARTS-family spaces."""
    if space == "nb201":
        nodes, edges, k = tuple(str(i) for i in range(4)), [], 0
        for i in range(1, 4):
            edges += [(nodes[j], nodes[i], genotype.ops[k + j]) for j in range(i)]
            k += i
        return [CellGraph("NB201 cell (0: input, 3: output)", nodes, ("0",), "3", tuple(edges))]
    graphs = []
    for cell in ("normal", "reduce"):
        entries, concat = getattr(genotype, cell), getattr(genotype, cell + "_concat")
        nodes = ("c_{k-2}", "c_{k-1}", *(str(i) for i in range(len(entries) // 2)), "c_{k}")
        edges = [(nodes[j], nodes[2 + i // 2], op) for i, (op, j) in enumerate(entries)]
        edges += [(nodes[j], "c_{k}", CONCAT) for j in concat]
        graphs.append(CellGraph(f"{cell} cell", nodes, nodes[:2], "c_{k}", tuple(edges)))
    return graphs


def _reached(g: CellGraph, start: set[str], forward: bool) -> set[str]:
    """Nodes reached from ``start`` over non-none edges (forward: along the edges, else against them)."""
    seen, todo = set(start), list(start)
    while todo:
        n = todo.pop()
        for src, dst, _ in g.live_edges():
            a, b = (src, dst) if forward else (dst, src)
            if a == n and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def graph_reasons(g: CellGraph) -> list[str]:
    """Why one cell is degenerate (empty: it is not)."""
    ops = [e for e in g.edges if e[2] != CONCAT]
    if ops and all(op == NONE for _, _, op in ops):
        return [f"{g.title.split(' (')[0]}: every edge is none"]
    name = g.title.split(" (")[0]
    from_input = _reached(g, set(g.inputs), forward=True)
    if g.output not in from_input:
        return [f"{name}: the output is unreachable from the input"]
    to_output = _reached(g, {g.output}, forward=False)
    dead = [n for n in g.nodes if n not in g.inputs and n != g.output and n in to_output and n not in from_input]
    return [f"{name}: node {n} has no input but feeds the output" for n in dead]


def degenerate_reason(space: str, genotype: Any) -> str | None:
    """``"; "``-joined reasons a parsed genotype's cell(s) are degenerate, or None for a sound cell."""
    reasons = [r for g in cell_graphs(space, genotype) for r in graph_reasons(g)]
    return "; ".join(reasons) or None
