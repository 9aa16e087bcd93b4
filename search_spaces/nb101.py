"""NAS-Bench-101 cell space: (adjacency, ops) specs, validity, pruning and the isomorphism-invariant hash.

Follows google-research/nasbench (``model_spec.py``, ``graph_util.hash_module``, ``model_builder``): a cell is
an upper-triangular 0/1 adjacency over at most 7 vertices (input first, output last) with at most 9 edges;
vertices on no input->output path are pruned before hashing, so every cell of the benchmark has exactly one
hash. The NB201 cell is also expressed here as such a graph (ops on vertices) so both spaces share one
encoding and one hash.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np

INPUT, OUTPUT = "input", "output"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
#: NB101 ``config['available_ops']``; the index is the hash label of a vertex
OPS_NB101: tuple[str, ...] = (CONV3X3, CONV1X1, MAXPOOL3X3)
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_STACKS, MODULES_PER_STACK, STEM_CHANNELS = 3, 3, 128


class SpecError(ValueError):
    """A matrix/ops pair that is not a cell (wrong shape, not a DAG in topological order, unknown op)."""


def hash_module(matrix: np.ndarray, labeling: Sequence[int]) -> str:
    """The NB101 API's graph hash: md5 labels refined over in/out neighbours (Weisfeiler-Lehman style).

    Isomorphic graphs with equal labels get equal hashes; the strings fed to md5 are byte-identical to
    ``nasbench.lib.graph_util.hash_module`` so the result matches the benchmark's ``unique_hash``.
    """
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    in_edges = np.sum(matrix, axis=0).tolist()
    out_edges = np.sum(matrix, axis=1).tolist()
    hashes = [hashlib.md5(str(h).encode("utf-8")).hexdigest() for h in zip(out_edges, in_edges, labeling)]
    for _ in range(n):
        hashes = [hashlib.md5(("".join(sorted(hashes[w] for w in range(n) if matrix[w, v])) + "|"
                               + "".join(sorted(hashes[w] for w in range(n) if matrix[v, w])) + "|"
                               + hashes[v]).encode("utf-8")).hexdigest() for v in range(n)]
    return hashlib.md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


class ModelSpec:
    """A cell: ``original_*`` as given, ``matrix``/``ops`` pruned to the vertices on an input->output path.

    ``valid_spec`` is False when the output is unreachable from the input (then ``matrix``/``ops`` are None),
    exactly as ``nasbench.api.ModelSpec``.
    """

    def __init__(self, matrix: Sequence[Sequence[int]] | np.ndarray, ops: Sequence[str]):
        m = np.array(matrix, dtype=np.int64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise SpecError(f"adjacency must be square, got shape {m.shape}")
        if m.shape[0] != len(ops):
            raise SpecError(f"{len(ops)} ops for a {m.shape[0]}-vertex matrix")
        if m.shape[0] < 2 or ops[0] != INPUT or ops[-1] != OUTPUT:
            raise SpecError(f"ops must start with {INPUT!r} and end with {OUTPUT!r}: {list(ops)}")
        if not np.isin(m, (0, 1)).all() or np.tril(m).any():
            raise SpecError("adjacency must be 0/1 and strictly upper triangular (a DAG in topological order)")
        self.original_matrix, self.original_ops = m.copy(), list(ops)
        self.matrix: np.ndarray | None = m.copy()
        self.ops: list[str] | None = list(ops)
        self.valid_spec = True
        self._prune()

    def _prune(self) -> None:
        n = self.original_matrix.shape[0]
        keep = _reachable(self.original_matrix, 0) & _reachable(self.original_matrix.T, n - 1)
        if not keep[0] or not keep[n - 1]:
            self.matrix, self.ops, self.valid_spec = None, None, False
            return
        idx = np.flatnonzero(keep)
        self.matrix = self.original_matrix[np.ix_(idx, idx)]
        self.ops = [self.original_ops[i] for i in idx]

    @property
    def num_vertices(self) -> int:
        return 0 if self.matrix is None else self.matrix.shape[0]

    @property
    def num_edges(self) -> int:
        return 0 if self.matrix is None else int(self.matrix.sum())

    def is_valid(self, vocab: Sequence[str] = OPS_NB101, max_vertices: int = MAX_VERTICES,
                 max_edges: int = MAX_EDGES) -> bool:
        """NB101 ``api._check_spec``: connected, at most 7 vertices and 9 edges after pruning, known ops."""
        return (self.valid_spec and self.num_vertices <= max_vertices and self.num_edges <= max_edges
                and all(op in vocab for op in self.ops[1:-1]))

    def hash(self, vocab: Sequence[str] = OPS_NB101) -> str:
        """``ModelSpec.hash_spec(canonical_ops)``: input -1, output -2, interior ops by index in ``vocab``."""
        if not self.valid_spec:
            raise SpecError("an invalid spec (input not connected to output) has no hash")
        try:
            labels = [-1] + [vocab.index(op) for op in self.ops[1:-1]] + [-2]
        except ValueError:
            raise SpecError(f"ops {self.ops[1:-1]} not all in {list(vocab)}") from None
        return hash_module(self.matrix, labels)

    def __repr__(self) -> str:
        return f"ModelSpec(matrix={self.original_matrix.tolist()}, ops={self.original_ops})"


def _reachable(adj: np.ndarray, start: int) -> np.ndarray:
    seen = np.zeros(adj.shape[0], dtype=bool)
    seen[start], frontier = True, [start]
    while frontier:
        for v in np.flatnonzero(adj[frontier.pop()]):
            if not seen[v]:
                seen[v] = True
                frontier.append(int(v))
    return seen


def parse_flat(adjacency: str, ops: str | Sequence[str]) -> ModelSpec:
    """A spec from a flattened row-major 0/1 string (``"0110..."``) and comma-separated ops."""
    ops = ops.split(",") if isinstance(ops, str) else list(ops)
    n = len(ops)
    if len(adjacency) != n * n or set(adjacency) - {"0", "1"}:
        raise SpecError(f"adjacency string of {len(adjacency)} chars does not fit {n} vertices")
    return ModelSpec(np.array([int(c) for c in adjacency]).reshape(n, n), ops)


def vertex_channels(in_channels: int, out_channels: int, matrix: np.ndarray) -> list[int]:
    """NB101 ``compute_vertex_channels``: vertices feeding the output split its channels (remainder to the
    first ones), the others take the max of their successors'; the input keeps ``in_channels``."""
    n = matrix.shape[0]
    ch = [0] * n
    ch[0], ch[n - 1] = in_channels, out_channels
    if n == 2:
        return ch
    in_degree = matrix[1:].sum(axis=0)
    interior, correction = divmod(out_channels, int(in_degree[n - 1]))
    for v in range(1, n - 1):
        if matrix[v, n - 1]:
            ch[v] = interior + (1 if correction else 0)
            correction -= 1 if correction else 0
    for v in range(n - 3, 0, -1):
        if not matrix[v, n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v, dst]:
                    ch[v] = max(ch[v], ch[dst])
    return ch


