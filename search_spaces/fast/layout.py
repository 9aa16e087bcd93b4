"""Memory-layout helpers: keep channels-last tensors (and their gradients) channels-last.

Mixing NCHW and channels-last tensors costs layout reorders, and in oneDNN makes some results depend
on buffer addresses (a resumed search would drift from an uninterrupted one).
"""

from __future__ import annotations

import torch


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``x``'s memory format, so tensors copied out of it keep it."""
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
