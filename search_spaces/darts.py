"""DARTS CNN space: genotypes (format, safe parse, validation), derivation and the search supernet.

Follows quark0/darts ``cnn/model_search.py`` and ``genotypes.py``. RobustDARTS S1-S4 reuse the same
supernet with a per-edge op list (``edge_ops``), see :mod:`search_spaces.robust_darts`.
"""

from __future__ import annotations

import ast
import json
import re
from collections import namedtuple
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.nb201 import GenotypeError
from search_spaces.mixed import MixedOp, edge_scale_key
from search_spaces.ops import OPS, PARAMETER_FREE, FactorizedReduce, ReLUConvBN
from search_spaces.supernet import method_slots

PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                               "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
STEPS = 4
CELL_TYPES = ("normal", "reduce")

#: per cell type, the candidate ops of each edge (alpha row)
EdgeOps = Mapping[str, Sequence[Sequence[str]]]
#: a genotype's op allow-list: the same ops everywhere, or per cell type and edge (RobustDARTS S1)
AllowedOps = Collection[str] | EdgeOps

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")


def edges(steps: int = STEPS) -> tuple[tuple[int, int], ...]:
    """(from, to) of each alpha row: 0->2, 1->2, 0->3, 1->3, 2->3, 0->4, ... (DARTS order)."""
    return tuple((j, i + 2) for i in range(steps) for j in range(i + 2))


EDGES = edges()

DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)


# ----------------------------------------------------------------------------------------- genotypes

def _check_cell(cell: str, entries: Any, concat: Any, allowed: AllowedOps, steps: int
                ) -> tuple[list[tuple[str, int]], list[int]]:
    if not isinstance(entries, (list, tuple)) or len(entries) != 2 * steps:
        n = len(entries) if isinstance(entries, (list, tuple)) else type(entries).__name__
        raise GenotypeError(f"{cell} cell needs {2 * steps} (op, input) entries (2 for each of {steps} "
                            f"nodes), got {n}")
    rows = {e: r for r, e in enumerate(edges(steps))}
    out = []
    for i, entry in enumerate(entries):
        node = i // 2 + 2
        where = f"{cell} cell, entry {i} {tuple(entry) if isinstance(entry, list) else entry!r} (node {node})"
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], int) or isinstance(entry[1], bool)):
            raise GenotypeError(f"{where}: expected an (op name, input index) pair")
        op, j = entry
        if not 0 <= j < node:
            raise GenotypeError(f"{where}: input {j} out of range; node {node} may only take inputs 0..{node - 1}")
        if isinstance(allowed, Mapping):
            valid = allowed[cell][rows[(j, node)]]
            if op not in valid:
                raise GenotypeError(f"{where}: op {op!r} not allowed on edge {j}->{node}; "
                                    f"valid there: {', '.join(valid)}")
        elif op not in allowed:
            raise GenotypeError(f"{where}: unknown op {op!r}; valid: {', '.join(allowed)}")
        out.append((op, j))
    if (not isinstance(concat, (list, tuple, range)) or not concat or len(set(concat)) != len(concat)
            or any(not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < steps + 2 for k in concat)):
        raise GenotypeError(f"{cell}_concat must list distinct node indices in 0..{steps + 1}, got {concat!r}")
    return out, list(concat)


def validate_genotype(g: Any, ops: AllowedOps = PRIMITIVES, steps: int = STEPS) -> Genotype:
    """Check a genotype (or anything with its four fields) against a space; return it normalised
    (entries as ``(op, int)`` tuples, concat as lists) so equal cells compare equal."""
    if isinstance(ops, Mapping):
        for cell in CELL_TYPES:
            if len(ops[cell]) != len(edges(steps)):
                raise ValueError(f"ops[{cell!r}] must list {len(edges(steps))} edges, got {len(ops[cell])}")
    fields = g._asdict() if hasattr(g, "_asdict") else g  # any Genotype namedtuple, e.g. the DARTS repo's
    if not isinstance(fields, Mapping):
        raise GenotypeError(f"expected a Genotype or a mapping of its fields, got {type(g).__name__}")
    missing = [f for f in Genotype._fields if f not in fields]
    if missing:
        raise GenotypeError(f"genotype misses {', '.join(missing)}; needs {', '.join(Genotype._fields)}")
    normal, normal_concat = _check_cell("normal", fields["normal"], fields["normal_concat"], ops, steps)
    reduce, reduce_concat = _check_cell("reduce", fields["reduce"], fields["reduce_concat"], ops, steps)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def format_genotype(g: Genotype) -> str:
    """The DARTS repo's text form, ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, ...], ...)``."""
    g = Genotype([tuple(e) for e in g.normal], list(g.normal_concat), [tuple(e) for e in g.reduce],
                 list(g.reduce_concat))
    return repr(g)


