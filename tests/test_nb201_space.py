"""NAS-Bench-201 space: genotype strings, derivation, supernet size and gradients."""

import pytest
import torch
import torch.nn.functional as F

from search_spaces import nb201
from search_spaces.fast import accelerate


def test_round_trip_all_15625_cells():
    genotypes = nb201.all_genotypes()
    assert len(genotypes) == 15_625 == len({g.ops for g in genotypes})
    for g in genotypes:
        assert nb201.parse_genotype(nb201.format_genotype(g)) == g


def test_official_string_format():
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    g = nb201.parse_genotype(text)
    assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3",
                     "skip_connect")
    assert str(g) == text
    assert nb201.genotype_stats(g) == {"skip_count": 2, "param_free_count": 3}


@pytest.mark.parametrize("bad, fragment", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 '\\+'-separated nodes"),
    ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "expected"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "needs 2 incoming edges"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be written"),
])
def test_bad_strings_are_rejected(bad, fragment):
    with pytest.raises(nb201.GenotypeError, match=fragment):
        nb201.parse_genotype(bad)


def test_supernet_matches_reference_size():
    net = nb201.NB201Supernet(C=16, N=5, num_classes=10)
    weights = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("alphas."))
    assert weights == 1_692_826  # xautodl TinyNetworkDarts, affine=False, track_running_stats=True
    assert sum(a.numel() for a in net.alphas.values()) == 30


def test_derivation_is_argmax_per_edge_including_none():
    w = torch.zeros(6, 5)
    choice = [0, 3, 1, 4, 2, 3]
    for e, k in enumerate(choice):
        w[e, k] = 1.0
    g = nb201.derive(w)
    assert g.ops == tuple(nb201.OPS_NB201[k] for k in choice)
    assert g.ops[0] == "none"


def _tiny(**kw):
    torch.manual_seed(0)
    return nb201.NB201Supernet(C=4, N=1, num_classes=3, **kw)


def test_gradients_reach_alpha_and_weights():
    net = _tiny()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(net(x, {"cell": F.softmax(net.alphas["cell"], -1)}), y)
    loss.backward()
    assert net.alphas["cell"].grad is not None and net.alphas["cell"].grad.abs().sum() > 0
    conv = net.cells[0].edges[0].ops[3][1].weight  # nor_conv_3x3 of edge 1<-0
    assert conv.grad is not None and conv.grad.abs().sum() > 0


def test_skipping_none_is_exact():
    """The supernet never computes the zero op; the output equals the explicit weighted sum."""
    net = _tiny()
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    w = F.softmax(torch.randn(6, 5), -1)
    edge = net.cells[0].edges[0]
    explicit = sum(op(net.stem(x)) * w[0, k] for k, op in enumerate(edge.ops))
    torch.testing.assert_close(edge(net.stem(x), w[0]), explicit)


def test_eval_network_forward_backward():
    g = nb201.parse_genotype("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    net = nb201.NB201Network(g, C=4, N=1, num_classes=5)
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5)
    out.sum().backward()


def test_cell_pools_and_rectifies_each_node_input_once():
    """The edges leaving a node share its ReLU and its pooling: 3 of each per cell, not 6 pools and 12 ReLUs."""
    cell = accelerate(nb201.SearchCell(8, nb201.OPS_NB201, affine=False, track=True))
    calls = {"pool": 0, "relu": 0}
    for m in cell.modules():
        if isinstance(m, torch.nn.AvgPool2d):
            m.register_forward_hook(lambda *_: calls.__setitem__("pool", calls["pool"] + 1))
        if isinstance(m, torch.nn.ReLU):
            m.register_forward_hook(lambda *_: calls.__setitem__("relu", calls["relu"] + 1))
    cell(torch.randn(2, 8, 6, 6), F.softmax(torch.randn(6, 5), -1))
    assert calls == {"pool": 3, "relu": 3}
