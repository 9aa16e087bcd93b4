"""Memory work on the supernet: recomputed separable-conv segments and layout-kept gradients compute
the same numbers as the plain modules, keep less for backward, and respect ``functional_call``."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from raynas.config import resolve
from raynas.data import load_dataset
from search_spaces.darts import PRIMITIVES, DartsSupernet
from search_spaces.fast import (accelerate, grad_in_layout, polyphase_merge, polyphase_split, recompute_off,
                                set_recompute)
from search_spaces.mixed import MixedOp
from trials.bilevel import Search


def _pair(names, affine: bool, stride: int = 1, C: int = 4) -> tuple[MixedOp, MixedOp]:
    torch.manual_seed(0)
    plain = accelerate(MixedOp(C, stride, names, affine=affine, track=True, pool_bn=True).double())
    rec = copy.deepcopy(plain)
    rec.recompute = True
    return plain, rec


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_recomputed_mixed_op_equals_the_plain_one(training: bool, affine: bool, stride: int) -> None:
    """Values, gradients of x, w and every weight, and BN running statistics (updated once) are equal."""
    plain, rec = _pair(PRIMITIVES, affine, stride)
    for m in (plain, rec):
        m.train(training)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(8, dtype=torch.float64), 0).requires_grad_()
    ya, yb = plain(x, w), rec(x, w)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [x, w, *plain.parameters()], g)
    gb = torch.autograd.grad(yb, [x, w, *rec.parameters()], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)
    for (name, a), (_, b) in zip(plain.state_dict().items(), rec.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _saved_activations(op: MixedOp, x: torch.Tensor, w: torch.Tensor) -> int:
    """Distinct storages of x's size kept for backward by one forward."""
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == x.numel():
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        op(x, w)
    return len(seen)


@pytest.mark.parametrize("name, plain_count, recomputed_count", [
    ("sep_conv_3x3", 6, 3),  # ReLU out, dw1 out, pw1 out, inner ReLU out, dw2 out, pw2 out -> ReLU, pw1, pw2
    ("dil_conv_3x3", 4, 2),  # ReLU out, polyphase parts, dw out (merged), pw out -> ReLU out, pw out
])
def test_recomputation_keeps_only_segment_inputs(name: str, plain_count: int, recomputed_count: int) -> None:
    plain, rec = _pair([name], affine=False, C=8)
    x = torch.randn(4, 8, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    assert _saved_activations(plain, x, w) == plain_count
    assert _saved_activations(rec, x, w) == recomputed_count


def test_recompute_uses_the_substituted_parameters_after_functional_call_ends() -> None:
    """DARTS' second order runs the supernet under ``functional_call``; the backward runs after the call
    has restored the module's own weights, so the recomputation must use the ones captured in forward."""
    torch.manual_seed(0)
    net = accelerate(DartsSupernet(C=4, layers=3).double())
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([1, 3])
    weights = {k: torch.softmax(a, -1) for k, a in net.alphas.items()}
    subst = {n: (p.detach() + 0.1 * torch.randn_like(p)).requires_grad_() for n, p in net.named_parameters()
             if not n.startswith("alphas")}

    def grads(on: bool) -> tuple[torch.Tensor, ...]:
        set_recompute(net, on)
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        loss = F.cross_entropy(functional_call(net, {**subst, **buffers}, (x, weights)), y)
        return torch.autograd.grad(loss, list(subst.values()))

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b)


def test_recomputed_segments_refuse_double_backward_and_can_be_switched_off() -> None:
    torch.manual_seed(0)
    net = accelerate(DartsSupernet(C=4, layers=3).double())
    set_recompute(net, True)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)

    def hessian_row() -> torch.Tensor:
        loss = net(x, {k: torch.softmax(a, -1) for k, a in net.alphas.items()}).square().mean()
        (g,) = torch.autograd.grad(loss, [net.alphas["normal"]], create_graph=True)
        return torch.autograd.grad(g[0, 0], [net.alphas["normal"]])[0]

    with pytest.raises(RuntimeError, match="not twice differentiable"):
        hessian_row()
    with recompute_off(net):
        row = hessian_row()
    assert torch.isfinite(row).all() and row.abs().sum() > 0
    assert all(m.recompute for m in net.modules() if isinstance(m, MixedOp))  # restored


@pytest.mark.parametrize("channels_last", [False, True])
def test_polyphase_split_and_merge_are_inverse_and_keep_the_layout(channels_last: bool) -> None:
    x = torch.randn(3, 5, 8, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    parts = polyphase_split(x, 2)
    assert parts.shape == (12, 5, 4, 3)
    for a in range(2):
        for b in range(2):  # part-major: part (a, b) holds rows a::2, columns b::2 of every image
            torch.testing.assert_close(parts[(2 * a + b) * 3:(2 * a + b + 1) * 3], x[:, :, a::2, b::2], rtol=0, atol=0)
    assert parts.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(polyphase_merge(parts, 2), x, rtol=0, atol=0)


def test_gradients_reach_a_cat_input_in_its_own_layout() -> None:
    """A channel ``cat`` hands back strided slices; ``grad_in_layout`` makes them dense channels-last."""
    seen = {}
    a = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    for guard in (False, True):
        h = a * 1.0
        if guard:
            h = grad_in_layout(h)
        h.register_hook(lambda g, guard=guard: seen.__setitem__(guard, g))
        out = torch.cat([h, torch.ones_like(h)], dim=1).contiguous(memory_format=torch.channels_last)
        out.backward(g)
    assert not seen[False].is_contiguous(memory_format=torch.channels_last)
    assert seen[True].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(seen[True], seen[False], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["darts", "darts2", "rfdarts"])
def test_search_with_recomputation_matches_the_search_without(method: str) -> None:
    """Two epochs on digits in the DARTS space: alpha and weights agree (float tolerance) either way;
    the default on a CPU is to recompute."""
    data = load_dataset("digits")
    base = {"dataset": "digits", "space": "darts", "method": method, "batch_size": 16, "max_steps_per_epoch": 2,
            "eval_batches": 1, "device": "cpu", "epochs": 2, "model": {"C": 4, "layers": 3}}
    runs = {}
    for mode in ("never", "always", "auto"):
        s = Search(resolve({**copy.deepcopy(base), "recompute": mode}), data)
        assert any(isinstance(m, MixedOp) for m in s.net.modules())
        assert all(m.recompute == (mode != "never") for m in s.net.modules() if isinstance(m, MixedOp))
        if mode == "auto":  # = always on a CPU (the flags above): the same search, not run a third time
            break
        for _ in range(2):
            s.run_epoch()
        runs[mode] = s.net.state_dict()
    for name, a in runs["never"].items():
        torch.testing.assert_close(runs["always"][name], a, rtol=1e-4, atol=1e-5, msg=name)


def test_separable_convs_are_cut_into_recomputable_segments() -> None:
    """The separable conv's two segments are what gets recomputed (and nothing for pools or skips)."""
    op = accelerate(MixedOp(4, 1, PRIMITIVES, affine=False, track=True, pool_bn=True))
    plan = {op.names[i]: [r for _, r in segments] for i, _, _, segments, _ in op._plan()}
    assert plan["sep_conv_3x3"] == [True, True] and plan["dil_conv_5x5"] == [True]
    assert plan["max_pool_3x3"] == [] and plan["skip_connect"] == []
