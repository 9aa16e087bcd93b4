"""Fast forms of the reference ops (:mod:`search_spaces.ops`), swapped in by :func:`accelerate_op`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fast.batchnorm import FastBatchNorm2d
from search_spaces.fast.depthwise import DepthwiseConv2d
from search_spaces.fast.layout import grad_in_layout, memory_format_of
from search_spaces.ops import DilConv, FactorizedReduce, Pool


class FastFactorizedReduce(FactorizedReduce):
    """Each stride-2 1x1 conv computed as a 1x1 conv of the subsampled input (the same numbers).

    oneDNN's stride-2 1x1 weight gradient on channels-last inputs with few channels depends on
    buffer addresses, which would make a resumed search drift from an uninterrupted one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.reduce(self.relu(x)))

    def parts(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self.relu, self.reduce, self.bn]

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The two offset convs of the (already rectified) input, concatenated, before BN."""
        fmt = memory_format_of(x)
        even = x[:, :, ::2, ::2].contiguous(memory_format=fmt)
        odd = F.pad(x[:, :, 1::2, 1::2], (0, x.shape[3] % 2, 0, x.shape[2] % 2)).contiguous(memory_format=fmt)
        y1 = F.conv2d(even, self.conv_1.weight, self.conv_1.bias)
        y2 = F.conv2d(odd, self.conv_2.weight, self.conv_2.bias)
        return torch.cat([grad_in_layout(y1), grad_in_layout(y2)], dim=1)  # cat hands back channel slices


class FastPool(Pool):
    """``Pool`` that lists its layers, so a mixed op can share the pooling between edges."""

    def parts(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return ([] if self.pre is None else parts(self.pre)) + [self.pool]


def parts(op: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The chain of layers ``op`` applies, nested ``Sequential``s flattened (an op with custom wiring
    lists its own ``parts``). The fast mixed op uses it to share an op's parameter-free first layer
    between the edges leaving a node and to fold the edge weight into the final BatchNorm."""
    if hasattr(op, "parts"):
        return op.parts()
    if isinstance(op, nn.Sequential):
        return [p for m in op for p in parts(m)]
    return [op]


_FAST_OPS: dict[type, type] = {FactorizedReduce: FastFactorizedReduce, Pool: FastPool,
                               nn.BatchNorm2d: FastBatchNorm2d}


def accelerate_op(op: nn.Module) -> nn.Module:
    """Swap the layers of ``op`` (anything built from :mod:`search_spaces.ops`) for their fast forms in
    place: every BatchNorm, ``DilConv``'s depthwise conv, ``FactorizedReduce`` and ``Pool``. Only
    classes change, so parameters, buffers and state-dict keys stay as they are."""
    for m in op.modules():
        if type(m) in _FAST_OPS:
            m.__class__ = _FAST_OPS[type(m)]
        elif type(m) is DilConv and type(m[1]) is nn.Conv2d:
            m[1].__class__ = DepthwiseConv2d
    return op
