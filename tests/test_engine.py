"""The bilevel loop: arch steps move alpha and the genotype, second order is right, checkpoints are exact."""

import copy

import pytest
import torch
import torch.nn.functional as F

from raynas.config import resolve
from raynas.data import load_dataset
from trials import cuda_graph
from trials.bilevel import Search, search

TINY = {"dataset": "digits", "batch_size": 16, "max_steps_per_epoch": 3, "eval_batches": 2, "device": "cpu",
        "model": {"C": 4, "layers": 1}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny(**over):
    base = copy.deepcopy(TINY)
    base.update(over)
    return resolve(base)


def test_search_reports_everything_per_epoch(digits):
    s = Search(tiny(epochs=2), digits)
    m = s.run_epoch()
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "genotype", "alpha", "alpha_entropy",
                "skip_count", "param_free_count", "epoch_time", "images_per_s", "lr"):
        assert m[key] is not None, key
    assert set(m["alpha"]["cell"]) == {"1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"}
    assert abs(sum(m["alpha"]["cell"]["1<-0"].values()) - 1.0) < 1e-5
    assert m["genotype"].count("~") == 6


def test_arch_step_moves_alpha_along_its_gradient_and_the_genotype_follows(digits):
    cfg = tiny(epochs=1, arch={"lr": 0.5, "weight_decay": 0.0})
    s = Search(cfg, digits)
    alpha = s.net.alphas["cell"]
    with torch.no_grad():  # a hand-set alpha whose genotype is known (op e % 5 on edge e), without ties
        alpha.copy_(0.013 * torch.arange(5.0).expand(6, 5))
        for e in range(6):
            alpha[e, e % 5] = 0.1
    assert s.genotype().ops == tuple(("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                                      "none"))
    x, y = next(iter(s.w_stream.epoch(s.generator(0))))
    xa, ya = next(iter(s.a_stream.epoch(s.generator(1))))
    loss = F.cross_entropy(s.net(xa, s.method.edge_weights(s.net)), ya)
    (grad,) = torch.autograd.grad(loss, [alpha])
    before = alpha.detach().clone()
    s.method.arch_step(s.step_context(), x, y, xa, ya)
    # Adam's first step moves every coordinate by lr * sign(grad) (up to its epsilon)
    expected = before - 0.5 * torch.sign(grad)
    torch.testing.assert_close(alpha.detach(), expected, atol=1e-4, rtol=0)
    assert s.genotype().ops != tuple(("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                                      "none"))
    assert s.genotype() == s.net.derive({"cell": F.softmax(expected, -1)})


def test_weight_step_leaves_alpha_alone(digits):
    s = Search(tiny(epochs=1), digits)
    before = s.net.alphas["cell"].detach().clone()
    x, y = next(iter(s.w_stream.epoch(s.generator(0))))
    s.weight_step(x, y)
    assert torch.equal(before, s.net.alphas["cell"].detach())
    assert s.net.alphas["cell"].grad is None


def test_second_order_gradient_matches_finite_differences(digits):
    """DARTS' unrolled arch gradient equals d/d(alpha) L_val(w - xi*(mu*buf + dL_train/dw + wd*w), alpha)."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg = tiny(method="darts2", epochs=1, optim={"lr": 0.1, "weight_decay": 3e-4},
                   arch={"lr": 0.0, "weight_decay": 0.0, "unrolled_eps": 1e-4})
        s = Search(cfg, digits)
        s.net.double()
        s.net.eval()  # BN from running stats: the objective is then a smooth function of alpha and w
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(6, 1, 8, 8, generator=gen), torch.randint(0, 10, (6,), generator=gen)
        xa, ya = torch.randn(6, 1, 8, 8, generator=gen), torch.randint(0, 10, (6,), generator=gen)
        ws = s.method.weight_parameters(s.net)
        for p in ws:  # a momentum buffer, as after some SGD steps
            s.w_opt.state[p]["momentum_buffer"] = 0.01 * torch.randn_like(p)
        alpha = s.net.alphas["cell"]
        s.method.arch_step(s.step_context(), x, y, xa, ya)  # lr 0: computes alpha.grad without moving alpha
        analytic = alpha.grad.detach().clone()

        def objective() -> float:
            weights = {"cell": F.softmax(alpha, -1)}
            g = torch.autograd.grad(F.cross_entropy(s.net(x, weights), y), ws)
            saved = [p.detach().clone() for p in ws]
            with torch.no_grad():
                for p, gi in zip(ws, g):
                    buf = s.w_opt.state[p]["momentum_buffer"]
                    p.sub_(0.1 * (0.9 * buf + gi + 3e-4 * p))
                val = F.cross_entropy(s.net(xa, weights), ya).item()
                for p, v in zip(ws, saved):
                    p.copy_(v)
            return val

        numeric = torch.zeros_like(alpha)
        h = 1e-5
        for idx in [(0, 1), (0, 3), (2, 2), (4, 4), (5, 0)]:
            with torch.no_grad():
                alpha[idx] += h
            up = objective()
            with torch.no_grad():
                alpha[idx] -= 2 * h
            down = objective()
            with torch.no_grad():
                alpha[idx] += h
            numeric[idx] = (up - down) / (2 * h)
            assert analytic[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-3, abs=1e-7)
        # and the second-order term matters: first order alone would differ
        first = torch.autograd.grad(F.cross_entropy(s.net(xa, {"cell": F.softmax(alpha, -1)}), ya), alpha)[0]
        assert not torch.allclose(first, analytic, rtol=1e-3)
    finally:
        torch.set_default_dtype(torch.float32)


def test_same_seed_same_genotype_and_alpha(digits):
    a = Search(tiny(epochs=2, seed=3), digits)
    b = Search(tiny(epochs=2, seed=3), digits)
    for _ in range(2):
        ma, mb = a.run_epoch(), b.run_epoch()
        assert ma["genotype"] == mb["genotype"]
    assert torch.equal(a.net.alphas["cell"], b.net.alphas["cell"])


@pytest.mark.parametrize("method", ["darts", "darts2"])
def test_checkpoint_restore_continue_is_bit_identical(tmp_path, digits, method):
    cfg = tiny(method=method, epochs=3, seed=1)
    straight = Search(cfg, digits)
    for _ in range(3):
        straight.run_epoch()

    first = Search(cfg, digits)
    first.run_epoch()
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(12345)  # disturb global RNG: the checkpoint must restore it
    resumed = Search(cfg, digits)
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.epoch == 1
    while resumed.epoch < 3:
        resumed.run_epoch()

    for (name, p), (_, q) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(p, q), name
    assert straight.genotype() == resumed.genotype()
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_corrupted_checkpoint_names_the_file(tmp_path, digits):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    s = Search(tiny(epochs=1), digits)
    with pytest.raises(RuntimeError, match="broken.pt"):
        s.load(path)


def test_search_api_returns_result(digits):
    r = search(tiny(epochs=1), digits)
    assert r.epochs == 1 and r.genotype.count("~") == 6 and r.final["train_acc"] is not None


@pytest.mark.parametrize("order", ["weight_arch", "arch_weight"])
def test_step_order_decides_which_weights_the_arch_step_sees(digits, order):
    """NB201's DARTS-V1 script updates the weights first, every other reference code alpha first: one
    iteration equals the two steps called by hand in that order, and differs from the other order."""
    def run(manual: str | None) -> torch.Tensor:
        s = Search(tiny(epochs=1, arch={"step_order": order, "lr": 0.1}), digits)
        x, y = next(iter(s.w_stream.epoch(s.generator(0))))
        xa, ya = next(iter(s.a_stream.epoch(s.generator(1))))
        if manual is None:
            cuda_graph.iteration(s, update_arch=True)(x, y, xa, ya)
        for step in (manual or "").split("_"):
            if step == "weight":
                s.weight_step(x, y)
            elif step == "arch":
                s.method.arch_step(s.step_context(), x, y, xa, ya)
        return s.net.alphas["cell"].detach().clone()

    assert resolve({"space": "nb201"}).arch.step_order == "weight_arch"
    assert resolve({"space": "nb201", "method": "darts2"}).arch.step_order == "arch_weight"
    assert resolve({"space": "darts"}).arch.step_order == "arch_weight"
    other = "arch_weight" if order == "weight_arch" else "weight_arch"
    assert torch.equal(run(None), run(order))
    assert not torch.equal(run(None), run(other))


def test_drop_path_and_cutout_ramp_to_the_last_epoch_as_robustdarts(digits):
    """RobustDARTS' DP regularisation: drop-path p * epoch / (epochs - 1) on the op outputs, and cutout
    on both splits' batches with the same ramp on its probability (none in the first epoch, every
    image in the last); evaluation batches are never cut."""
    s = Search(tiny(epochs=3, max_steps_per_epoch=4, model={"C": 4, "layers": 1, "drop_path": 0.3}, cutout=4),
               digits)
    cut, seen = [], []
    s.net.register_forward_pre_hook(lambda m, args: (cut if m.training else seen).append(
        (args[0] == 0).flatten(1).any(1)))  # cutout writes exact zeros; normalised digits never hold one
    drop, fractions = [], []
    for _ in range(3):
        cut.clear()
        s.run_epoch()
        drop.append(next(iter(s.net.mixed_ops()))[2].drop_prob)
        fractions.append(float(torch.cat(cut).float().mean()))
    assert drop == pytest.approx([0.0, 0.15, 0.3])
    assert fractions[0] == 0.0 and fractions[2] == 1.0 and 0.0 < fractions[1] < 1.0
    assert not torch.cat(seen).any()
    with pytest.raises(Exception, match="cutout_prob must be in"):
        tiny(cutout_prob=1.5)


@pytest.mark.parametrize("over", [{}, {"method": "alphadarts"}],
                         ids=["darts", "alphadarts"])
def test_reported_numbers_are_the_declared_metrics(digits, over):
    """What a search epoch reports is what ``trials.bilevel.search_metrics`` declares (the list tune
    objectives are checked against): every number it reports is declared, and every declared number of
    the run's own and of its space is reported."""
    from raynas.checks import SEARCH_METRICS, search_trial_metrics
    from trials.bilevel import ARCH_FIELDS, ARCH_METRICS, EPOCH_METRICS, search_metrics

    cfg = tiny(epochs=1, **over)
    metrics = Search(cfg, digits).run_epoch()
    assert set(ARCH_FIELDS) <= set(metrics)
    numbers = set(metrics) - set(ARCH_FIELDS)  # the architecture itself, its flags and its table row
    assert all(metrics[k] is None or type(metrics[k]) in (int, float) for k in numbers), metrics
    assert numbers <= set(search_metrics()), numbers - set(search_metrics())
    space_arch = {m for m in ARCH_METRICS if cfg.space != "nb201" or not m.endswith("_reduce")}
    assert set(EPOCH_METRICS) | space_arch <= numbers
    assert ("mim_rec_loss" in numbers) == (cfg.method == "alphadarts")
    assert set(search_metrics()) | {"nb201_valid", "nb201_test"} == set(search_trial_metrics()) == set(SEARCH_METRICS)
    from search_spaces.darts import DARTS_V2, genotype_stats  # the DARTS spaces' counts, with the reduce cell's

    assert set(genotype_stats(DARTS_V2)) | {"alpha_entropy"} == set(ARCH_METRICS)