def random_spec(rng: random.Random, n_vertices: int, max_edges: int = MAX_EDGES,
                vocab: Sequence[str] = OPS_NB101) -> ModelSpec:
    """NAR's NB101 candidate generator (``ArchSampler._sample_edges_and_types``): a random chain-backed DAG.

    Each vertex k >= 1 gets one predecessor uniform in [0, k) and (unless it is the output) a uniform op; then
    ``max_edges - (n - 1)`` extra edges start uniform in [0, n) and end uniform in [start, n), dropping
    self-loops and edges out of the output. The result is pruned like any spec and may still be invalid.
    """
    m = np.zeros((n_vertices, n_vertices), dtype=np.int64)
    ops = [INPUT] + [rng.choice(list(vocab)) for _ in range(n_vertices - 2)] + [OUTPUT]
    for k in range(1, n_vertices):
        m[rng.randrange(k), k] = 1
    for _ in range(max_edges - n_vertices + 1):
        start = rng.randrange(n_vertices)
        if start == n_vertices - 1:
            continue
        end = rng.randrange(start, n_vertices)
        if end != start:
            m[start, end] = 1
    return ModelSpec(m, ops)


def nb201_to_spec(ops: Sequence[str]) -> ModelSpec:
    """The NB201 cell (ops on the 6 edges, in ``search_spaces.nb201.EDGES`` order) as an ops-on-vertices graph.

    Vertex 0 is the input, vertices 1..6 the edge ops, vertex 7 the output; edge op (i -> j) reads every op
    ending at node i (the input when i = 0) and feeds every op leaving node j (the output when j = 3).
    ``none`` edges carry zero and are removed before pruning, so equivalent cells share a hash
    (``spec.hash(OPS_NB201)``).
    """
    from search_spaces.nb201 import EDGES, NODES

    if len(ops) != len(EDGES):
        raise SpecError(f"an NB201 cell has {len(EDGES)} edge ops, got {len(ops)}")
    n = len(EDGES) + 2
    m = np.zeros((n, n), dtype=np.int64)
    for a, (to_a, from_a) in enumerate(EDGES, start=1):
        if from_a == 0:
            m[0, a] = 1
        if to_a == NODES - 1:
            m[a, n - 1] = 1
        for b, (_, from_b) in enumerate(EDGES, start=1):
            if from_b == to_a:
                m[a, b] = 1
    live = [0] + [k + 1 for k, op in enumerate(ops) if op != "none"] + [n - 1]
    return ModelSpec(m[np.ix_(live, live)], [INPUT] + [op for op in ops if op != "none"] + [OUTPUT])
