"""alphaDARTS as its authors' search code runs it (AlbertiPot/Semantic-DARTS at d525eed): one test per
choice of the README's "choices and their source" table, in float64 on tiny supernets (CPU)."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raynas.config import ConfigError, resolve
from raynas.data import load_dataset
from trials.alphadarts import authors_decoder, normalised_range, patch_mask, reconstruction_loss
from trials.bilevel import Search


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def search(digits, double=True, **mim):
    """A tiny NB-201 alphaDARTS search; in float64 unless it is to run whole epochs (float32 batches)."""
    over = {"method": "alphadarts", "dataset": "digits", "batch_size": 8, "max_steps_per_epoch": 2,
            "eval_batches": 1, "device": "cpu", "epochs": 2, "seed": 3, "model": {"C": 4, "layers": 1},
            "mim": {"patch_size": 2, **mim}}
    s = Search(resolve(copy.deepcopy(over)), digits)
    if double:
        s.net.double()
    return s


def batch(s, stream=0):
    x, y = next(iter((s.w_stream, s.a_stream)[stream].epoch(s.generator(stream))))
    return x.to(next(s.net.parameters()).dtype), y


def next_mask(s, x, gen=None):
    """The mask the method's next masking draws (on a copy of its generator)."""
    g = torch.Generator().set_state((gen or s.method.mask_gen).get_state())
    return patch_mask(x.shape, s.cfg.mim.patch_size, s.cfg.mim.mask_ratio, g)


def stem_inputs(s):
    seen = []
    s.net.stem.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    return seen


def weights(s, detach=True):
    w = s.method.edge_weights(s.net)
    return {k: v.detach() for k, v in w.items()} if detach else w


# ------------------------------------------------------------------------------ the preset
def test_the_preset_is_the_authors_code_on_the_darts_space():
    cfg = resolve({"method": "alphadarts", "space": "darts"})
    m, o, a = cfg.mim, cfg.optim, cfg.arch
    assert (m.enabled, m.mask_ratio, m.patch_size, m.loss_weight, m.steps, m.loss, m.mask_value, m.decoder,
            m.cls_on_masked, m.reconstruct, m.masked_eval) == (
        True, 0.8, 4, "auto", "both", "mse", 1.0, "authors", True, True, True)
    # train_search.py / architect.py defaults, confirmed against the code
    assert (cfg.epochs, cfg.batch_size, cfg.train_portion, cfg.model.C, cfg.model.layers) == (50, 64, 0.5, 16, 8)
    assert (o.lr, o.lr_min, o.momentum, o.weight_decay, o.nesterov, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, False, 5)
    assert (a.lr, a.beta1, a.beta2, a.weight_decay, a.order, a.step_order, a.warmup_epochs) == (
        3e-4, 0.5, 0.999, 1e-3, 1, "arch_weight", 0)


@pytest.mark.parametrize("field, value, message", [
    ("loss_weight", "often", "mim.loss_weight must be auto or a number >= 0"),
    ("loss_weight", -1.0, "mim.loss_weight must be auto or a number >= 0"),
    ("loss", "huber", "mim.loss must be mse, l1 or l2"),
    ("decoder", "heavy", "mim.decoder must be authors or light"),
])
def test_bad_mim_fields_are_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve({"method": "alphadarts", "mim": {field: value}})


