"""The NAS-Bench-201 cell as a Ray Tune search space: 6 categorical edge choices under one key.

A trial config holds the cell as ``{"cell": {"e01": op, "e02": op, "e12": op, "e03": op, "e13": op, "e23": op}}``
(``eij``: the edge from node i to node j, in the genotype string's order), so it sits next to any hyperparameter
of the same ``param_space`` and every Tune searcher (random, Optuna, ...) can sample it. Study files name it
``{type: nb201_cell}`` in their ``tune.space`` block, alone (a ``bench:`` study: the table as trainable) or next
to training hyperparameters (a ``retrain:`` study: the cell retrained, ``raynas.searchers.retrain_study``).

NAS-Bench-101 is given as its usual encoding, for a table of its cells: the 21 upper-triangular edges of a
7-vertex adjacency (0/1) and the 5 interior ops; :func:`nb101_spec` makes the (pruned) ``ModelSpec`` whose hash
looks the cell up (``raynas.nar.data.load_nb101``), and most draws are not cells (disconnected, > 9 edges).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from raynas.config import ConfigError
from search_spaces.nb101 import INPUT, MAX_VERTICES, OPS_NB101, OUTPUT, ModelSpec
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


def split_space(space: dict[str, Any], where: str = "tune.space") -> tuple[str, dict[str, Any]]:
    """A study's space block: the key of its one ``{type: nb201_cell}`` entry and everything else (the
    hyperparameters, checked by the caller). NB-101 has no trainable network here, only its table encoding."""
    for key, spec in space.items():
        if isinstance(spec, dict) and spec.get("type") == "nb101_cell":
            raise ConfigError(f"{where}.{key}: nb101_cell is an encoding for NB-101 tables (nb101_space()), and "
                              "raynas has no NB-101 network to train or table study to run; use nb201_cell")
    cells = [k for k, spec in space.items() if isinstance(spec, dict) and spec.get("type") == "nb201_cell"]
    if len(cells) != 1:
        raise ConfigError(f"{where} needs exactly one entry {{type: nb201_cell}} (the cell), got {len(cells)} "
                          f"in {sorted(space)}")
    if set(space[cells[0]]) != {"type"}:
        raise ConfigError(f"{where}.{cells[0]}: nb201_cell takes no options, got {sorted(space[cells[0]])}")
    return cells[0], {k: v for k, v in space.items() if k != cells[0]}


def check_space(space: dict[str, Any], where: str = "tune.space") -> str:
    """A table study's space block (``name: {type: nb201_cell}``); returns the key of its one cell.

    The tabular trainable has no hyperparameters, so the block holds the cell and nothing else; a retrain
    study (``raynas.searchers.retrain_study``) takes hyperparameters next to it."""
    cells = [k for k, spec in space.items() if isinstance(spec, dict) and spec.get("type") == "nb201_cell"]
    if len(cells) != 1 or len(space) != 1:
        raise ConfigError(f"{where} must be one entry {{type: nb201_cell}} (the table has no hyperparameters; "
                          f"a study with a retrain: block takes them), got {sorted(space)}")
    return split_space(space, where)[0]


#: tune-block types that are architecture spaces, not hyperparameters
CELL_TYPES = ("nb201_cell", "nb101_cell")


def reject_cell_param(key: str, spec: Any, where: str = "tune.space") -> None:
    """An experiment file's ``tune.space`` entry that is a cell space: a one-line error saying where it belongs.

    A search trial trains a supernet and has no field that takes a given cell, so a cell there would be
    sampled and ignored; the trials that take one are a study file's: a ``retrain:`` block (the cell retrained,
    next to training hyperparameters) or a ``bench:`` block (the table as trainable)."""
    if isinstance(spec, dict) and spec.get("type") in CELL_TYPES:
        raise ConfigError(f"{where}.{key}: {spec['type']} is an architecture space, and a search trial has no field "
                          f"that takes a cell; use a study file with a retrain: block (the cell retrained next to "
                          f"lr, weight_decay, ...; experiments/study_nb201_retrain.yaml) or a bench: block (the "
                          f"NB-201 table), run by `raynas run STUDY.yaml`")


#: NB-101 encoding: ``a{i}{j}`` for each edge i -> j (i < j) of the 7 vertices, ``o{k}`` for interior vertex k
NB101_EDGE_KEYS = tuple(f"a{i}{j}" for i in range(MAX_VERTICES) for j in range(i + 1, MAX_VERTICES))
NB101_OP_KEYS = tuple(f"o{k}" for k in range(1, MAX_VERTICES - 1))


def nb101_space() -> dict[str, Any]:
    """The NB-101 encoding as Tune domains: 21 binary edges and 5 interior ops."""
    from ray import tune

    return {**{k: tune.choice([0, 1]) for k in NB101_EDGE_KEYS}, **{k: tune.choice(list(OPS_NB101))
                                                                      for k in NB101_OP_KEYS}}


def nb101_spec(config: dict[str, Any], key: str = CELL_KEY) -> ModelSpec:
    """The ``ModelSpec`` of an NB-101 trial config (check ``is_valid()`` before looking it up)."""
    cell = config[key]
    matrix = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
    for k in NB101_EDGE_KEYS:
        matrix[int(k[1])][int(k[2])] = int(cell[k])
    return ModelSpec(matrix, [INPUT, *(cell[k] for k in NB101_OP_KEYS), OUTPUT])


def nb101_config(spec: ModelSpec, key: str = CELL_KEY) -> dict[str, Any]:
    """Inverse of :func:`nb101_spec` for a 7-vertex spec as given (``original_*``)."""
    m, ops = spec.original_matrix, spec.original_ops
    if m.shape[0] != MAX_VERTICES:
        raise GenotypeError(f"the NB-101 encoding has {MAX_VERTICES} vertices, got {m.shape[0]}")
    return {key: {**{k: int(m[int(k[1]), int(k[2])]) for k in NB101_EDGE_KEYS},
                  **{k: ops[int(k[1])] for k in NB101_OP_KEYS}}}
