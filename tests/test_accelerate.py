"""The contract between the reference model code and the speed layer: ``accelerate`` keeps the state
dict and computes the same outputs and gradients (float64), in every space, with partial channels on
and off, in either memory layout, with recomputation on and off."""

import copy

import pytest
import torch
import torch.nn.functional as F

from search_spaces import build_supernet
from search_spaces.darts import DartsSupernet
from search_spaces.fast import FastMixedOp, accelerate
from search_spaces.mixed import MixedOp, edge_scale_key
from search_spaces.nb201 import NB201Network, parse_genotype

#: (space, partial channels K, channels_last + recompute). NB201 every way; the DARTS family (slow in float64
#: on a CPU: the reference's grouped convs take the generic kernel) in channels-last with recomputation, where
#: most of the speed layer is at work, and DARTS also in NCHW without
CASES = [("nb201", 1, False), ("nb201", 2, False), ("nb201", 1, True), ("nb201", 2, True), ("darts", 1, False),
         *((space, k, True) for space in ("darts", "s1", "s2", "s3", "s4") for k in (1, 2))]


def _pair(space: str, k: int, channels_last: bool, recompute: bool):
    torch.manual_seed(0)
    ref = build_supernet(space, C=4, layers=1 if space == "nb201" else 3, num_classes=3, partial_k=k).double()
    if channels_last:
        ref = ref.to(memory_format=torch.channels_last)
    fast = accelerate(copy.deepcopy(ref), recompute=recompute)
    return ref, fast


def _weights(net, k: int) -> dict[str, torch.Tensor]:
    weights = {key: torch.softmax(a, -1) for key, a in net.alphas.items()}
    if k > 1:  # PC-DARTS' edge normalisation also scales the bypassed channels
        for key, targets in net.targets.items():
            weights[edge_scale_key(key)] = torch.linspace(0.5, 1.5, len(targets), dtype=torch.float64)
    return weights


def _run(net, k: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # the same noise (S4) in both nets
    logits = net(x, _weights(net, k))
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(params.values()), allow_unused=True)
    return logits, {name: g for name, g in zip(params, grads) if g is not None}


@pytest.mark.parametrize("space, k, channels_last", CASES)
def test_accelerated_supernet_equals_the_reference(space: str, k: int, channels_last: bool) -> None:
    recompute = channels_last
    ref, fast = _pair(space, k, channels_last, recompute)
    assert any(isinstance(m, MixedOp) for m in ref.modules())
    assert not any(isinstance(m, FastMixedOp) for m in ref.modules())
    assert all(isinstance(m, FastMixedOp) and m.recompute == recompute for m in fast.modules()
               if isinstance(m, MixedOp))
    sa, sb = ref.state_dict(), fast.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].shape == sb[name].shape and torch.equal(sa[name], sb[name]), name

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 2])
    out_ref, grads_ref = _run(ref, k, x, y)
    out_fast, grads_fast = _run(fast, k, x, y)
    torch.testing.assert_close(out_fast, out_ref)
    assert set(grads_fast) == set(grads_ref) and any(name.startswith("alphas.") for name in grads_ref)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads_fast[name], g, msg=name)
    for name, b in ref.state_dict().items():  # BN running statistics, updated once each
        torch.testing.assert_close(fast.state_dict()[name], b, msg=name)


def test_accelerate_keeps_parameters_and_is_idempotent() -> None:
    torch.manual_seed(0)
    net = DartsSupernet(C=4, layers=3)
    params = [id(p) for p in net.parameters()]
    assert accelerate(net) is net and [id(p) for p in net.parameters()] == params
    kinds = [type(m) for m in net.modules()]
    accelerate(net, recompute=True)
    assert [type(m) for m in net.modules()] == kinds
    assert all(m.recompute for m in net.modules() if isinstance(m, FastMixedOp))
    assert type(net.stem[1]) is torch.nn.BatchNorm2d  # only the candidate ops' BNs change


def test_widened_ops_are_fast_too() -> None:
    torch.manual_seed(0)
    op = accelerate(MixedOp(8, 1, ("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3"), False, True, pool_bn=True,
                            partial_k=4))
    op.widen(2, torch.Generator().manual_seed(0))
    fresh = accelerate(copy.deepcopy(op))
    assert [type(m) for m in op.modules()] == [type(m) for m in fresh.modules()]


def test_accelerated_evaluation_network_equals_the_reference() -> None:
    g = parse_genotype("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")
    torch.manual_seed(0)
    ref = NB201Network(g, C=4, N=1, num_classes=3).double()
    fast = accelerate(copy.deepcopy(ref))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a, b = ref(x), fast(x)
    torch.testing.assert_close(b, a)
    ga = torch.autograd.grad(a.sum(), list(ref.parameters()))
    gb = torch.autograd.grad(b.sum(), list(fast.parameters()))
    for p, q in zip(ga, gb):
        torch.testing.assert_close(q, p)