# ------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("ratio, patch", [(0.8, 4), (0.8, 8), (0.3, 2), (0.9, 8)])
def test_each_image_keeps_int_of_l_times_one_minus_ratio_patches(ratio, patch):
    mask = patch_mask(torch.Size((5, 3, 32, 32)), patch, ratio, torch.Generator().manual_seed(1))
    n = (32 // patch) ** 2
    per_image = mask[:, 0, ::patch, ::patch].sum(dim=(1, 2))
    assert per_image.tolist() == [n - int(n * (1 - ratio))] * 5  # 0.8 at patch 4: 52 of 64 masked
    blocks = mask.view(5, 1, 32 // patch, patch, 32 // patch, patch)
    assert torch.all(blocks.all(dim=(3, 5)) == blocks.any(dim=(3, 5)))  # whole patches only


@pytest.mark.parametrize("value", [1.0, 0.37])
def test_the_classifier_sees_the_masked_batch_in_one_forward(digits, value):
    s = search(digits, mask_value=value)
    x, y = batch(s)
    mask = next_mask(s, x)
    seen = stem_inputs(s)
    s.method.loss(s.step_context(), x, y, weights(s), "weight")
    assert len(seen) == 1  # one forward feeds the classifier and the decoder
    assert torch.equal(seen[0], x.masked_fill(mask, value))
    assert torch.all(seen[0][mask.expand_as(x)] == value) and torch.equal(seen[0][~mask.expand_as(x)],
                                                                           x[~mask.expand_as(x)])


def test_clean_input_ablation_classifies_the_clean_batch(digits):
    s = search(digits, cls_on_masked=False)
    x, y = batch(s)
    mask = next_mask(s, x)
    seen = stem_inputs(s)
    s.method.loss(s.step_context(), x, y, weights(s), "weight")
    assert len(seen) == 2 and torch.equal(seen[0], x) and torch.equal(seen[1], x.masked_fill(mask, 1.0))


def test_one_loss_ablation_is_the_cross_entropy_of_the_masked_batch(digits):
    s = search(digits, reconstruct=False)
    assert "mim_decoder" not in s.net.aux
    x, y = batch(s)
    mask = next_mask(s, x)
    loss, _ = s.method.loss(s.step_context(), x, y, weights(s), "weight")
    expected = F.cross_entropy(s.net(x.masked_fill(mask, 1.0), weights(s)), y)
    assert torch.equal(loss, expected)


# ------------------------------------------------------------------------------ the loss
def _direct_loss(s, x, y, mask, w):
    """l_cls and l_rec written out: CE of the masked batch, per-patch MSE over the masked patches."""
    logits, features = s.net(x.masked_fill(mask, 1.0), w, return_features=True)
    rec = s.net.aux["mim_decoder"](features)
    p, total, count = s.cfg.mim.patch_size, 0.0, 0
    for b in range(x.shape[0]):
        for i in range(0, x.shape[2], p):
            for j in range(0, x.shape[3], p):
                if mask[b, 0, i, j]:
                    total = total + ((rec[b, :, i:i + p, j:j + p] - x[b, :, i:i + p, j:j + p]) ** 2).mean()
                    count += 1
    return F.cross_entropy(logits, y), total / count


@pytest.mark.parametrize("phase", ["weight", "arch"])
def test_both_steps_add_the_rescaled_reconstruction_term(digits, phase):
    s = search(digits)
    x, y = batch(s, 0 if phase == "weight" else 1)
    mask = next_mask(s, x)
    loss, _ = s.method.loss(s.step_context(), x, y, weights(s, detach=phase == "weight"), phase)
    l_cls, l_rec = _direct_loss(s, x, y, mask, weights(s, detach=phase == "weight"))
    torch.testing.assert_close(loss, 2 * l_cls, rtol=1e-12, atol=0)  # the forward value: l_cls + l_cls
    # the gradient: that of l_cls + (l_cls / l_rec) * l_rec, the ratio a constant
    params = list(s.net.alphas.values()) if phase == "arch" else [s.net.stem[0].weight]
    expected = torch.autograd.grad(l_cls + (l_cls / l_rec).detach() * l_rec, params)
    torch.testing.assert_close(torch.autograd.grad(loss, params), expected, rtol=1e-10, atol=1e-14)
    assert s.method.uses_mim(phase)


def test_a_fixed_loss_weight_still_works(digits):
    s = search(digits, loss_weight=0.25)
    x, y = batch(s)
    mask = next_mask(s, x)
    loss, _ = s.method.loss(s.step_context(), x, y, weights(s), "weight")
    l_cls, l_rec = _direct_loss(s, x, y, mask, weights(s))
    torch.testing.assert_close(loss, l_cls + 0.25 * l_rec, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["mse", "l1", "l2"])
def test_reconstruction_loss_is_the_per_patch_mean_over_masked_patches(kind):
    g = torch.Generator().manual_seed(4)
    rec, target = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64), torch.randn(
        2, 3, 8, 8, generator=g, dtype=torch.float64)
    mask = patch_mask(rec.shape, 4, 0.5, g)
    per = {"mse": lambda e: (e ** 2).mean(), "l1": lambda e: e.abs().mean(), "l2": lambda e: e.pow(2).sum().sqrt()}
    values = [per[kind](rec[b, :, i:i + 4, j:j + 4] - target[b, :, i:i + 4, j:j + 4])
              for b in range(2) for i in (0, 4) for j in (0, 4) if mask[b, 0, i, j]]
    assert len(values) == 4  # int(4 * 0.5) = 2 kept of 4 per image
    torch.testing.assert_close(reconstruction_loss(rec, target, mask, 4, kind), torch.stack(values).mean(),
                               rtol=1e-12, atol=0)
    # the unmasked patches do not count
    changed = torch.where(mask, rec, rec + 100.0)
    torch.testing.assert_close(reconstruction_loss(changed, target, mask, 4, kind),
                               reconstruction_loss(rec, target, mask, 4, kind), rtol=1e-12, atol=0)


def test_l2_loss_has_a_finite_gradient_at_a_perfect_patch():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    rec = target.clone().requires_grad_()
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    (g,) = torch.autograd.grad(reconstruction_loss(rec, target, mask, 2, "l2"), rec)
    assert torch.isfinite(g).all()


# ------------------------------------------------------------------------------ the decoder
def test_authors_decoder_layers_shape_and_clamp():
    lo, hi = -1.7, 2.1
    dec = authors_decoder(32, 3, 4, (lo, hi)).double()
    kinds = [type(m).__name__ for m in dec]
    assert kinds == ["Conv2d", "Conv2d", "Conv2d", "BatchNorm2d", "ReLU", "ConvTranspose2d", "BatchNorm2d", "ReLU",
                     "Conv2d", "BatchNorm2d", "ReLU", "ConvTranspose2d", "BatchNorm2d", "ReLU", "Conv2d", "Hardtanh"]
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in dec if isinstance(m, (nn.Conv2d,
                                                                                            nn.ConvTranspose2d))]
    assert convs == [(32, 128, (3, 3)), (128, 32, (1, 1)), (32, 32, (3, 3)), (32, 16, (4, 4)), (16, 16, (3, 3)),
                     (16, 8, (4, 4)), (8, 3, (3, 3))]
    with torch.no_grad():
        dec[-2].weight.mul_(1000)  # drive the last conv far past the range (the BNs undo input scale)
    out = dec(torch.randn(2, 32, 8, 8, dtype=torch.float64))
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= lo and out.max() <= hi and out.min() == lo and out.max() == hi


