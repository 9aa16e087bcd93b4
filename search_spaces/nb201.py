"""NAS-Bench-201 cell space: the search supernet and the evaluation network (genotypes: ``nb201_genotype``).

Follows the NAS-Bench-201 paper and xautodl (``TinyNetworkDarts``, ``SearchCell``, ``InferCell``):
a 4-node cell (node 0 input, node 3 output) with 6 edges, one 6x5 alpha shared by all 15 cells,
three stages of N cells at C, 2C, 4C joined by ResNet reduction blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from search_spaces.mixed import MixedOp, edge_scale_key
# The cell's vocabulary and genotype strings live apart, without torch, for commands that only read tables.
from search_spaces.nb201_genotype import (  # noqa: F401
    EDGES, NODES, OPS_NB201, GenotypeError, NB201Genotype, all_genotypes, format_genotype, parse_genotype)
from search_spaces.ops import OPS, PARAMETER_FREE, ReLUConvBN
from search_spaces.supernet import method_slots


def derive(weights: torch.Tensor, ops: tuple[str, ...] = OPS_NB201) -> NB201Genotype:
    """Per-edge argmax over all ops, ``none`` included (xautodl ``TinyNetwork.genotype``)."""
    if weights.shape != (len(EDGES), len(ops)):
        raise ValueError(f"expected weights of shape {(len(EDGES), len(ops))}, got {tuple(weights.shape)}")
    return NB201Genotype(tuple(ops[int(k)] for k in weights.argmax(dim=-1)))


def genotype_stats(g: NB201Genotype) -> dict[str, int]:
    return {"skip_count": sum(op == "skip_connect" for op in g.ops),
            "param_free_count": sum(op in PARAMETER_FREE for op in g.ops)}


class SearchCell(nn.Module):
    """Node i = sum over earlier nodes j of ``MixedOp_ij(node j)`` (xautodl ``SearchCell``)."""

    def __init__(self, C: int, ops: tuple[str, ...], affine: bool, track: bool, partial_k: int = 1):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(C, 1, ops, affine, track, partial_k=partial_k) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        nodes, k = [x], 0
        for i in range(1, NODES):
            nodes.append(sum(self.edges[k + j](nodes[j], weights[k + j], None if scale is None else scale[k + j])
                             for j in range(i)))
            k += i
        return nodes[-1]


class ResNetBlock(nn.Module):
    """The fixed stride-2 reduction block between NB201 stages (xautodl ``ResNetBasicblock``)."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class _Macro(nn.Module):
    """Stem, 3 stages of N cells with ResNet reductions, BN-ReLU, global pool, linear."""

    def __init__(self, C: int, N: int, num_classes: int, in_channels: int, make_cell):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBlock(width // 2, width))
            layers.extend(make_cell(width) for _ in range(N))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(4 * C, num_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.lastact(x).mean(dim=(2, 3)))


class NB201Supernet(_Macro):
    """The NAS-Bench-201 weight-sharing supernet; forward takes the edge weights from the method.

    ``alphas`` holds one 6x5 tensor (key ``cell``) shared by every search cell, initialised as
    ``1e-3 * randn`` like the reference. The method turns it into edge weights (softmax, Dirichlet
    sample, ...), so the supernet itself never decides how alpha is relaxed.
    """

    space = "nb201"

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                 ops: tuple[str, ...] = OPS_NB201, affine: bool = False, track_running_stats: bool = True,
                 partial_k: int = 1):
        super().__init__(C, N, num_classes, in_channels,
                         lambda width: SearchCell(width, ops, affine, track_running_stats, partial_k))
        self.ops = ops
        self.targets = {"cell": [i for i, _ in EDGES]}  # node each edge feeds (edge normalisation)
        self.alphas = nn.ParameterDict({"cell": nn.Parameter(1e-3 * torch.randn(len(EDGES), len(ops)))})
        method_slots(self)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor], return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits under the edge weights; with ``return_features`` also the last cell's output."""
        x, scale = self.stem(x), weights.get(edge_scale_key("cell"))
        for cell in self.cells:
            x = cell(x, weights["cell"], scale) if isinstance(cell, SearchCell) else cell(x)
        return (self.head(x), x) if return_features else self.head(x)

    def edge_ops(self) -> dict[str, list[tuple[str, ...]]]:
        """The candidate ops of every edge, per alpha key (used to name alpha metrics)."""
        return {"cell": [self.ops] * len(EDGES)}

    def mixed_ops(self) -> Iterator[tuple[str, int, MixedOp]]:
        """(alpha key, edge row, MixedOp) of every searched edge in every cell."""
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                for e, op in enumerate(cell.edges):
                    yield "cell", e, op

    def edge_names(self) -> dict[str, list[str]]:
        return {"cell": [f"{i}<-{j}" for i, j in EDGES]}

    def derive(self, weights: dict[str, torch.Tensor]) -> NB201Genotype:
        return derive(weights["cell"].detach(), self.ops)


class InferCell(nn.Module):
    """A discrete NB201 cell (affine BN); ``none`` edges are dropped."""

    def __init__(self, genotype: NB201Genotype, C: int):
        super().__init__()
        self.genotype = genotype
        self.edges = nn.ModuleList(OPS[op](C, C, 1, True, True) for op in genotype.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes, k = [x], 0
        for i in range(1, NODES):
            terms = [self.edges[k + j](nodes[j]) for j in range(i) if self.genotype.ops[k + j] != "none"]
            nodes.append(sum(terms) if terms else torch.zeros_like(x))
            k += i
        return nodes[-1]


class NB201Network(_Macro):
    """The NAS-Bench-201 evaluation network for one genotype (C=16, N=5 in the benchmark)."""

    def __init__(self, genotype: NB201Genotype, C: int = 16, N: int = 5, num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__(C, N, num_classes, in_channels, lambda width: InferCell(genotype, width))
        self.genotype = genotype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.head(x)
