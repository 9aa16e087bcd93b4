"""The mixed operation of one supernet edge, shared by every space.

``sum_o w_o * o(x)`` over the edge's candidate ops, with two options the variants need:
partial channels (PC-DARTS: only the first C/K channels enter the ops, the rest bypass them and a
channel shuffle mixes the two) and pruning (DrNAS: ops removed between stages are never computed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.ops import (OPS, BatchNorm2d, Zero, batch_norm, grad_in_layout, memory_format_of, parts,
                               weighted_batch_norm)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS' shuffle of ``groups`` channel groups (``view(b, groups, c // groups, h, w)
    .transpose(1, 2)``), by PyTorch's native kernel: faster than a view-and-copy on channels-last
    CPU tensors, whose 4-wide inner transposes are slow (5.2 vs 6.7 ms at 256x16x32x32 in
    ``benchmarks/kernels.py``). Keeps ``x``'s memory format."""
    return F.channel_shuffle(x, groups)


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability p, scale the rest by 1/(1-p) (DARTS' drop_path)."""
    keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x / (1 - p) * keep


class MixedOp(nn.Module):
    """Weighted sum of an edge's candidate ops.

    ``none`` and pruned ops are never computed: their output is zero, so leaving them out changes
    neither the value nor any gradient (alpha still sees them through its normalisation).
    ``pool_bn`` appends a non-affine BN to pooling ops, as the DARTS search network does.
    """

    def __init__(self, C: int, stride: int, names: Sequence[str], affine: bool, track: bool,
                 pool_bn: bool = False, partial_k: int = 1):
        super().__init__()
        if partial_k < 1 or C % partial_k:
            raise ValueError(f"partial channels K={partial_k} must divide the edge's {C} channels")
        self.C, self.stride, self.names, self.k = C, stride, tuple(names), partial_k
        self.affine, self.track, self.pool_bn = affine, track, pool_bn
        self.ops = nn.ModuleList(self.make_op(name, C // partial_k) for name in names)
        self.active = [i for i, name in enumerate(names) if name != "none"]
        self.drop_prob = 0.0  # drop-path on op outputs during search (RobustDARTS), set per epoch
        self.recompute = False  # keep only each segment's input for backward (see _segments); set by the search

    def make_op(self, name: str, C: int) -> nn.Module:
        op = OPS[name](C, C, self.stride, self.affine, self.track)
        if self.pool_bn and "pool" in name:
            op = nn.Sequential(op, BatchNorm2d(C, affine=self.affine, track_running_stats=self.track))
        return op

    def prune(self, keep: Sequence[int]) -> None:
        """Stop computing every op not in ``keep`` and free its weights."""
        for i in range(len(self.ops)):
            if i not in keep:
                self.ops[i] = Zero(self.C // self.k, self.C // self.k, self.stride)
        self.active = [i for i in self.active if i in keep]

    def widen(self, k: int, generator: torch.Generator) -> list[tuple[nn.Parameter, nn.Parameter, Callable]]:
        """Rebuild the active ops for C/k input channels (DrNAS progressive stages), Net2Net-style:
        the old channels keep their weights, new ones copy randomly chosen old ones.

        Returns ``(old_param, new_param, expand)`` so optimiser state can be expanded the same way.
        """
        if k < 1 or self.C % k:
            raise ValueError(f"partial channels K={k} must divide the edge's {self.C} channels")
        moved = []
        for i in self.active:
            old, new = self.ops[i], self.make_op(self.names[i], self.C // k)
            maps: dict[tuple[int, int], torch.Tensor] = {}

            def expand(t: torch.Tensor, shape: torch.Size, maps=maps) -> torch.Tensor:
                for d, (o, n) in enumerate(zip(t.shape, shape)):
                    if o != n:
                        if (o, n) not in maps:
                            extra = torch.randint(0, o, (n - o,), generator=generator)
                            maps[(o, n)] = torch.cat([torch.arange(o), extra])
                        t = t.index_select(d, maps[(o, n)].to(t.device))
                return t

            old_state = old.state_dict()
            if old_state:
                new.to(next(iter(old_state.values())).device)
            if any(p.dim() == 4 and not p.is_contiguous() for p in old.parameters()):
                new.to(memory_format=torch.channels_last)  # keep the supernet's layout (mixed layouts drift)
            new_state = new.state_dict()
            new.load_state_dict({key: expand(old_state[key], new_state[key].shape) for key in new_state})
            old_params, new_params = dict(old.named_parameters()), dict(new.named_parameters())
            for name, p in new_params.items():
                p.requires_grad_(old_params[name].requires_grad)  # frozen stays frozen (random features)
                moved.append((old_params[name], p, lambda t, shape=p.shape, f=expand: f(t, shape)))
            self.ops[i] = new
        self.k = k
        return moved

    def forward(self, x: torch.Tensor, w: torch.Tensor, shared: dict | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_o w_o * o(x)``. ``shared`` is one dict per node input, given to every edge leaving that
        node, so parameter-free work on the input (a ReLU, a pooling, the partial-channel slice) is
        done once per node instead of once per edge and op. ``scale``: see :meth:`partial`."""
        shared = {} if shared is None else shared
        if self.k == 1:
            return self._mix(x, w, shared)
        return channel_shuffle(torch.cat(self.partial(x, w, shared, scale), dim=1), self.k)

    def partial(self, x: torch.Tensor, w: torch.Tensor, shared: dict, scale: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Partial channels before the cat and shuffle: (ops on the first C/K channels, the rest).

        The rest bypasses the ops (max-pooled on reduction edges) and is multiplied by ``scale``
        when given: PC-DARTS' edge normalisation scales the whole edge, and only its factor on the
        ops' part can ride in ``w``.
        """
        part = self.C // self.k
        key = ("partial", self.k)
        if key not in shared:  # one split per node: its backward is one cat, not a zero-fill per edge and slice
            xa, xb = x.split([part, self.C - part], dim=1)
            shared[key] = (grad_in_layout(xa.contiguous(memory_format=memory_format_of(x))), xb, {})
        xa, xb, sub = shared[key]
        ya = self._mix(xa, w, sub)
        yb = xb if self.stride == 1 else F.max_pool2d(xb.contiguous(memory_format=memory_format_of(x)), 2, 2)
        return ya, yb if scale is None else yb * scale

    def _plan(self) -> list[tuple[int, tuple | None, Callable | None, list[list[Callable]], nn.BatchNorm2d | None]]:
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
                plan.append((i, key, first, _segments(chain), bn))
            self._plan_cache = (ops, plan)
        return self._plan_cache[1]

    def _mix(self, x: torch.Tensor, w: torch.Tensor, shared: dict) -> torch.Tensor:
        out = None
        for i, key, first, segments, bn in self._plan():
            h = x
            if first is not None:
                if key not in shared:
                    shared[key] = grad_in_layout(first(x))
                h = shared[key]
            for segment, recomputable in segments:
                if recomputable and self.recompute and torch.is_grad_enabled():
                    h = Recomputed.apply(segment, h, *[t for layer in segment for t in _tensors(layer)])
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


def edge_scale_key(cell: str) -> str:
    """Key of the optional per-edge factor on the bypassed channels in a supernet's weights dict
    (PC-DARTS' edge normalisation; see ``MixedOp.partial``)."""
    return f"{cell}.edge_scale"


def node_sum(edges: Sequence[MixedOp], inputs: Sequence[torch.Tensor], weights: torch.Tensor,
             shared: Sequence[dict], scale: torch.Tensor | None = None) -> torch.Tensor:
    """One supernet node: ``sum_j edges[j](inputs[j], weights[j], shared[j], scale[j])``.

    With partial channels every edge ends in the same cat and channel shuffle, both linear, so the
    node is ``shuffle(cat[sum_j ya_j, sum_j yb_j])``: one cat and one shuffle per node instead of one
    per edge, with the same sums in the same order.
    """
    k = edges[0].k
    if k == 1 or any(e.k != k for e in edges):
        s = edges[0](inputs[0], weights[0], shared[0], None if scale is None else scale[0])
        for j in range(1, len(edges)):
            s = s.add_(edges[j](inputs[j], weights[j], shared[j], None if scale is None else scale[j]))  # fresh
        return s
    sa = sb = None
    for j, edge in enumerate(edges):
        ya, yb = edge.partial(inputs[j], weights[j], shared[j], None if scale is None else scale[j])
        sa = ya if sa is None else sa.add_(ya)  # ya: a fresh sum nobody saved
        sb = yb if sb is None else sb + yb  # yb may be a view of the input
    return channel_shuffle(torch.cat([grad_in_layout(sa), sb], dim=1), k)


def _segments(chain: list[Callable]) -> list[tuple[list[Callable], bool]]:
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


#: layers ``Recomputed`` can re-run from captured tensors (see ``_tensors`` / ``_rerun``)
FUNCTIONAL = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)


def _tensors(layer: nn.Module) -> list[torch.Tensor]:
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
        ctx.layers, ctx.counts, ctx.stats = layers, [len(_tensors(m)) for m in layers], []
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
                               "search_spaces.mixed.recompute_off(net) or with recompute=never")
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


def set_recompute(net: nn.Module, on: bool) -> None:
    """Trade compute for memory in every mixed op of ``net`` (see ``_segments``)."""
    for m in net.modules():
        if isinstance(m, MixedOp):
            m.recompute = on


@contextlib.contextmanager
def recompute_off(net: nn.Module) -> Iterator[None]:
    """Keep every intermediate while inside (for double backward, which ``Recomputed`` lacks)."""
    ops = [m for m in net.modules() if isinstance(m, MixedOp)]
    before = [m.recompute for m in ops]
    try:
        for m in ops:
            m.recompute = False
        yield
    finally:
        for m, on in zip(ops, before):
            m.recompute = on


#: parameter-free layers that may open an op; computed once per node input and shared
SHAREABLE = (nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Identity)


def _describe(layer: nn.Module) -> tuple:
    """A key equal for two layers exactly when they compute the same function (type + settings)."""
    return (type(layer), *((k, v) for k, v in vars(layer).items() if not k.startswith("_") and k != "training"))
