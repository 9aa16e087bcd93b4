"""Depthwise convs in the forms a CPU computes fastest (the same numbers up to float rounding)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fast.layout import memory_format_of, polyphase_merge, polyphase_split


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (``groups`` = channels), the fast form of ``DilConv``'s first conv.

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
