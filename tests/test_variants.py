"""Each variant's mechanism, on tiny supernets (CPU)."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from raynas.config import resolve
from raynas.data import load_dataset
from search_spaces.mixed import MixedOp, channel_shuffle
from search_spaces.nb201 import OPS_NB201
from trials import build_method, pieces
from trials.alphadarts import MaskedImageModelling, patch_mask
from trials.bilevel import Search
from trials.drnas import Dirichlet, Progressive
from trials.pcdarts import EdgeNormalisation
from trials.rfdarts import RandomFeatures


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def cfg(**over):
    base = {"dataset": "digits", "batch_size": 16, "max_steps_per_epoch": 2, "eval_batches": 1, "device": "cpu",
            "epochs": 2, "model": {"C": 8, "layers": 1}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return resolve(copy.deepcopy(base))


def batches(s):
    x, y = next(iter(s.w_stream.epoch(s.generator(0))))
    xa, ya = next(iter(s.a_stream.epoch(s.generator(1))))
    return x, y, xa, ya


# ------------------------------------------------------------------------------------------ PC-DARTS
def test_partial_channels_feed_only_c_over_k_channels():
    op = MixedOp(16, 1, OPS_NB201, affine=False, track=True, partial_k=4)
    seen = []
    for m in op.ops.modules():
        if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.Identity)):
            m.register_forward_pre_hook(lambda mod, args: seen.append((type(mod).__name__, args[0].shape[1])))
    op(torch.randn(2, 16, 8, 8), F.softmax(torch.randn(5), -1))
    assert sorted(seen) == [("AvgPool2d", 4), ("Conv2d", 4), ("Conv2d", 4), ("Identity", 4)]


@pytest.mark.parametrize("stride", [1, 2])
def test_bypassed_channels_pass_unchanged_up_to_the_shuffle(stride):
    op = MixedOp(16, stride, ("max_pool_3x3", "sep_conv_3x3"), affine=False, track=True, pool_bn=True, partial_k=4)
    x = torch.randn(2, 16, 8, 8)
    out = op(x, torch.tensor([0.3, 0.7]))
    unshuffled = channel_shuffle(out, 16 // 4)  # the inverse of a K-group shuffle of 16 channels
    bypass = x[:, 4:] if stride == 1 else F.max_pool2d(x[:, 4:], 2, 2)
    assert torch.equal(unshuffled[:, 4:], bypass)


def test_partial_channels_cut_op_flops_by_at_least_k():
    x, w = torch.randn(2, 16, 16, 16), F.softmax(torch.randn(5), -1)

    def flops(k):
        op = MixedOp(16, 1, OPS_NB201, affine=False, track=True, partial_k=k)
        with FlopCounterMode(display=False) as counter:
            op(x, w)
        return counter.get_total_flops()

    assert flops(1) / flops(4) >= 4


def test_edge_normalisation_beta_gets_gradients_and_reorders_edges(digits):
    s = Search(cfg(method="pcdarts", space="darts", model={"C": 8, "layers": 3}, arch={"warmup_epochs": 0}), digits)
    assert isinstance(s.method, EdgeNormalisation)
    beta = s.net.arch_extra["beta_normal"]
    x, y, xa, ya = batches(s)
    s.method.arch_step(s.step_context(), x, y, xa, ya)
    assert beta.grad is not None and beta.grad.abs().sum() > 0
    with torch.no_grad():  # node 3 takes rows 2 (0->3), 3 (1->3), 4 (2->3); equal alphas, beta decides
        s.net.alphas["normal"].zero_()
        s.net.alphas["normal"][:, 4] = 1.0  # sep_conv_3x3 everywhere
        beta.zero_()
        beta[2], beta[3] = 2.0, 1.0
    node3 = sorted(src for _, src in s.genotype().normal[2:4])
    assert node3 == [0, 1]
    with torch.no_grad():
        beta[2], beta[4] = -2.0, 3.0
    assert sorted(src for _, src in s.genotype().normal[2:4]) == [1, 2]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_pcdarts_cell_is_the_reference_formula(digits, space):
    """Every node = sum_i softmax(beta)_i * shuffle(cat[sum_o softmax(alpha_i)_o o(x_i[:C/K]), x_i[C/K:]]),
    bypassed channels max-pooled on reduction edges (PC-DARTS model_search.py); beta scales the
    bypassed channels too."""
    s = Search(cfg(method="pcdarts", space=space, model={"C": 8, "layers": 3 if space == "darts" else 1},
                   pc={"k": 2}), digits)
    net = s.net.double()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.alphas.values():
            p.normal_()
    cell = next(c for c in net.cells if c.edges[0].stride == 2) if space == "darts" else net.cells[0]
    kind = ("reduce" if cell.reduction else "normal") if space == "darts" else "cell"
    weights = s.method.edge_weights(net)
    beta = net.arch_extra[f"beta_{kind}"]
    soft_beta = torch.cat([F.softmax(beta[[i for i, t in enumerate(net.targets[kind]) if t == n]], dim=0)
                           for n in sorted(set(net.targets[kind]))])
    torch.testing.assert_close(weights[f"{kind}.edge_scale"], soft_beta)  # targets are grouped by node

    def edge(op, x, alpha):
        part = op.C // op.k
        w = F.softmax(alpha, dim=-1)
        ya = sum(w[o] * op.ops[o](x[:, :part]) for o in op.active)
        yb = x[:, part:] if op.stride == 1 else F.max_pool2d(x[:, part:], 2, 2)
        return channel_shuffle(torch.cat([ya, yb], dim=1), op.k)

    net.eval()  # BN running statistics: the two computations see the same normalisation
    if space == "darts":
        s0, s1 = (torch.randn(2, next(m for m in pre.modules() if isinstance(m, nn.Conv2d)).in_channels, 8, 8,
                              dtype=torch.float64) for pre in (cell.preprocess0, cell.preprocess1))
        out = cell(s0, s1, weights[kind], weights[f"{kind}.edge_scale"])
        states, e = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
        for _ in range(cell.steps):
            states.append(sum(soft_beta[e + j] * edge(cell.edges[e + j], h, net.alphas[kind][e + j])
                              for j, h in enumerate(states)))
            e += len(states) - 1
        ref = torch.cat(states[-cell.multiplier:], dim=1)
    else:
        x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
        out = cell(x, weights[kind], weights[f"{kind}.edge_scale"])
        nodes, e = [x], 0
        for i in range(1, 4):
            nodes.append(sum(soft_beta[e + j] * edge(cell.edges[e + j], nodes[j], net.alphas[kind][e + j])
                             for j in range(i)))
            e += i
        ref = nodes[-1]
    torch.testing.assert_close(out, ref)


def test_pcdarts_evaluates_the_network_it_trains(digits):
    """The evaluation forward gets the edge scales too (the reference's ``infer`` is its training forward)."""
    s = Search(cfg(method="pcdarts", pc={"k": 2}), digits)
    with torch.no_grad():
        for p in s.net.alphas.values():
            p.normal_()
    s.net.eval()
    x = torch.randn(4, 1, 8, 8)
    train = {k: v.detach() for k, v in s.method.edge_weights(s.net).items()}
    torch.testing.assert_close(s.net(x, s.method.eval_weights(s.net)), s.net(x, train))
    assert not torch.allclose(s.net(x, s.method.genotype_weights(s.net)), s.net(x, train))


def test_edge_normalisation_composes_with_dirichlet_weights(digits):
    """``pc.edge_norm`` on DrNAS' sampled weights: beta scales them and receives gradients."""
    s = Search(cfg(method="drnas", pc={"k": 2, "edge_norm": True}), digits)
    assert [p.__name__ for p in pieces(s.cfg)] == ["EdgeNormalisation", "Dirichlet"]
    w = s.method.edge_weights(s.net)
    assert "cell.edge_scale" in w
    torch.testing.assert_close(w["cell"].sum(-1), w["cell.edge_scale"])  # Dirichlet rows sum to 1
    x, y, xa, ya = batches(s)
    s.method.arch_step(s.step_context(), x, y, xa, ya)
    assert s.net.arch_extra["beta_cell"].grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ DrNAS
def test_dirichlet_weights_are_sampled_and_differentiable(digits):
    s = Search(cfg(method="drnas"), digits)
    assert isinstance(s.method, Dirichlet)
    x = torch.randn(4, 1, 8, 8)
    w1, w2 = s.method.edge_weights(s.net), s.method.edge_weights(s.net)
    assert not torch.equal(w1["cell"], w2["cell"])
    s.net.eval()
    assert not torch.allclose(s.net(x, w1), s.net(x, w2))
    s.net.train()
    loss = F.cross_entropy(s.net(x, s.method.edge_weights(s.net)), torch.tensor([0, 1, 2, 3]))
    (g,) = torch.autograd.grad(loss, [s.net.alphas["cell"]])
    assert g.abs().sum() > 0


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_drnas_regulariser_grows_with_concentration(digits, reg):
    s = Search(cfg(method="drnas", drnas={"reg": reg}), digits)
    values = []
    for scale in (0.5, 1.0, 2.0, 4.0):
        with torch.no_grad():
            s.net.alphas["cell"].fill_(scale)
        values.append(float(s.method.regulariser(s.net).detach()))
    assert values == sorted(values) and values[0] < values[-1]


def test_progressive_stage_prunes_weakest_and_widens_keeping_weights(digits):
    c = cfg(method="drnas", space="darts", epochs=2, model={"C": 8, "layers": 3},
            drnas={"ks": [4, 2], "keep_ops": [7, 4], "stage_warmup": 0})
    s = Search(c, digits)
    assert isinstance(s.method, Progressive)
    s.run_epoch()
    alpha = s.net.alphas["normal"].detach().clone()
    _, e, op = next(iter(s.net.mixed_ops()))
    strongest = sorted(alpha[e].topk(4).indices.tolist())
    survivor = strongest[-1]
    old = {n: p.detach().clone() for n, p in op.ops[survivor].named_parameters()}
    assert op.k == 4
    s.method.on_epoch_start(s, 1)
    assert op.k == 2 and op.active == [i for i in strongest if op.names[i] != "none"]
    assert s.method.op_mask["normal"][e].sum() == 4
    for name, p in op.ops[survivor].named_parameters():
        o = old[name]
        assert p.shape[0] >= o.shape[0]
        assert torch.equal(p[tuple(slice(0, n) for n in o.shape)], o), name  # old channels kept
    # the weight optimiser now trains the widened parameters
    trained = {id(p) for g in s.w_opt.param_groups for p in g["params"]}
    assert all(id(p) in trained for p in op.ops[survivor].parameters())
    # pruned ops are never chosen again
    geno_ops = {o for o, _ in s.genotype().normal}
    assert "none" not in geno_ops


def test_progressive_resume_across_a_stage_change_is_bit_identical(tmp_path, digits):
    c = cfg(method="drnas", space="darts", epochs=3, model={"C": 8, "layers": 3},
            drnas={"ks": [4, 2], "keep_ops": [7, 3], "stage_warmup": 0, "stage_epochs": [1, 2]})
    straight = Search(c, digits)
    for _ in range(3):
        straight.run_epoch()
    first = Search(c, digits)
    first.run_epoch()
    first.run_epoch()  # the stage change happened at the start of this epoch
    first.save(tmp_path / "ck.pt")
    resumed = Search(c, digits)
    resumed.load(tmp_path / "ck.pt")
    resumed.run_epoch()
    for (n, p), (_, q) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(p, q), n


# ------------------------------------------------------------------------------------------ RF-DARTS
@pytest.mark.parametrize("space, train_classifier", [("nb201", False), ("darts", True)])
def test_random_features_freeze_convs_and_train_only_bn(digits, space, train_classifier):
    layers = 1 if space == "nb201" else 3
    s = Search(cfg(method="rfdarts", space=space, model={"C": 8, "layers": layers},
                   rf={"train_classifier": train_classifier}), digits)
    assert isinstance(s.method, RandomFeatures)
    convs = {n: m.weight.detach().clone() for n, m in s.net.named_modules() if isinstance(m, nn.Conv2d)}
    bns = {n: (m.weight.detach().clone(), m.bias.detach().clone()) for n, m in s.net.named_modules()
           if isinstance(m, nn.BatchNorm2d)}
    assert bns and all(m.affine for m in s.net.modules() if isinstance(m, nn.BatchNorm2d))
    expected = sum(w.numel() + b.numel() for w, b in bns.values())
    if train_classifier:
        expected += sum(p.numel() for p in s.net.classifier.parameters())
    seen = sum(p.numel() for g in s.w_opt.param_groups for p in g["params"])
    assert seen == expected
    s.run_epoch()
    s.run_epoch()
    mods = dict(s.net.named_modules())
    for n, w in convs.items():
        assert torch.equal(mods[n].weight, w), n
    changed = [not torch.equal(mods[n].weight, w) or not torch.equal(mods[n].bias, b) for n, (w, b) in bns.items()]
    assert all(changed)


# ------------------------------------------------------------------------------------------ alphaDARTS
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.3])
def test_mask_covers_the_asked_ratio(ratio):
    g = torch.Generator().manual_seed(0)
    mask = patch_mask(torch.Size((8, 3, 32, 32)), 4, ratio, g)
    frac = mask.float().mean(dim=(1, 2, 3))
    assert torch.all((frac - ratio).abs() <= 1 / 64 + 1e-6)  # within one patch of 64


