"""The NAS-Bench-201 cell as a Ray Tune search space: 6 categorical edge choices under one key.

A trial config holds the cell as ``{"cell": {"e01": op, "e02": op, "e12": op, "e03": op, "e13": op, "e23": op}}``
(``eij``: the edge from node i to node j, in the genotype string's order), so it sits next to any hyperparameter
of the same ``param_space`` and every Tune searcher (random, Optuna, ...) can sample it. Study files name it
``{type: nb201_cell}`` in their ``tune.space`` block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from raynas.config import ConfigError
from search_spaces.nb201 import EDGES, OPS_NB201, GenotypeError, NB201Genotype, format_genotype, parse_genotype

CELL_KEY = "cell"
#: ``e{from}{to}`` per edge, in ``EDGES`` (= genotype string) order
EDGE_KEYS: tuple[str, ...] = tuple(f"e{j}{i}" for i, j in EDGES)
N_CELLS = len(OPS_NB201) ** len(EDGES)


def cell_space() -> dict[str, Any]:
    """The 6 edges as ``tune.choice`` over the 5 NB-201 ops (put it under a key of any ``param_space``)."""
    from ray import tune

    return {k: tune.choice(list(OPS_NB201)) for k in EDGE_KEYS}


def cell_config(arch: str | NB201Genotype, key: str = CELL_KEY) -> dict[str, Any]:
    """The trial config of one cell: ``{key: {edge: op}}``."""
    g = arch if isinstance(arch, NB201Genotype) else parse_genotype(arch)
    return {key: dict(zip(EDGE_KEYS, g.ops))}


def arch_of(config: dict[str, Any], key: str = CELL_KEY) -> str:
    """The canonical genotype string of a trial config's cell (nested, or Tune's flat ``cell/e01`` keys)."""
    cell = config.get(key)
    if not isinstance(cell, dict):
        cell = {k: config.get(f"{key}/{k}") for k in EDGE_KEYS}
    missing = [k for k in EDGE_KEYS if cell.get(k) is None]
    if missing:
        raise GenotypeError(f"trial config has no NB201 cell under {key!r} (missing {', '.join(missing)})")
    return format_genotype(NB201Genotype(tuple(cell[k] for k in EDGE_KEYS)))


def arch_of_index(i: int) -> str:
    """Cell number ``i`` of the 5^6 cells, ops in base 5 over the edges (edge e01 most significant)."""
    ops = []
    for _ in EDGES:
        i, r = divmod(i, len(OPS_NB201))
        ops.append(OPS_NB201[r])
    return format_genotype(NB201Genotype(tuple(reversed(ops))))


@lru_cache(maxsize=1)
def all_archs() -> tuple[str, ...]:
    """Every cell, in :func:`arch_of_index` order."""
    return tuple(arch_of_index(i) for i in range(N_CELLS))


def index_of(arch: str) -> int:
    """Inverse of :func:`arch_of_index`."""
    i = 0
    for op in parse_genotype(arch).ops:
        i = i * len(OPS_NB201) + OPS_NB201.index(op)
    return i


def check_space(space: dict[str, Any], where: str = "tune.space") -> str:
    """A study's space block (``name: {type: nb201_cell}``); returns the key of its one cell.

    The tabular trainable has no hyperparameters, so the block holds the cell and nothing else; in a
    hand-written ``param_space`` :func:`cell_space` sits next to any other Tune domain."""
    cells = [k for k, spec in space.items() if isinstance(spec, dict) and spec.get("type") == "nb201_cell"]
    other = [k for k in space if k not in cells]
    if len(cells) != 1 or other:
        raise ConfigError(f"{where} must be one entry {{type: nb201_cell}} (the table has no hyperparameters), "
                          f"got {sorted(space)}")
    if set(space[cells[0]]) != {"type"}:
        raise ConfigError(f"{where}.{cells[0]}: nb201_cell takes no options, got {sorted(space[cells[0]])}")
    return cells[0]
