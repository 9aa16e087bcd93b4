"""The fast mixed op: the reference ``sum_o w_o * o(x)`` with less work per edge.

- the edges leaving a node share its parameter-free work (``shared``: one ReLU, one pooling per kind
  and one partial-channel slice per node input, not one per edge and op);
- the edge weight is folded into the op's last BatchNorm as its affine scale (``weighted_batch_norm``);
- op outputs are summed in place, and a node's partial-channel edges share one cat and one shuffle
  (:func:`node_sum`);
- optionally, separable convs keep only their segments' inputs for backward (``Recomputed``).
Each op's layer chain is planned once (``_plan``) and re-planned only when the ops change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fast.batchnorm import weighted_batch_norm
from search_spaces.fast.layout import grad_in_layout, memory_format_of
from search_spaces.fast.ops import accelerate_op, parts
from search_spaces.fast.recompute import Recomputed, segments, tensors_of
from search_spaces.mixed import MixedOp, channel_shuffle, drop_path

#: parameter-free layers that may open an op; computed once per node input and shared
SHAREABLE = (nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Identity)

Plan = list[tuple[int, tuple | None, Callable | None, list[tuple[list[Callable], bool]], nn.BatchNorm2d | None]]


class FastMixedOp(MixedOp):
    """:class:`MixedOp` computing the same sum faster. ``shared`` is one dict per node input, given to
    every edge leaving that node; ``recompute`` is set by ``accelerate`` / :func:`set_recompute`."""

    recompute = False

    def make_op(self, name: str, C: int) -> nn.Module:
        return accelerate_op(super().make_op(name, C))  # widened ops come fast too

    def forward(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None, *,
                shared: dict | None = None) -> torch.Tensor:
        shared = {} if shared is None else shared
        if self.k == 1:
            return self.mix(x, w, shared=shared)
        return channel_shuffle(torch.cat(self.partial(x, w, scale, shared=shared), dim=1), self.k)

    def partial(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None, *,
                shared: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shared = {} if shared is None else shared
        part = self.C // self.k
        key = ("partial", self.k)
        if key not in shared:  # one split per node: its backward is one cat, not a zero-fill per edge and slice
            xa, xb = x.split([part, self.C - part], dim=1)
            shared[key] = (grad_in_layout(xa.contiguous(memory_format=memory_format_of(x))), xb, {})
        xa, xb, sub = shared[key]
        ya = self.mix(xa, w, shared=sub)
        yb = xb if self.stride == 1 else F.max_pool2d(xb.contiguous(memory_format=memory_format_of(x)), 2, 2)
        return ya, yb if scale is None else yb * scale

    def _plan(self) -> Plan:
        """Per active op: (index, share key, shareable first layer, remaining layers in segments, final
        BN), rebuilt only when the ops change (pruning, widening), not on every forward."""
        ops = [self.ops[i] for i in self.active]
        cached = getattr(self, "_plan_cache", None)  # holds the ops themselves, so no id can be reused
        if cached is None or len(cached[0]) != len(ops) or any(a is not b for a, b in zip(cached[0], ops)):
            plan = []
            for i in self.active:
                chain, key, first = parts(self.ops[i]), None, None
                if isinstance(chain[0], SHAREABLE) and not getattr(chain[0], "inplace", False):  # same on every edge
                    key, first, chain = _describe(chain[0]), chain[0], chain[1:]
                bn = chain.pop() if chain and isinstance(chain[-1], nn.BatchNorm2d) else None
                plan.append((i, key, first, segments(chain), bn))
            self._plan_cache = (ops, plan)
        return self._plan_cache[1]

    def mix(self, x: torch.Tensor, w: torch.Tensor, *, shared: dict | None = None) -> torch.Tensor:
        shared = {} if shared is None else shared
        out = None
        for i, key, first, segs, bn in self._plan():
            h = x
            if first is not None:
                if key not in shared:
                    shared[key] = grad_in_layout(first(x))
                h = shared[key]
            for segment, recomputable in segs:
                if recomputable and self.recompute and torch.is_grad_enabled():
                    h = Recomputed.apply(segment, h, *[t for layer in segment for t in tensors_of(layer)])
                else:
                    for layer in segment:
                        h = layer(h)
            y = h * w[i] if bn is None else weighted_batch_norm(bn, h, w[i])
            if self.training and self.drop_prob > 0 and not isinstance(self.ops[i], nn.Identity):
                y = drop_path(y, self.drop_prob)
            out = y if out is None else out.add_(y)  # out is a fresh sum nobody saved: add in place
        if out is None:
            return x[:, :, :: self.stride, :: self.stride].mul(0.0)
        return out


def _describe(layer: nn.Module) -> tuple:
    """A key equal for two layers exactly when they compute the same function (type + settings)."""
    return (type(layer), *((k, v) for k, v in vars(layer).items() if not k.startswith("_") and k != "training"))


def node_sum(edges: Sequence[FastMixedOp], inputs: Sequence[torch.Tensor], weights: torch.Tensor,
             shared: Sequence[dict], scale: torch.Tensor | None = None) -> torch.Tensor:
    """One supernet node: ``sum_j edges[j](inputs[j], weights[j], scale[j])``.

    With partial channels every edge ends in the same cat and channel shuffle, both linear, so the
    node is ``shuffle(cat[sum_j ya_j, sum_j yb_j])``: one cat and one shuffle per node instead of one
    per edge, with the same sums in the same order.
    """
    k = edges[0].k
    sc = (lambda j: None) if scale is None else (lambda j: scale[j])
    if k == 1 or any(e.k != k for e in edges):
        s = edges[0](inputs[0], weights[0], sc(0), shared=shared[0])
        for j in range(1, len(edges)):
            s = s.add_(edges[j](inputs[j], weights[j], sc(j), shared=shared[j]))  # s: a fresh sum
        return s
    sa = sb = None
    for j, edge in enumerate(edges):
        ya, yb = edge.partial(inputs[j], weights[j], sc(j), shared=shared[j])
        sa = ya if sa is None else sa.add_(ya)  # ya: a fresh sum nobody saved
        sb = yb if sb is None else sb + yb  # yb may be a view of the input
    return channel_shuffle(torch.cat([grad_in_layout(sa), sb], dim=1), k)


def set_recompute(net: nn.Module, on: bool) -> None:
    """Trade compute for memory in every fast mixed op of ``net`` (see ``recompute.segments``)."""
    for m in net.modules():
        if isinstance(m, FastMixedOp):
            m.recompute = on


@contextlib.contextmanager
def recompute_off(net: nn.Module) -> Iterator[None]:
    """Keep every intermediate while inside (for double backward, which ``Recomputed`` lacks)."""
    ops = [m for m in net.modules() if isinstance(m, FastMixedOp)]
    before = [m.recompute for m in ops]
    try:
        for m in ops:
            m.recompute = False
        yield
    finally:
        for m, on in zip(ops, before):
            m.recompute = on
