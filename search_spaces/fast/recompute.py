"""Recomputed segments: trade compute for memory inside an op's layer chain.

An op's layers (after any shared first layer) are cut after each pointwise conv; a segment
``[*head, pw]`` of re-runnable layers keeps only its input for backward and recomputes ``head``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fast.batchnorm import batch_norm


def segments(chain: list[Callable]) -> list[tuple[list[Callable], bool]]:
    """Cut an op's layers after each pointwise (1x1, ungrouped) conv; (segment, recomputable).

    A separable conv ``dw -> pw -> BN -> ReLU -> dw -> pw`` becomes ``[dw, pw], [BN, ReLU, dw, pw]``.
    With recomputation (``Recomputed``) only each segment's input is kept for backward (the node's
    shared ReLU output, the first BN's input): the depthwise outputs, the inner ReLU output and the
    polyphase copies are computed again; the pointwise outputs are kept anyway by the BN after them.
    """
    out, cur = [], []
    for layer in chain:
        cur.append(layer)
        if _pointwise(layer):
            out, cur = out + [cur], []
    if cur:
        out.append(cur)
    return [(seg, len(seg) > 1 and _pointwise(seg[-1]) and all(isinstance(m, FUNCTIONAL) for m in seg[:-1]))
            for seg in out]


def _pointwise(layer: Callable) -> bool:
    return (type(layer) is nn.Conv2d and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.groups == 1)


#: layers ``Recomputed`` can re-run from captured tensors (see ``tensors_of`` / ``_rerun``)
FUNCTIONAL = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)


def tensors_of(layer: nn.Module) -> list[torch.Tensor]:
    """The parameters ``layer`` computes with, read now (inside ``functional_call`` these are the
    substituted ones, which a recomputation after the call must use too)."""
    if isinstance(layer, nn.Conv2d):
        return [layer.weight] + ([] if layer.bias is None else [layer.bias])
    if isinstance(layer, nn.BatchNorm2d) and layer.affine:
        return [layer.weight, layer.bias]
    return []


def _rerun(layer: nn.Module, h: torch.Tensor, ts: list[torch.Tensor], stats: list[torch.Tensor | None] | None
           ) -> torch.Tensor:
    """``layer(h)`` with the captured tensors, leaving BN running statistics alone."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(h, ts[0], ts[1] if len(ts) > 1 else None)
    if isinstance(layer, nn.BatchNorm2d):
        w, b = (ts[0], ts[1]) if ts else (None, None)
        batch = stats[0] is None  # the forward normalised with batch statistics: the same again, no update
        return batch_norm(h, stats[0], stats[1], w, b, batch, 0.0, layer.eps)
    return F.relu(h)


class Recomputed(torch.autograd.Function):
    """``pw(head(x))`` for a segment ``[*head, pw]`` that keeps only ``x`` for backward.

    Backward recomputes ``head(x)`` from the tensors captured in forward (so a ``functional_call``
    that has ended meanwhile changes nothing), does the pointwise conv's backward by hand and
    backpropagates through the recomputed head. BN statistics are updated by the forward only.
    Not twice differentiable (the Hessian probe turns recomputation off).
    """

    @staticmethod
    def forward(ctx, layers: list[nn.Module], x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.layers, ctx.counts, ctx.stats = layers, [len(tensors_of(m)) for m in layers], []
        h = x
        for layer in layers:
            if isinstance(layer, nn.BatchNorm2d):  # what it normalises with: batch statistics or running ones
                batch = layer.training or layer.running_mean is None
                ctx.stats.append([None, None] if batch else [layer.running_mean, layer.running_var])
            h = layer(h)
        ctx.save_for_backward(x, *tensors)
        return h

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a silently first-order answer would be wrong
            raise RuntimeError("recomputed segments are not twice differentiable; run double backward inside "
                               "search_spaces.fast.recompute_off(net) or with recompute=never")
        x, *tensors = ctx.saved_tensors
        *head, pw = ctx.layers
        needs = ctx.needs_input_grad[1:]  # x, then every tensor
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip([x, *tensors], needs)]
            h, i, stats = leaves[0], 1, iter(ctx.stats)
            for layer, k in zip(head, ctx.counts):
                h = _rerun(layer, h, leaves[i:i + k], next(stats) if isinstance(layer, nn.BatchNorm2d) else None)
                i += k
        w, has_bias = tensors[i - 1], ctx.counts[-1] > 1
        gh, gw, gb = torch.ops.aten.convolution_backward(
            gy, h.detach(), w, [w.shape[0]] if has_bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [h.requires_grad, needs[i], has_bias and needs[i + 1]])
        grads: list[torch.Tensor | None] = [None] * len(leaves)
        wanted = [j for j in range(i) if leaves[j].requires_grad]
        if wanted and gh is not None:
            for j, g in zip(wanted, torch.autograd.grad(h, [leaves[j] for j in wanted], gh, allow_unused=True)):
                grads[j] = g
        grads[i] = gw
        if has_bias:
            grads[i + 1] = gb
        return (None, *grads)
