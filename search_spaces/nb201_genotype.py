"""NAS-Bench-201 genotypes: the cell's ops and edges and its ``|op~0|+|op~0|op~1|+...`` strings.

Plain Python, no torch: ``raynas bench nb201 query`` and the table reader need only this, and start in
well under a second.  The supernet and the evaluation network are in :mod:`search_spaces.nb201`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

OPS_NB201: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
#: (to, from) of each edge, in xautodl's ``sorted(['1<-0', '2<-0', ...])`` order = genotype string order
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))


class GenotypeError(ValueError):
    """A genotype that is not a valid cell of its space."""


@dataclass(frozen=True)
class NB201Genotype:
    """One op per edge, in ``EDGES`` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise GenotypeError(f"an NB201 cell has {len(EDGES)} edges, got {len(self.ops)}")
        for op in self.ops:
            if op not in OPS_NB201:
                raise GenotypeError(f"unknown NB201 op {op!r}; valid: {', '.join(OPS_NB201)}")

    def __str__(self) -> str:
        return format_genotype(self)

    def to_json(self) -> dict:
        return {"space": "nb201", "arch": str(self), "ops": list(self.ops)}


def format_genotype(g: NB201Genotype) -> str:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (xautodl ``Structure.tostr``)."""
    nodes, k = [], 0
    for i in range(1, NODES):
        nodes.append("|" + "|".join(f"{g.ops[k + j]}~{j}" for j in range(i)) + "|")
        k += i
    return "+".join(nodes)


def parse_genotype(text: str) -> NB201Genotype:
    """Inverse of :func:`format_genotype`; every malformed string raises :class:`GenotypeError`."""
    text = text.strip()
    nodes = text.split("+")
    if len(nodes) != NODES - 1:
        raise GenotypeError(f"NB201 string needs {NODES - 1} '+'-separated nodes, got {len(nodes)}: {text!r}")
    ops: list[str] = []
    for i, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise GenotypeError(f"node {i} must be written |op~j|...|: {node!r}")
        entries = node[1:-1].split("|")
        if len(entries) != i:
            raise GenotypeError(f"node {i} needs {i} incoming edges, got {len(entries)}: {node!r}")
        for j, entry in enumerate(entries):
            op, sep, src = entry.partition("~")
            if not sep or src != str(j):
                raise GenotypeError(f"node {i}, edge {j}: expected '{op or 'op'}~{j}', got {entry!r}")
            ops.append(op)
    return NB201Genotype(tuple(ops))


def all_genotypes() -> list[NB201Genotype]:
    """All 5^6 = 15,625 cells (lexicographic in op order; not the benchmark's index order)."""
    return [NB201Genotype(ops) for ops in itertools.product(OPS_NB201, repeat=len(EDGES))]