_RANGE = re.compile(r"range\(\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\)")
_KEYWORD = re.compile(r"\b([A-Za-z_]\w*)\s*=")


def parse_genotype(text: str | Mapping[str, Any], ops: AllowedOps = PRIMITIVES, steps: int = STEPS) -> Genotype:
    """Read the DARTS text form (``range(2, 6)`` concat included), a JSON object or a dict.

    Never ``eval``: ``range(a, b)`` is expanded by a regex, the rest goes through ``ast.literal_eval``.
    """
    if isinstance(text, Mapping):
        return validate_genotype(text, ops, steps)
    s = text.strip()
    if s.startswith("{"):
        try:
            fields = json.loads(s)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"invalid genotype JSON: {e}") from None
        return validate_genotype(fields, ops, steps)
    m = re.fullmatch(r"Genotype\((.*)\)", s, flags=re.DOTALL)
    if m is None:
        raise GenotypeError("expected 'Genotype(normal=[...], normal_concat=[...], reduce=[...], "
                            f"reduce_concat=[...])' or a JSON object, got {s[:80]!r}")
    body = _RANGE.sub(lambda r: repr(list(range(*(int(a) for a in r.groups() if a is not None)))), m[1])
    try:
        fields = ast.literal_eval("{" + _KEYWORD.sub(r"'\1':", body) + "}")
    except (ValueError, SyntaxError, TypeError) as e:
        raise GenotypeError(f"cannot read genotype text {s[:80]!r}...: only literals and range(a, b) "
                            f"are allowed ({type(e).__name__}: {e})") from None
    return validate_genotype(fields, ops, steps)


def genotype_to_json(g: Genotype) -> dict[str, list]:
    """JSON-ready dict, ``{"normal": [[op, input], ...], "normal_concat": [2, 3, 4, 5], ...}``."""
    return {"normal": [[op, j] for op, j in g.normal], "normal_concat": list(g.normal_concat),
            "reduce": [[op, j] for op, j in g.reduce], "reduce_concat": list(g.reduce_concat)}


def genotype_stats(g: Genotype) -> dict[str, int]:
    """Counts that flag the DARTS collapse (a normal cell full of skips / parameter-free ops)."""
    stats = {}
    for cell, suffix in (("normal", ""), ("reduce", "_reduce")):
        names = [op for op, _ in getattr(g, cell)]
        stats["skip_count" + suffix] = names.count("skip_connect")
        stats["param_free_count" + suffix] = sum(op in PARAMETER_FREE for op in names)
    return stats


# ---------------------------------------------------------------------------------------- derivation

def _steps_of(rows: int) -> int:
    steps = 0
    while len(edges(steps)) < rows:
        steps += 1
    if len(edges(steps)) != rows:
        raise ValueError(f"{rows} alpha rows do not make a DARTS cell (2+3+...+(steps+1) edges)")
    return steps


def _derive_cell(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    w = weights.detach().float().cpu()
    if w.dim() != 2 or w.shape[0] != len(edge_ops) or any(len(o) != w.shape[1] for o in edge_ops):
        raise ValueError(f"weights of shape {tuple(w.shape)} do not match the edge op lists")
    w = w.tolist()
    gene, start = [], 0
    for node in range(2, _steps_of(len(edge_ops)) + 2):
        cands = []  # (strength, op, input) per incoming edge
        for j in range(node):
            names = edge_ops[start + j]
            keep = [k for k, name in enumerate(names) if name != "none"] or list(range(len(names)))
            k = max(keep, key=lambda k: w[start + j][k])  # first maximum, as the reference loop
            cands.append((w[start + j][k], names[k], j))
        gene += [(op, j) for _, op, j in sorted(cands, key=lambda c: -c[0])[:2]]  # stable, like sorted()
        start += node
    return gene


def derive(weights_normal: torch.Tensor, weights_reduce: torch.Tensor, edge_ops: EdgeOps,
           multiplier: int | None = None) -> Genotype:
    """DARTS discretisation: per node the top-2 incoming edges by their strongest non-``none`` weight,
    each with that op.

    ``none`` is left out only on edges whose list holds it, looked up by the global edge index
    (RobustDARTS looks it up by the node-local index, which reads the wrong edge's list in S1).
    """
    normal = _derive_cell(weights_normal, edge_ops["normal"])
    reduce = _derive_cell(weights_reduce, edge_ops["reduce"])
    steps = len(normal) // 2
    concat = list(range(2 + steps - (multiplier or steps), steps + 2))
    return Genotype(normal, concat, reduce, concat)


# -------------------------------------------------------------------------------------- the supernet

class SearchCell(nn.Module):
    """Two preprocessed inputs, ``steps`` nodes that sum a MixedOp from every earlier state."""

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 edge_ops: Sequence[Sequence[str]], steps: int, multiplier: int, affine: bool, track: bool,
                 partial_k: int = 1):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0 = (FactorizedReduce(C_pp, C, affine, track) if reduction_prev
                            else ReLUConvBN(C_pp, C, 1, 1, 0, 1, affine, track))
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, 1, affine, track)
        self.edges = nn.ModuleList(MixedOp(C, 2 if reduction and j < 2 else 1, names, affine, track,
                                           pool_bn=True, partial_k=partial_k)
                                   for (j, _), names in zip(edges(steps), edge_ops))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        states, offset = [self.preprocess0(s0), self.preprocess1(s1)], 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + j](h, weights[offset + j], None if scale is None else scale[offset + j])
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)


