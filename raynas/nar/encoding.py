"""NAR's cell encodings with computational information, computed by raynas from the cell definitions.

NAR (Guo et al., ACM MM 2022; code AlbertiPot/nar) encodes a cell as a stack of P square "patches" (the
ReNAS feature tensor): one op-type patch over the adjacency, then for each cell of the network one FLOPs
patch and one params patch, each entry (src, dst) carrying the cost of the op that edge feeds.

* NB201 -> 31x4x4: the op code of edge i->j (none 0, skip 1, conv1x1 2, conv3x3 3, avgpool 4), then per normal
  cell (15; the 2 reduction blocks are fixed) the per-edge FLOPs and params. Convention of the authors' data:
  conv FLOPs = MACs + 2*C*H*W (BN), params = k^2*C^2 + 2*C; pool/skip/none cost 0.
* NB101 -> 19x7x7: A[i, j] * code(op_j) (input 1, conv1x1 2, conv3x3 3, maxpool 4, output 5), then per module
  (3 stacks x 3) A[i, j] * vertex_flops[j] / 1e7 and A[i, j] * vertex_params[j] / 1e5, cells with fewer than 7
  vertices zero-padded before the output vertex. A vertex's FLOPs are 2*MACs of its op plus its 1x1 input
  projection (when it reads the cell input) plus (inputs - 1) * C*H*W for the sum; maxpool costs 9*C*H*W.

The totals reproduce the benchmarks' own counts (tested): NB201 params exactly and FLOPs in the NB201 API's
convention (conv + linear MACs, linear bias included); NB101 ``trainable_parameters`` and NAR's ``flops``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search_spaces.nb101 import (CONV1X1, CONV3X3, INPUT, MAXPOOL3X3, MODULES_PER_STACK, NUM_STACKS, OUTPUT,
                                 STEM_CHANNELS, ModelSpec, vertex_channels)
from search_spaces.nb201 import EDGES, OPS_NB201

#: dataset -> (classes, input resolution) of the NB201 evaluation network (C=16, N=5)
NB201_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet16": (120, 16)}
NB201_C, NB201_N = 16, 5
NB201_CELL_KEYS = tuple(f"cells{i}" for s in range(3) for i in range(s * 6, s * 6 + 5))
OP_CODES_NB101 = {INPUT: 1, CONV1X1: 2, CONV3X3: 3, MAXPOOL3X3: 4, OUTPUT: 5}
NB101_MODULE_KEYS = tuple(f"stack{s}/module{m}" for s in range(NUM_STACKS) for m in range(MODULES_PER_STACK))
NB101_VERTICES = 7
_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def nb201_op_cost(op: str, C: int, hw: int) -> tuple[int, int, int]:
    """(MACs, BN elements, params) of one NB201 edge op at C channels and hw = H*W pixels."""
    k = _KERNEL.get(op)
    if k is None:  # none, skip_connect, avg_pool_3x3 (stride 1, same width: a bare pool)
        return 0, 0, 0
    return k * k * C * C * hw, C * hw, k * k * C * C + 2 * C


def nb201_costs(ops: Sequence[str], dataset: str = "cifar10") -> dict:
    """Per-edge FLOPs/params of the 15 normal cells (NAR convention) and the network's totals.

    ``params`` is the exact trainable count, ``flops`` the NB201 API's MFLOPs (Conv2d + Linear MACs, Linear
    bias included), ``flops_nar`` NAR's ``*_total_flops`` (MACs + 2 * BN elements + pooled elements + FC).
    """
    classes, res = NB201_DATASETS[dataset]
    C = NB201_C
    macs, bn = 27 * C * res * res, C * res * res  # stem conv 3x3 + BN
    params = 27 * C + 2 * C
    edge_flops, edge_params = [], []
    for stage in range(3):
        width, side = C << stage, res >> stage
        hw = side * side
        if stage:  # ResNet reduction block: ReLUConvBN 3x3 s2, ReLUConvBN 3x3, avgpool + conv1x1 shortcut
            c_in = width // 2
            macs += (9 * c_in * width + 9 * width * width + c_in * width) * hw
            bn += 2 * width * hw
            params += 9 * c_in * width + 9 * width * width + c_in * width + 4 * width
        costs = [nb201_op_cost(op, width, hw) for op in ops]
        for _ in range(NB201_N):
            edge_flops.append([m + 2 * b for m, b, _ in costs])
            edge_params.append([p for _, _, p in costs])
            macs += sum(m for m, _, _ in costs)
            bn += sum(b for _, b, _ in costs)
            params += sum(p for _, _, p in costs)
    last, side = 4 * C, res >> 2
    bn += last * side * side
    params += 2 * last + last * classes + classes
    flops_nar = macs + 2 * bn + last * side * side + last * classes
    return {"params": params, "flops": (macs + last * classes + classes) / 1e6, "flops_nar": flops_nar,
            "edge_flops": edge_flops, "edge_params": edge_params}


def nb201_totals(op_index: np.ndarray, dataset: str = "cifar10") -> dict[str, np.ndarray]:
    """``nb201_costs``'s ``params``, ``flops`` and ``flops_nar`` of N cells at once ((N, 6) op indices)."""
    op_index = np.asarray(op_index)
    base = nb201_costs(("none",) * len(EDGES), dataset)  # the fixed skeleton: stem, reductions, head
    _, res = NB201_DATASETS[dataset]
    macs = bn = params = 0
    for stage in range(3):
        side = res >> stage
        table = np.array([nb201_op_cost(op, NB201_C << stage, side * side) for op in OPS_NB201], dtype=np.int64)
        per_cell = table[op_index].sum(axis=1)  # (N, 3)
        macs, bn, params = (macs + NB201_N * per_cell[:, 0], bn + NB201_N * per_cell[:, 1],
                            params + NB201_N * per_cell[:, 2])
    return {"params": base["params"] + params, "flops": base["flops"] + macs / 1e6,
            "flops_nar": base["flops_nar"] + macs + 2 * bn}


