"""DARTS CNN space and RobustDARTS S1-S4: supernet forward/backward, derivation, genotype text/JSON."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from search_spaces.darts import (
    DARTS_V2,
    EDGES,
    PRIMITIVES,
    DartsSupernet,
    Genotype,
    GenotypeError,
    MixedOp,
    derive,
    format_genotype,
    genotype_stats,
    genotype_to_json,
    parse_genotype,
    validate_genotype,
)
from search_spaces.fast import accelerate
from search_spaces.nb201 import GenotypeError as NB201GenotypeError
from search_spaces.ops import OPS
from search_spaces.robust_darts import SPACES, make_supernet

V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
           "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
           "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
           "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
ROW = {e: r for r, e in enumerate(EDGES)}  # (from, to) -> alpha row


def _net(space: str, **kw) -> DartsSupernet:
    return DartsSupernet(C=4, layers=3, **kw) if space == "darts" else make_supernet(space, C=4, layers=3, **kw)


def _softmax(net: DartsSupernet) -> dict[str, torch.Tensor]:
    return {k: torch.softmax(a, dim=-1) for k, a in net.alphas.items()}


@pytest.mark.parametrize("space", ["darts", "s1", "s2", "s3", "s4"])
def test_forward_backward_reaches_alphas(space: str) -> None:
    torch.manual_seed(0)
    net = _net(space)
    n_ops = 8 if space == "darts" else len(SPACES[space]["normal"][0])
    assert {k: tuple(a.shape) for k, a in net.alphas.items()} == {"normal": (14, n_ops), "reduce": (14, n_ops)}
    assert net.space == space
    logits, features = net(torch.randn(2, 3, 8, 8), _softmax(net), return_features=True)
    assert logits.shape == (2, 10)
    assert features.shape == (2, 4 * 16, 2, 2)  # 4 nodes x 4C channels after two reductions
    logits.square().mean().backward()
    for a in net.alphas.values():
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert net.stem[0].weight.grad is not None


def test_forward_rejects_wrong_weight_shape() -> None:
    net = _net("s2")
    with pytest.raises(ValueError, match="expected"):
        net(torch.randn(2, 3, 8, 8), {"normal": torch.ones(14, 3), "reduce": torch.ones(14, 2)})


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_mixed_op_equals_the_reference_sum(stride: int, affine: bool) -> None:
    """Skipping ``none``, sharing the input's ReLU/pooling across edges and folding w into the last BN
    compute the reference ``sum_k w_k * op_k(x)`` (``none`` included), gradients and BN statistics too."""
    torch.manual_seed(0)
    op = MixedOp(4, stride, PRIMITIVES, affine=affine, track=True, pool_bn=True).double()
    ref = copy.deepcopy(op)
    accelerate(op)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(8, dtype=torch.float64), 0).requires_grad_()
    shared: dict = {}
    ours = op(x, w, shared=shared) + op(x, w.flip(0), shared=shared)  # a second edge leaving the same node
    full = sum(w[k] * m(x) for k, m in enumerate(ref.ops)) + sum(w.flip(0)[k] * m(x) for k, m in enumerate(ref.ops))
    torch.testing.assert_close(ours, full)
    g = torch.randn_like(ours)
    ga = torch.autograd.grad(ours, [x, w, *op.parameters()], g)
    gb = torch.autograd.grad(full, [x, w, *ref.parameters()], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)
    for (name, a), (_, b) in zip(op.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_edge_names_and_ops() -> None:
    net = _net("darts")
    names = net.edge_names()["normal"]
    assert names[:6] == ["0->2", "1->2", "0->3", "1->3", "2->3", "0->4"] and names[-1] == "4->5"
    assert len(names) == 14 and net.edge_names()["reduce"] == names
    assert net.edge_ops() == {"normal": [PRIMITIVES] * 14, "reduce": [PRIMITIVES] * 14}
    assert _net("s1").edge_ops() == SPACES["s1"]


def _weights(entries: dict[int, dict[str, float]], ops: tuple[str, ...] = PRIMITIVES) -> torch.Tensor:
    w = torch.full((14, len(ops)), 0.01)
    for row, vals in entries.items():
        for op, v in vals.items():
            w[row, ops.index(op)] = v
    return w


def test_derive_top2_ignores_none() -> None:
    w = _weights({
        0: {"none": 0.9, "sep_conv_3x3": 0.05}, 1: {"skip_connect": 0.3},           # node 2
        2: {"none": 0.99}, 3: {"dil_conv_3x3": 0.4}, 4: {"max_pool_3x3": 0.3},      # node 3: none must not win
        5: {"avg_pool_3x3": 0.5}, 8: {"sep_conv_5x5": 0.6},                          # node 4
        9: {"dil_conv_5x5": 0.65}, 12: {"skip_connect": 0.7}, 13: {"none": 0.99, "sep_conv_3x3": 0.1},  # node 5
    })
    g = derive(w, w.flip(0), {"normal": [PRIMITIVES] * 14, "reduce": [PRIMITIVES] * 14})
    assert g.normal == [("skip_connect", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("max_pool_3x3", 2),
                        ("sep_conv_5x5", 3), ("avg_pool_3x3", 0), ("skip_connect", 3), ("dil_conv_5x5", 0)]
    assert g.normal_concat == g.reduce_concat == [2, 3, 4, 5]
    validate_genotype(g)


def test_derive_looks_up_none_by_global_edge() -> None:
    # rows 0-1 lack `none`; RobustDARTS's node-local lookup would then rank node 3 with `none` included
    ops = [("skip_connect", "sep_conv_3x3")] * 2 + [("none", "sep_conv_3x3")] * 12
    w = torch.full((14, 2), 0.01)
    w[2] = torch.tensor([0.9, 0.05])
    w[3] = torch.tensor([0.1, 0.3])
    w[4] = torch.tensor([0.1, 0.2])
    g = derive(w, w, {"normal": ops, "reduce": ops})
    assert g.normal[2:4] == [("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]


def test_supernet_derive_matches_function() -> None:
    torch.manual_seed(1)
    net = _net("darts")
    w = _softmax(net)
    g = net.derive(w)
    assert g == derive(w["normal"], w["reduce"], net.edge_ops())
    assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_s1_derived_ops_are_allowed_per_edge() -> None:
    net = _net("s1")
    for seed in range(5):
        torch.manual_seed(seed)
        w = {k: torch.softmax(3 * torch.randn_like(a), -1) for k, a in net.alphas.items()}
        g = net.derive(w)
        for cell in ("normal", "reduce"):
            for i, (op, j) in enumerate(getattr(g, cell)):
                assert op in SPACES["s1"][cell][ROW[(j, i // 2 + 2)]]
        assert validate_genotype(g, ops=SPACES["s1"]) == g
    bad = g._replace(normal=[("sep_conv_5x5", 0)] + g.normal[1:])
    with pytest.raises(GenotypeError, match="not allowed on edge 0->2.*valid there"):
        validate_genotype(bad, ops=SPACES["s1"])


def test_s4_noise_changes_between_forwards() -> None:
    torch.manual_seed(0)
    net = _net("s4").eval()
    x, w = torch.randn(2, 3, 8, 8), _softmax(net)
    with torch.no_grad():
        assert not torch.equal(net(x, w), net(x, w))
    det = _net("s2").eval()
    with torch.no_grad():
        assert torch.equal(det(x, _softmax(det)), det(x, _softmax(det)))


def test_parse_format_round_trip() -> None:
    assert parse_genotype(V2_TEXT) == DARTS_V2
    assert format_genotype(DARTS_V2) == V2_TEXT == str(DARTS_V2)
    ranged = V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert "range" in ranged and parse_genotype(ranged) == DARTS_V2
    as_json = json.dumps(genotype_to_json(DARTS_V2))
    assert json.loads(as_json)["normal"][0] == ["sep_conv_3x3", 0]
    assert parse_genotype(as_json) == DARTS_V2
    assert parse_genotype(genotype_to_json(DARTS_V2)) == DARTS_V2
    # the str() of a freshly derived genotype (concat as a range object) parses back too
    live = Genotype(DARTS_V2.normal, range(2, 6), DARTS_V2.reduce, range(2, 6))
    assert parse_genotype(str(live)) == DARTS_V2 and format_genotype(live) == V2_TEXT


@pytest.mark.parametrize("text, match", [
    (V2_TEXT.replace("'dil_conv_3x3', 2", "'sep_conv_9x9', 2"), r"unknown op 'sep_conv_9x9'; valid: none, max_pool"),
    (V2_TEXT.replace("('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 2), ('sep_conv_3x3', 0)", 1),
     r"node 2\).*input 2 out of range; node 2 may only take inputs 0..1"),
    (V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), r"node 5 may only take inputs 0..4"),
    (V2_TEXT.replace(", ('dil_conv_3x3', 2)]", "]"), r"normal cell needs 8 .*got 7"),
    (V2_TEXT.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 9]"), r"reduce_concat must list"),
    (V2_TEXT.replace(", reduce_concat=[2, 3, 4, 5]", ""), r"misses reduce_concat"),
    (V2_TEXT.replace("('skip_connect', 0)", "('skip_connect', '0')", 1), r"expected an \(op name, input index\)"),
    ("Genotype(normal=__import__('os').system('true'), normal_concat=[2], reduce=[], reduce_concat=[2])",
     r"only literals"),
    ("sep_conv_3x3 on everything", r"expected 'Genotype\("),
    ('{"normal": [["sep_conv_3x3", 0]', r"invalid genotype JSON"),
])
def test_bad_genotypes_raise_helpful_errors(text: str, match: str) -> None:
    with pytest.raises(GenotypeError, match=match):
        parse_genotype(text)


def test_one_genotype_error_class() -> None:
    assert GenotypeError is NB201GenotypeError


def test_ops_allow_list() -> None:
    s4 = DARTS_V2._replace(normal=[("noise", j) for _, j in DARTS_V2.normal],
                           reduce=[("sep_conv_3x3", j) for _, j in DARTS_V2.reduce])
    with pytest.raises(GenotypeError, match="unknown op 'noise'"):
        validate_genotype(s4)
    assert validate_genotype(s4, ops=SPACES["s4"]) == s4
    with pytest.raises(GenotypeError, match="not allowed"):
        validate_genotype(DARTS_V2, ops=SPACES["s2"])


def test_genotype_stats() -> None:
    assert genotype_stats(DARTS_V2) == {"skip_count": 2, "param_free_count": 2,
                                        "skip_count_reduce": 3, "param_free_count_reduce": 8}


def test_bad_edge_ops_rejected() -> None:
    ragged = {"normal": [("skip_connect", "sep_conv_3x3")] * 13 + [("skip_connect",)],
              "reduce": SPACES["s2"]["reduce"]}
    with pytest.raises(ValueError, match="equal length"):
        DartsSupernet(C=4, layers=3, edge_ops=ragged)
    with pytest.raises(ValueError, match="unknown ops"):
        DartsSupernet(C=4, layers=3, edge_ops={c: [("skip_connect", "conv_9x9")] * 14 for c in ("normal", "reduce")})
    with pytest.raises(KeyError, match="valid: s1, s2, s3, s4"):
        make_supernet("s7")


def test_darts_supernet_parameter_count() -> None:
    """quark0/darts ``Network(16, 10, 8)`` holds 1,930,618 weights (alphas are not parameters there).

    Verified by building the reference model_search.Network and copying its state into this supernet:
    identical tensor shapes in the same order and identical logits and genotype.
    """
    net = DartsSupernet(C=16, layers=8, num_classes=10)
    weights = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("alphas."))
    assert weights == 1_930_618
    assert sum(a.numel() for a in net.alphas.values()) == 2 * 14 * 8
    assert all(name in OPS for names in net.edge_ops()["normal"] for name in names)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [12, 11, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_polyphase_dilated_conv_equals_the_dilated_conv(k, stride, size, channels_last):
    """DepthwiseConv2d (dil_conv's depthwise conv) = conv2d with dilation 2, values and gradients."""
    from search_spaces.fast import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 6, k, stride, k - 1, dilation=2, groups=6, bias=False).double()
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = conv(x)
    ref = torch.nn.functional.conv2d(x, conv.weight, None, stride, k - 1, 2, 6)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, [x, conv.weight], g), torch.autograd.grad(ref, [x, conv.weight], g)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_depthwise_conv_column_blocked_weight_gradient(k, stride, dtype):
    """Wide depthwise kernels get their weight gradient from 3-wide column blocks: equal to conv2d's,
    input gradient too, and twice differentiable (the Hessian probe needs it)."""
    from search_spaces.fast import DepthwiseConv2d

    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-4}  # float32: summation order
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 6, k, stride, k // 2, groups=6, bias=False).to(dtype)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(3, 6, 9, 10, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    ref = torch.nn.functional.conv2d(x, conv.weight, None, stride, k // 2, 1, 6)
    torch.testing.assert_close(y, ref)
    assert (y.grad_fn is not None and type(y.grad_fn).__name__ == "_ColumnBlockedBackward") == (k > 3 and stride == 1)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, [x, conv.weight], g, retain_graph=True),
                    torch.autograd.grad(ref, [x, conv.weight], g, retain_graph=True)):
        torch.testing.assert_close(a, b, **tol)
    gx, gw = torch.autograd.grad(y.square().sum(), [x, conv.weight], create_graph=True)
    rx, rw = torch.autograd.grad(ref.square().sum(), [x, conv.weight], create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(gw.sum() + gx.sum(), conv.weight),
                               torch.autograd.grad(rw.sum() + rx.sum(), conv.weight), **tol)
