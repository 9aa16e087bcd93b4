"""Search spaces, looked up by name: supernets for search, genotype parsing for everything after.

``import search_spaces`` loads this module (and torch) on first use of one of its names.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from search_spaces import SPACE_NAMES, darts, nb201, robust_darts
from search_spaces.cell_graph import cell_graphs, degenerate_reason  # noqa: F401 (graph view of a genotype)
from search_spaces.fast import accelerate, recompute_off, set_recompute  # noqa: F401 (the speed layer)


def _without(ops: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(o for o in ops if o not in exclude)


def _nb201(exclude: tuple[str, ...], **kw: Any) -> nn.Module:
    return nb201.NB201Supernet(ops=_without(nb201.OPS_NB201, exclude), **kw)


def _darts_family(name: str) -> Callable[..., nn.Module]:
    def build(exclude: tuple[str, ...], layers: int, **kw: Any) -> nn.Module:
        table = robust_darts.SPACES[name] if name in robust_darts.SPACES else {
            cell: [darts.PRIMITIVES] * len(darts.EDGES) for cell in darts.CELL_TYPES}
        edge_ops = {cell: [_without(ops, exclude) for ops in rows] for cell, rows in table.items()}
        net = darts.DartsSupernet(layers=layers, edge_ops=edge_ops, **kw)
        net.space = name
        return net
    return build


SPACES: dict[str, Callable[..., nn.Module]] = {
    "nb201": lambda exclude, layers, **kw: _nb201(exclude, N=layers, **kw),
    **{s: _darts_family(s) for s in SPACE_NAMES if s != "nb201"},
}

GenotypeError = nb201.GenotypeError


def build_supernet(space: str, *, C: int, layers: int, num_classes: int, in_channels: int = 3,
                   track_running_stats: bool = True, affine: bool = False, partial_k: int = 1,
                   exclude_ops: tuple[str, ...] = ()) -> nn.Module:
    """The search supernet of ``space``; ``affine``/``partial_k``/``exclude_ops`` serve the variants."""
    if space not in SPACES:
        raise KeyError(f"unknown space {space!r}; valid: {', '.join(SPACES)}")
    return SPACES[space](tuple(exclude_ops), layers, C=C, num_classes=num_classes, in_channels=in_channels,
                         track_running_stats=track_running_stats, affine=affine, partial_k=partial_k)


def parse_genotype(space: str, text: str) -> Any:
    """Parse a genotype of ``space`` (NB201 string; DARTS text or JSON), validated against its ops."""
    if space == "nb201":
        return nb201.parse_genotype(text)
    if space == "darts":
        return darts.parse_genotype(text)
    if space in robust_darts.SPACES:
        return robust_darts.parse_genotype(space, text)
    raise KeyError(f"unknown space {space!r}; valid: {', '.join(SPACES)}")


def genotype_stats(space: str, genotype: Any) -> dict[str, int]:
    """Collapse signals of a genotype: skip-connect and parameter-free op counts."""
    return nb201.genotype_stats(genotype) if space == "nb201" else darts.genotype_stats(genotype)


def genotype_json(genotype: Any) -> str:
    """The JSON of a genotype of any space (NB201's has its own ``to_json``; the DARTS family's is a tuple)."""
    return genotype.to_json() if hasattr(genotype, "to_json") else darts.genotype_to_json(genotype)


def genotype_str(space: str, genotype: Any) -> str:
    return nb201.format_genotype(genotype) if space == "nb201" else darts.format_genotype(genotype)