def test_reconstruction_loss_decreases_on_a_fixed_batch(digits):
    s = Search(cfg(method="alphadarts", mim={"patch_size": 2, "loss_weight": 5.0}, optim={"lr": 0.05}), digits)
    assert isinstance(s.method, MaskedImageModelling)
    x, y, _, _ = batches(s)
    losses = []
    for _ in range(8):
        s.weight_step(x, y)
        losses.append(s.method.epoch_metrics()["mim_rec_loss"])
    assert losses[-1] < losses[0]


def test_mim_with_zero_weight_is_exactly_darts(digits):
    a = Search(cfg(method="darts", seed=5), digits)
    b = Search(cfg(method="alphadarts", seed=5, mim={"patch_size": 2, "loss_weight": 0.0}), digits)
    for _ in range(2):
        a.run_epoch()
        b.run_epoch()
    assert torch.equal(a.net.alphas["cell"], b.net.alphas["cell"])
    assert a.genotype() == b.genotype()


def test_random_features_stay_frozen_through_progressive_widening(digits):
    """DrNAS stages rebuild the widened ops: their convs must stay random features (no gradient,
    not in the optimiser), as before the stage change."""
    c = cfg(method="drnas", space="darts", epochs=2, model={"C": 8, "layers": 3}, rf={"enabled": True},
            drnas={"ks": [4, 2], "keep_ops": [7, 4], "stage_warmup": 0})
    s = Search(c, digits)
    s.run_epoch()
    s.run_epoch()
    assert all(op.k == 2 for _, _, op in s.net.mixed_ops())
    convs = [p for m in s.net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()]
    trained = {id(p) for g in s.w_opt.param_groups for p in g["params"]}
    assert convs and not any(p.requires_grad or id(p) in trained for p in convs)


