"""Candidate operations, looked up by name in one registry (as xautodl's ``OPS`` dict).

Every entry is ``OPS[name](C_in, C_out, stride, affine, track_running_stats) -> nn.Module``.
The DARTS ops follow quark0/darts ``operations.py`` (convs without bias); the NAS-Bench-201
``nor_conv_*`` ops follow xautodl ``cell_operations.py`` (conv bias present exactly when BN is
not affine, which is what makes the NB201 supernet hold 1,692,826 weights).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

OpFactory = Callable[[int, int, int, bool, bool], nn.Module]


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``x``'s memory format, so tensors copied out of it keep it: mixing NCHW and channels-last
    tensors costs layout reorders, and in oneDNN makes some results depend on buffer addresses."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def grad_in_layout(x: torch.Tensor) -> torch.Tensor:
    """``x``, whose gradient is handed on in ``x``'s memory format.

    Gradients that reach a tensor through a channel ``cat`` arrive as strided channel slices, and a
    sum of gradients may come out in either layout; CPU batch-norm backward on a strided gradient
    is ~20x slower than on a dense one and oneDNN reorders around convs. One copy here, where a
    tensor with several consumers gets its summed gradient, replaces a slow path at each consumer.
    """
    if x.requires_grad:
        fmt = memory_format_of(x)
        x.register_hook(lambda g: g if g.is_contiguous(memory_format=fmt) else g.contiguous(memory_format=fmt))
    return x


def polyphase_split(x: torch.Tensor, d: int) -> torch.Tensor:
    """The d*d parts ``x[:, :, a::d, b::d]`` stacked on the batch axis (part-major), in ``x``'s
    memory format with a single copy."""
    B, C, H, W = x.shape
    if memory_format_of(x) == torch.channels_last:  # move the NHWC view's axes, then view as NCHW again
        v = x.permute(0, 2, 3, 1).reshape(B, H // d, d, W // d, d, C).permute(2, 4, 0, 1, 3, 5)
        return v.reshape(d * d * B, H // d, W // d, C).permute(0, 3, 1, 2)
    return x.reshape(B, C, H // d, d, W // d, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * B, C, H // d, W // d)


def polyphase_merge(y: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`polyphase_split`: interleave the stacked parts back into one image."""
    n, C, h, w = y.shape
    if memory_format_of(y) == torch.channels_last:
        v = y.permute(0, 2, 3, 1).reshape(d, d, n // (d * d), h, w, C).permute(2, 3, 0, 4, 1, 5)
        return v.reshape(n // (d * d), h * d, w * d, C).permute(0, 3, 1, 2)
    return y.reshape(d, d, n // (d * d), C, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n // (d * d), C, h * d, w * d)


#: below this many channels, CPU batch norm on a channels-last tensor runs in NCHW (see batch_norm)
NARROW_CHANNELS = 16


def batch_norm(x: torch.Tensor, mean: torch.Tensor | None, var: torch.Tensor | None, weight: torch.Tensor | None,
               bias: torch.Tensor | None, training: bool, momentum: float, eps: float) -> torch.Tensor:
    """``F.batch_norm``, with narrow channels-last CPU tensors normalised in NCHW.

    The CPU's channels-last batch-norm kernel vectorises over channels: with the 4 channels a
    PC-DARTS op sees (C/K) its forward + backward takes 4.5x as long as the NCHW kernel plus the
    two layout copies (29.4 vs 6.6 ms at 256x4x32x32, ``benchmarks/kernels.py``); at 16 channels it
    is the faster one. The same normalisation up to float rounding; the result keeps ``x``'s layout.
    """
    if x.device.type == "cpu" and x.dim() == 4 and x.shape[1] < NARROW_CHANNELS \
            and memory_format_of(x) == torch.channels_last:
        y = grad_in_layout(F.batch_norm(x.contiguous(), mean, var, weight, bias, training, momentum, eps))
        return y.contiguous(memory_format=torch.channels_last)
    return F.batch_norm(x, mean, var, weight, bias, training, momentum, eps)


def weighted_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """``w * bn(x)`` as one batch-norm call whose affine scale carries ``w`` (exactly
    ``nn.BatchNorm2d.forward``'s handling of running statistics otherwise); ``bn(x)`` when w is None.

    The normalised tensor is then never stored for the backward pass (``w * y`` would keep ``y`` for
    ``d/dw``), and ``d/dw`` comes out of BN's own weight gradient: one memory pass instead of three.
    """
    if w is None:
        scale, shift = bn.weight, bn.bias
    else:
        scale = w.expand(x.shape[1]).contiguous() if bn.weight is None else bn.weight * w
        shift = None if bn.bias is None else bn.bias * w
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                      scale, shift, use_batch_stats, factor, bn.eps)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose forward goes through :func:`batch_norm` (narrow channels-last tensors
    on the CPU); same parameters, buffers and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return weighted_batch_norm(self, x)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN. ``bias`` is explicit because DARTS and NB201 differ on it."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                 affine: bool = True, track: bool = True, bias: bool = False):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias),
            BatchNorm2d(C_out, affine=affine, track_running_stats=track),
        )


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (``groups`` = channels) in the forms a CPU computes fastest (same numbers).

    Dilation: with dilation d and "same" padding, output pixel (i, j) only reads input pixels
    congruent to (i, j) mod d, so the d*d parts ``x[:, :, a::d, b::d]`` are stacked on the batch axis
    and convolved with the kernel undilated (padding (k-1)/2); at stride d only part (0, 0) is needed.
    oneDNN's dilated depthwise backward is 2-9x slower than this. Other dilated shapes fall back to
    the plain conv.

    Kernels wider than 3 (``sep_conv_5x5``, ``dil_conv_5x5``): oneDNN's depthwise weight-gradient
    kernel takes widths up to 3 and wider ones go to a generic grouped kernel ~8x slower, so their
    weight gradient is computed in 3-wide column blocks (``_ColumnBlocked``).
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        d, (k, _), (s, _), (p, _) = self.dilation[0], self.kernel_size, self.stride, self.padding
        if self.dilation == (1, 1) and self.padding_mode == "zeros":
            return self._undilated(x, weight, bias, self.stride, self.padding)
        H, W = x.shape[-2:]
        square = self.dilation[0] == self.dilation[1] and k == self.kernel_size[1] and self.stride[0] == self.stride[1]
        if not (square and d > 1 and p == d * (k - 1) // 2 and k % 2 and H // d >= k and W // d >= k
                and self.padding_mode == "zeros"):
            return super()._conv_forward(x, weight, bias)
        fmt, same = memory_format_of(x), ((k - 1) // 2, (k - 1) // 2)
        if s == d:
            return self._undilated(x[:, :, ::d, ::d].contiguous(memory_format=fmt), weight, bias, (1, 1), same)
        if s != 1 or H % d or W % d:
            return super()._conv_forward(x, weight, bias)
        y = self._undilated(polyphase_split(x, d).contiguous(memory_format=fmt), weight, bias, (1, 1), same)
        return polyphase_merge(y.contiguous(memory_format=fmt), d)

    def _undilated(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   stride: tuple[int, ...], padding: tuple[int, ...]) -> torch.Tensor:
        if (x.device.type == "cpu" and weight.shape[-1] > 3 and stride == (1, 1) and bias is None
                and self.groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1
                and memory_format_of(x) == torch.channels_last and torch.is_grad_enabled()):
            return _ColumnBlocked.apply(x, weight, tuple(padding))
        return F.conv2d(x, weight, bias, stride, padding, 1, self.groups)


class _ColumnBlocked(torch.autograd.Function):
    """Depthwise conv (stride 1) whose weight gradient is assembled from 3-wide column blocks.

    Columns j0..j0+2 of the weight gradient are the weight gradient of a (kh, 3) conv with padding
    (ph, 0) of x zero-padded by pw - j0 columns on the left and 2 - (pw - j0) on the right: the same
    sums, in oneDNN's fast depthwise kernel. Twice differentiable through the plain conv.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        (ph, pw), C, (kh, kw) = ctx.padding, x.shape[1], weight.shape[-2:]
        if torch.is_grad_enabled():  # create_graph: differentiate the plain conv instead
            y = F.conv2d(x, weight, None, 1, ctx.padding, 1, C)
            wanted = [t for t, n in zip((x, weight), ctx.needs_input_grad) if n]
            got = iter(torch.autograd.grad(y, wanted, g, create_graph=True))
            return (next(got) if ctx.needs_input_grad[0] else None,
                    next(got) if ctx.needs_input_grad[1] else None, None)
        g = g.contiguous(memory_format=torch.channels_last)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [ph, pw], [1, 1], False, [0, 0], C,
                                                     [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = torch.empty_like(weight)
            block = weight.new_empty(C, 1, kh, 3)
            for j0 in range(0, kw, 3):
                left = pw - j0  # x widened by (left, 2 - left) columns (negative: cropped, never read)
                xs = x if left == 1 else F.pad(x, (left, 2 - left))
                part = torch.ops.aten.convolution_backward(g, xs, block, None, [1, 1], [ph, int(left == 1)], [1, 1],
                                                           False, [0, 0], C, [False, True, False])[1]
                gw[..., j0:j0 + 3] = part[..., :kw - j0]
        return gx, gw, None


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS ``dil_conv_k``)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True, track: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            BatchNorm2d(C_out, affine=affine, track_running_stats=track),
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

    Each stride-2 1x1 conv is computed as a 1x1 conv of the subsampled input (the same numbers):
    oneDNN's stride-2 1x1 weight gradient on channels-last inputs with few channels depends on
    buffer addresses, which would make a resumed search drift from an uninterrupted one.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track: bool = True, bias: bool = False):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=bias)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=bias)
        self.bn = BatchNorm2d(C_out, affine=affine, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.reduce(self.relu(x)))

    def parts(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self.relu, self.reduce, self.bn]

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The two offset convs of the (already rectified) input, concatenated, before BN."""
        fmt = memory_format_of(x)
        even = x[:, :, ::2, ::2].contiguous(memory_format=fmt)
        # the second conv sees x shifted by one pixel, zero-padded right/bottom (xautodl's
        # ConstantPad2d((0, 1, 0, 1))), so odd resolutions give the same output size
        odd = F.pad(x[:, :, 1::2, 1::2], (0, x.shape[3] % 2, 0, x.shape[2] % 2)).contiguous(memory_format=fmt)
        y1 = F.conv2d(even, self.conv_1.weight, self.conv_1.bias)
        y2 = F.conv2d(odd, self.conv_2.weight, self.conv_2.bias)
        return torch.cat([grad_in_layout(y1), grad_in_layout(y2)], dim=1)  # cat hands back channel slices


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

    def parts(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return ([] if self.pre is None else parts(self.pre)) + [self.pool]


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

def parts(op: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The chain of layers ``op`` applies, nested ``Sequential``s flattened (an op with custom wiring
    lists its own ``parts``). The mixed op uses it to share an op's parameter-free first layer between
    the edges leaving a node and to fold the edge weight into the final BatchNorm."""
    if hasattr(op, "parts"):
        return op.parts()
    if isinstance(op, nn.Sequential):
        return [p for m in op for p in parts(m)]
    return [op]


#: ops with no learnable weights; a genotype full of them is the classic DARTS collapse.
PARAMETER_FREE = frozenset({"none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "noise"})


def build_op(name: str, C_in: int, C_out: int, stride: int, affine: bool, track: bool = True) -> nn.Module:
    """Instantiate an op by name; unknown names fail with the list of valid ones."""
    if name not in OPS:
        raise KeyError(f"unknown operation {name!r}; valid: {', '.join(sorted(OPS))}")
    return OPS[name](C_in, C_out, stride, affine, track)