def nb201_features(op_index: np.ndarray, dataset: str = "cifar10", scale: bool = False) -> np.ndarray:
    """(N, 31, 4, 4) feature tensors of N cells given as (N, 6) indices into ``OPS_NB201``.

    ``scale`` divides FLOPs by 1e6 and params by 1e3 (the raw values are ~1e5, as in the authors' code).
    """
    op_index = np.asarray(op_index)
    _, res = NB201_DATASETS[dataset]
    out = np.zeros((len(op_index), 31, 4, 4), dtype=np.float32)
    for e, (dst, src) in enumerate(EDGES):
        out[:, 0, src, dst] = op_index[:, e]
    for cell in range(3 * NB201_N):
        stage = cell // NB201_N
        width, side = NB201_C << stage, res >> stage
        table = np.array([nb201_op_cost(op, width, side * side) for op in OPS_NB201], dtype=np.float64)
        flops, params = table[:, 0] + 2 * table[:, 1], table[:, 2]
        if scale:
            flops, params = flops / 1e6, params / 1e3
        for e, (dst, src) in enumerate(EDGES):
            out[:, 1 + 2 * cell, src, dst] = flops[op_index[:, e]]
            out[:, 2 + 2 * cell, src, dst] = params[op_index[:, e]]
    return out


def nb101_costs(spec: ModelSpec) -> dict:
    """Per-vertex FLOPs/params of each of the 9 modules (NAR's ``vertex_flops``/``vertex_params``) and totals.

    Channels follow NB101's ``compute_vertex_channels``; interior inputs are truncated (free), the cell input
    is projected by a 1x1 conv-BN-ReLU. ``params`` equals NB101's ``trainable_parameters`` and ``flops`` NAR's
    count (2*MACs + adds + pools, stem and 2x2 downsampling pools, global pool and FC with bias).
    """
    if not spec.valid_spec:
        raise ValueError("an invalid NB101 spec has no cost")
    m, ops = spec.matrix, spec.ops
    n = m.shape[0]
    flops = 2 * 27 * STEM_CHANNELS * 32 * 32
    params = 27 * STEM_CHANNELS + 2 * STEM_CHANNELS
    vflops, vparams = {}, {}
    c_in, side = STEM_CHANNELS, 32
    for s in range(NUM_STACKS):
        c_out = STEM_CHANNELS << s
        if s:
            side //= 2
            flops += 4 * c_in * side * side  # 2x2 max pool, stride 2
        hw = side * side
        for mod in range(MODULES_PER_STACK):
            ch = vertex_channels(c_in, c_out, m)
            vf, vp = [0] * n, [0] * n
            for t in range(1, n - 1):
                c = ch[t]
                n_in = int(m[:t, t].sum())
                if m[0, t]:
                    vf[t] += 2 * c_in * c * hw
                    vp[t] += c_in * c + 2 * c
                vf[t] += (n_in - 1) * c * hw
                if ops[t] == MAXPOOL3X3:
                    vf[t] += 9 * c * hw
                else:
                    k = 3 if ops[t] == CONV3X3 else 1
                    vf[t] += 2 * k * k * c * c * hw
                    vp[t] += k * k * c * c + 2 * c
            if m[0, n - 1]:  # projected input added to (or standing for) the concatenated output
                flops += 2 * c_in * c_out * hw + (c_out * hw if n > 2 else 0)
                params += c_in * c_out + 2 * c_out
            key = f"stack{s}/module{mod}"
            vflops[key], vparams[key] = vf, vp
            flops += sum(vf)
            params += sum(vp)
            c_in = c_out
    flops += c_in * side * side + 2 * c_in * 10 + 10
    params += c_in * 10 + 10
    return {"params": params, "flops": flops, "vertex_flops": vflops, "vertex_params": vparams}


def _pad_order(n: int, size: int = NB101_VERTICES) -> list[int]:
    """Where each of n vertices goes in a size-vertex layout: the output vertex always last."""
    return list(range(n - 1)) + [size - 1]


def nb101_features(spec: ModelSpec, costs: dict | None = None) -> np.ndarray:
    """(19, 7, 7) feature tensor of one pruned NB101 cell (NAR ``feature_tensor_encoding``)."""
    costs = costs or nb101_costs(spec)
    n = spec.num_vertices
    pos = _pad_order(n)
    adj = np.zeros((NB101_VERTICES, NB101_VERTICES), dtype=np.float64)
    adj[np.ix_(pos, pos)] = spec.matrix

    def per_dst(values: Sequence[float]) -> np.ndarray:
        v = np.zeros(NB101_VERTICES)
        v[pos] = values
        return adj * v[None, :]

    patches = [per_dst([OP_CODES_NB101[op] for op in spec.ops])]
    for key in NB101_MODULE_KEYS:
        patches.append(per_dst(np.asarray(costs["vertex_flops"][key]) / 1e7))
        patches.append(per_dst(np.asarray(costs["vertex_params"][key]) / 1e5))
    return np.stack(patches).astype(np.float32)
