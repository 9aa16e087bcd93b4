"""Candidate operations, looked up by name in one registry (as xautodl's ``OPS`` dict).

Every entry is ``OPS[name](C_in, C_out, stride, affine, track_running_stats) -> nn.Module``.
The DARTS ops follow quark0/darts ``operations.py`` (convs without bias); the NAS-Bench-201
``nor_conv_*`` ops follow xautodl ``cell_operations.py`` (conv bias present exactly when BN is
not affine, which is what makes the NB201 supernet hold 1,692,826 weights).

These are the reference forms. The CPU-fast forms of the same computations (channels-last layout,
polyphase dilated convs, column-blocked depthwise gradients, ...) live in :mod:`search_spaces.fast`
and replace these classes in place (``accelerate``), keeping every parameter.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

OpFactory = Callable[[int, int, int, bool, bool], nn.Module]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN. ``bias`` is explicit because DARTS and NB201 differ on it."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                 affine: bool = True, track: bool = True, bias: bool = False):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS ``dil_conv_k``)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True, track: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1; the stride sits in the first (DARTS ``sep_conv_k``)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True, track: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine, track),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine, track),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (strided when the edge reduces)."""

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        self.C_out, self.stride = C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if x.shape[1] != self.C_out:
            x = x.new_zeros(x.shape[0], self.C_out, *x.shape[2:])
        return x.mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated (DARTS and NB201).

    The second conv sees the input shifted by one pixel, zero-padded right/bottom (xautodl's
    ``ConstantPad2d((0, 1, 0, 1))``), so odd resolutions give the same output size.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track: bool = True, bias: bool = False):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=bias)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=bias)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


class Pool(nn.Module):
    """3x3 max/avg pooling; a 1x1 ReLUConvBN first when the channel count changes (NB201 ``POOLING``)."""

    def __init__(self, kind: str, C_in: int, C_out: int, stride: int, affine: bool, track: bool, bias: bool):
        super().__init__()
        self.pre = None if C_in == C_out else ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track, bias)
        if kind == "avg":
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x if self.pre is None else self.pre(x))


class Noise(nn.Module):
    """RobustDARTS S4 ``noise``: a fresh N(0, 1) sample of the output's shape; carries no signal from x."""

    def __init__(self, stride: int, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.stride, self.mean, self.std = stride, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.empty_like(x).normal_(self.mean, self.std)


def _skip(C_in: int, C_out: int, stride: int, affine: bool, track: bool, bias: bool = False) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    return FactorizedReduce(C_in, C_out, affine, track, bias)


OPS: dict[str, OpFactory] = {
    "none": lambda Ci, Co, s, a, t: Zero(Ci, Co, s),
    "skip_connect": lambda Ci, Co, s, a, t: _skip(Ci, Co, s, a, t),
    "avg_pool_3x3": lambda Ci, Co, s, a, t: Pool("avg", Ci, Co, s, a, t, bias=False),
    "max_pool_3x3": lambda Ci, Co, s, a, t: Pool("max", Ci, Co, s, a, t, bias=False),
    "sep_conv_3x3": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 3, s, 1, a, t),
    "sep_conv_5x5": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 5, s, 2, a, t),
    "sep_conv_7x7": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 7, s, 3, a, t),
    "dil_conv_3x3": lambda Ci, Co, s, a, t: DilConv(Ci, Co, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda Ci, Co, s, a, t: DilConv(Ci, Co, 5, s, 4, 2, a, t),
    "noise": lambda Ci, Co, s, a, t: Noise(s),
    # NAS-Bench-201 (xautodl): conv bias exactly when BN is not affine
    "nor_conv_1x1": lambda Ci, Co, s, a, t: ReLUConvBN(Ci, Co, 1, s, 0, 1, a, t, bias=not a),
    "nor_conv_3x3": lambda Ci, Co, s, a, t: ReLUConvBN(Ci, Co, 3, s, 1, 1, a, t, bias=not a),
}

#: ops with no learnable weights; a genotype full of them is the classic DARTS collapse.
PARAMETER_FREE = frozenset({"none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "noise"})


def build_op(name: str, C_in: int, C_out: int, stride: int, affine: bool, track: bool = True) -> nn.Module:
    """Instantiate an op by name; unknown names fail with the list of valid ones."""
    if name not in OPS:
        raise KeyError(f"unknown operation {name!r}; valid: {', '.join(sorted(OPS))}")
    return OPS[name](C_in, C_out, stride, affine, track)
