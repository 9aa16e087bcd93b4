"""Batch norm for the CPU: narrow channels-last tensors through NCHW, and the edge weight folded in."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fast.layout import grad_in_layout, memory_format_of

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


class FastBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose forward goes through :func:`batch_norm` (narrow channels-last tensors
    on the CPU); same parameters, buffers and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return weighted_batch_norm(self, x)