def test_clamp_range_is_the_normalised_pixel_range():
    cifar10 = type("D", (), {"mean": (0.49139968, 0.48215827, 0.44653124), "std": (0.24703233, 0.24348505,
                                                                                   0.26158768)})
    lo, hi = normalised_range(cifar10)
    assert round(lo, 2) == -1.99 and round(hi, 2) == 2.13  # the authors' DATA_STATS for CIFAR-10


@pytest.mark.parametrize("space, layers, decoder", [("nb201", 1, "authors"), ("darts", 3, "authors"),
                                                    ("darts", 3, "light")])
def test_the_decoder_reconstructs_the_image_shape_on_each_space(digits, space, layers, decoder):
    over = {"method": "alphadarts", "space": space, "dataset": "digits", "device": "cpu",
            "model": {"C": 4, "layers": layers}, "mim": {"patch_size": 2, "decoder": decoder}}
    s = Search(resolve(over), digits)
    x, _ = batch(s)
    _, features = s.net(x, weights(s), return_features=True)
    out = s.net.aux["mim_decoder"](features)
    assert out.shape == x.shape
    if decoder == "authors":
        lo, hi = normalised_range(digits)
        assert isinstance(s.net.aux["mim_decoder"][-1], nn.Hardtanh) and out.min() >= lo and out.max() <= hi


# ------------------------------------------------------------------------------ validation, selection, DARTS
def test_validation_masks_its_batch_with_the_steps_loss(digits):
    s = search(digits)
    x, y = batch(s, 1)
    mask = next_mask(s, x, s.method.eval_mask_gen)
    train_state = s.method.mask_gen.get_state()
    s.net.eval()
    with torch.no_grad():
        loss_sum, logits = s.method.eval_loss(s.step_context(), x, y, s.method.eval_weights(s.net))
        l_cls, _ = _direct_loss(s, x, y, mask, s.method.eval_weights(s.net))
        expected_logits = s.net(x.masked_fill(mask, 1.0), s.method.eval_weights(s.net))
    torch.testing.assert_close(loss_sum, 2 * l_cls * len(y), rtol=1e-12, atol=0)
    assert torch.equal(logits, expected_logits)
    assert torch.equal(s.method.mask_gen.get_state(), train_state)  # training masks untouched


def test_the_genotype_comes_from_alpha_alone(digits):
    s = search(digits, double=False)
    s.run_epoch()
    alphas = {k: v.detach().clone() for k, v in s.net.alphas.items()}
    geno = s.genotype()
    s.evaluate()
    s.net.aux["mim_decoder"][0].weight.data.add_(1.0)
    assert s.genotype() == geno
    assert s.net.derive(s.method.genotype_weights(s.net)) == s.net.derive(
        {k: F.softmax(a, dim=-1) for k, a in alphas.items()})


@pytest.mark.parametrize("space, layers", [("nb201", 1), ("darts", 3)])
def test_zero_loss_weight_is_darts_bit_for_bit(digits, space, layers):
    def run(method, **mim):
        over = {"method": method, "space": space, "dataset": "digits", "batch_size": 8, "max_steps_per_epoch": 2,
                "eval_batches": 1, "device": "cpu", "epochs": 2, "seed": 6, "model": {"C": 4, "layers": layers},
                "mim": mim}
        s = Search(resolve(over), digits)
        history = [s.run_epoch() for _ in range(2)]
        return s, [{k: v for k, v in h.items() if k not in ("epoch_time", "images_per_s", "mim_rec_loss")}
                   for h in history]

    a, ha = run("darts")
    b, hb = run("alphadarts", loss_weight=0.0)
    assert ha == hb  # losses, accuracies (validation included), genotypes, alpha per edge
    for k in a.net.alphas:
        assert torch.equal(a.net.alphas[k], b.net.alphas[k]), k
    assert "mim_decoder" not in b.net.aux


def test_resume_continues_both_mask_generators(digits, tmp_path):
    a = search(digits, double=False)
    a.run_epoch()
    a.save(tmp_path / "ckpt.pt")
    a.run_epoch()
    b = search(digits, double=False)
    b.load(tmp_path / "ckpt.pt")
    b.run_epoch()
    assert a.history[-1]["valid_loss"] == b.history[-1]["valid_loss"]
    for k in a.net.alphas:
        assert torch.equal(a.net.alphas[k], b.net.alphas[k]), k