def test_mim_in_the_arch_step_only_still_trains_the_decoder(digits):
    """``mim.steps=arch``: the weight step trains the decoder on features it cannot change, so the
    supernet weights get exactly the cross-entropy gradient and the decoder does not stay random."""
    s = Search(cfg(method="alphadarts", mim={"patch_size": 2, "steps": "arch"}), digits)
    decoder = [p.detach().clone() for p in s.net.aux["mim_decoder"].parameters()]
    x, y, _, _ = batches(s)
    w = {k: v.detach() for k, v in s.method.edge_weights(s.net).items()}
    stem = s.net.stem[0].weight
    (g_weight_step,) = torch.autograd.grad(s.method.loss(s.step_context(), x, y, w, "weight")[0], stem)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(s.net(x, w), y), stem)
    torch.testing.assert_close(g_weight_step, g_ce)
    s.run_epoch()
    assert not any(torch.equal(a, b) for a, b in zip(decoder, s.net.aux["mim_decoder"].parameters()))


# ------------------------------------------------------------------------------------------ composition
def test_unpublished_combinations_compose_from_config(digits):
    combos = {
        "drnas + MIM": cfg(method="drnas", mim={"enabled": True, "patch_size": 2}),
        "rfdarts + MIM": cfg(method="rfdarts", mim={"enabled": True, "patch_size": 2}),
        "pcdarts + RF": cfg(method="pcdarts", rf={"enabled": True}, arch={"warmup_epochs": 0}),
    }
    assert {p.__name__ for p in pieces(combos["drnas + MIM"])} == {"Dirichlet", "MaskedImageModelling"}
    assert {p.__name__ for p in pieces(combos["pcdarts + RF"])} == {"EdgeNormalisation", "RandomFeatures"}
    for name, c in combos.items():
        s = Search(c, digits)
        m = s.run_epoch()
        assert m["genotype"].count("~") == 6, name
    assert type(build_method(combos["rfdarts + MIM"])).__mro__[1:3] == (MaskedImageModelling, RandomFeatures)


@pytest.mark.parametrize("method", ["darts", "darts2", "pcdarts", "drnas", "rfdarts", "rfpcdarts", "alphadarts"])
def test_every_method_is_deterministic_on_cpu(digits, method):
    c = cfg(method=method, space="darts", model={"C": 8, "layers": 3}, arch={"warmup_epochs": 0},
            mim={"patch_size": 2}, drnas={"ks": [4, 2], "keep_ops": [7, 4], "stage_warmup": 0})
    a = Search(c, digits)  # one after the other: the searches share the process's global RNG
    first = [a.run_epoch()["genotype"] for _ in range(2)]
    b = Search(c, digits)
    assert first == [b.run_epoch()["genotype"] for _ in range(2)]
    for k in a.net.alphas:
        assert torch.equal(a.net.alphas[k], b.net.alphas[k]), k