class DartsSupernet(nn.Module):
    """The DARTS search network (quark0/darts ``model_search.Network``); forward takes edge weights.

    ``alphas`` holds a ``14 x n_ops`` tensor per cell type (``1e-3 * randn``, like the reference); the
    search method turns them into the weights it passes to ``forward``, so the supernet never
    applies a softmax. ``edge_ops`` gives each edge its own op list (RobustDARTS S1-S4); every edge of
    a cell type must have the same number of ops so alpha is a rectangle. ``affine`` applies to all
    BNs inside cells (the reference: False).
    """

    space = "darts"

    def __init__(self, C: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3,
                 steps: int = STEPS, multiplier: int = 4, stem_multiplier: int = 3,
                 edge_ops: EdgeOps | None = None, affine: bool = False, track_running_stats: bool = True,
                 partial_k: int = 1):
        super().__init__()
        n_edges = len(edges(steps))
        edge_ops = edge_ops or {cell: [PRIMITIVES] * n_edges for cell in CELL_TYPES}
        self._edge_ops = {cell: [tuple(names) for names in edge_ops[cell]] for cell in CELL_TYPES}
        for cell, rows in self._edge_ops.items():
            if len(rows) != n_edges or len({len(names) for names in rows}) != 1:
                raise ValueError(f"edge_ops[{cell!r}] needs {n_edges} op lists of equal length")
            unknown = sorted({name for names in rows for name in names} - set(OPS))
            if unknown:
                raise ValueError(f"edge_ops[{cell!r}]: unknown ops {unknown}; valid: {', '.join(sorted(OPS))}")
        self.steps, self.multiplier = steps, multiplier
        self.targets = {cell: [i for _, i in edges(steps)] for cell in CELL_TYPES}  # edge normalisation

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_curr *= 2 if reduction else 1
            cells.append(SearchCell(C_pp, C_p, C_curr, reduction, reduction_prev,
                                    self._edge_ops["reduce" if reduction else "normal"],
                                    steps, multiplier, affine, track_running_stats, partial_k))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(C_p, num_classes)
        self.alphas = nn.ParameterDict({cell: nn.Parameter(1e-3 * torch.randn(n_edges, len(rows[0])))
                                        for cell, rows in self._edge_ops.items()})
        method_slots(self)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor], return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits under the edge weights; with ``return_features`` also the last cell's output."""
        for cell in CELL_TYPES:
            if weights[cell].shape != self.alphas[cell].shape:
                raise ValueError(f"weights[{cell!r}] has shape {tuple(weights[cell].shape)}, "
                                 f"expected {tuple(self.alphas[cell].shape)}")
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[kind], weights.get(edge_scale_key(kind)))
        logits = self.classifier(s1.mean(dim=(2, 3)))
        return (logits, s1) if return_features else logits

    def edge_ops(self) -> dict[str, list[tuple[str, ...]]]:
        """The candidate ops of every edge, per alpha key (used to name alpha metrics)."""
        return {cell: list(rows) for cell, rows in self._edge_ops.items()}

    def mixed_ops(self) -> Iterator[tuple[str, int, MixedOp]]:
        """(alpha key, edge row, MixedOp) of every searched edge in every cell."""
        for cell in self.cells:
            for e, op in enumerate(cell.edges):
                yield "reduce" if cell.reduction else "normal", e, op

    def edge_names(self) -> dict[str, list[str]]:
        names = [f"{j}->{i}" for j, i in edges(self.steps)]
        return {cell: list(names) for cell in CELL_TYPES}

    def derive(self, weights: dict[str, torch.Tensor]) -> Genotype:
        return derive(weights["normal"], weights["reduce"], self._edge_ops, self.multiplier)
