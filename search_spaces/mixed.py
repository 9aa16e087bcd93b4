"""The mixed operation of one supernet edge, shared by every space (the reference form).

``sum_o w_o * o(x)`` over the edge's candidate ops (DARTS ``model_search.MixedOp``), with the options
the variants need: partial channels (PC-DARTS: only the first C/K channels enter the ops, the rest
bypass them and a channel shuffle mixes the two), pruning and widening (DrNAS' progressive stages) and
drop-path on op outputs (RobustDARTS). :mod:`search_spaces.fast` computes the same sums faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.ops import OPS, Zero


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


def edge_scale_key(cell: str) -> str:
    """Key of the optional per-edge factor on the bypassed channels in a supernet's weights dict
    (PC-DARTS' edge normalisation; see ``MixedOp.partial``)."""
    return f"{cell}.edge_scale"


class MixedOp(nn.Module):
    """Weighted sum of an edge's candidate ops.

    ``none`` and pruned ops are left out of the sum: their output is zero, so neither the value nor
    any gradient changes (alpha still sees them through its normalisation). ``pool_bn`` appends a
    non-affine BN to pooling ops, as the DARTS search network does.
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

    def make_op(self, name: str, C: int) -> nn.Module:
        op = OPS[name](C, C, self.stride, self.affine, self.track)
        if self.pool_bn and "pool" in name:
            op = nn.Sequential(op, nn.BatchNorm2d(C, affine=self.affine, track_running_stats=self.track))
        return op

    def forward(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_o w_o * o(x)``; with partial channels ``shuffle(cat[that sum on x[:C/K], x[C/K:]])``."""
        if self.k == 1:
            return self.mix(x, w)
        return channel_shuffle(torch.cat(self.partial(x, w, scale), dim=1), self.k)

    def mix(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``sum_o w_o * o(x)`` over the ops still in the race, drop-path on each op's output."""
        terms = []
        for i in self.active:
            y = self.ops[i](x)
            if self.training and self.drop_prob > 0 and not isinstance(self.ops[i], nn.Identity):
                y = drop_path(y, self.drop_prob)
            terms.append(w[i] * y)
        return sum(terms[1:], terms[0]) if terms else x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def partial(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Partial channels before the cat and shuffle: (ops on the first C/K channels, the rest).

        The rest bypasses the ops (max-pooled on reduction edges) and is multiplied by ``scale``
        when given: PC-DARTS' edge normalisation scales the whole edge, and only its factor on the
        ops' part can ride in ``w``.
        """
        part = self.C // self.k
        ya = self.mix(x[:, :part], w)
        yb = x[:, part:] if self.stride == 1 else F.max_pool2d(x[:, part:], 2, 2)
        return ya, yb if scale is None else yb * scale

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
