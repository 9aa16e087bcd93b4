"""Channels-last (the default) computes the same numbers as NCHW and stays deterministic."""

import copy

import pytest
import torch
import torch.nn.functional as F

from raynas.config import resolve
from raynas.data import load_dataset
from search_spaces.mixed import channel_shuffle
from search_spaces.fast import NARROW_CHANNELS, FastBatchNorm2d, accelerate
from search_spaces.ops import FactorizedReduce
from trials.bilevel import Search


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def cfg(**over):
    base = {"dataset": "digits", "batch_size": 16, "max_steps_per_epoch": 2, "eval_batches": 1, "device": "cpu",
            "epochs": 2, "model": {"C": 8, "layers": 3}}
    base.update(over)
    return resolve(copy.deepcopy(base))


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("bias", [False, True])
def test_factorized_reduce_equals_the_strided_conv_formulation(size, bias):
    """Our subsample-then-1x1 form = DARTS' ``conv_1(x), conv_2(pad(x)[:, :, 1:, 1:])`` at stride 2."""
    torch.manual_seed(0)
    fr = accelerate(FactorizedReduce(6, 10, affine=True, bias=bias)).double()
    x = torch.randn(3, 6, size, size, dtype=torch.float64, requires_grad=True)
    y = fr(x)
    r = F.relu(x)
    ref = torch.cat([fr.conv_1(r), fr.conv_2(F.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:])], dim=1)
    ref = F.batch_norm(ref, None, None, fr.bn.weight, fr.bn.bias, training=True)
    assert y.shape == ref.shape == (3, 10, (size + 1) // 2, (size + 1) // 2)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    gy = torch.autograd.grad(y, [x, fr.conv_1.weight, fr.conv_2.weight], g)
    gr = torch.autograd.grad(ref, [x, fr.conv_1.weight, fr.conv_2.weight], g)
    for a, b in zip(gy, gr):
        torch.testing.assert_close(a, b)


def test_channel_shuffle_keeps_values_and_layout():
    x = torch.randn(2, 12, 3, 5)
    nhwc = channel_shuffle(x.contiguous(memory_format=torch.channels_last), 4)
    assert torch.equal(nhwc, channel_shuffle(x, 4))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channel_shuffle(x, 4)[:, :4], x[:, ::3])  # group g's first channel, then the next


@pytest.mark.parametrize("C", [4, NARROW_CHANNELS])  # the NCHW detour below NARROW_CHANNELS, the plain call at it
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_of_narrow_channels_last_tensors(C, training):
    """fast.FastBatchNorm2d = nn.BatchNorm2d (values, input and affine gradients, running statistics),
    and the result and the input's gradient stay channels-last."""
    torch.manual_seed(0)
    ref, ours = torch.nn.BatchNorm2d(C).double(), FastBatchNorm2d(C).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.normal_(), ref.running_mean.normal_(), ref.running_var.uniform_(1, 2)
    ours.load_state_dict(ref.state_dict())
    ref.train(training), ours.train(training)
    x = torch.randn(3, C, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yo = ref(xr), ours(xo)
    assert yo.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yo, yr)
    g = torch.randn_like(yr).contiguous(memory_format=torch.channels_last)
    yr.backward(g), yo.backward(g)
    assert xo.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xo.grad, xr.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)


@pytest.mark.parametrize("method, space, layers", [("darts", "nb201", 1), ("darts", "darts", 3),
                                                    ("pcdarts", "darts", 3), ("darts2", "nb201", 1)])
def test_channels_last_matches_nchw(digits, method, space, layers):
    """Two search epochs in each layout end at the same weights and alpha (float tolerance)."""
    runs = {}
    for cl in (True, False):
        s = Search(cfg(method=method, space=space, channels_last=cl, model={"C": 8, "layers": layers}), digits)
        if cl:
            assert all(p.is_contiguous(memory_format=torch.channels_last)
                       for p in s.net.parameters() if p.dim() == 4)
        s.run_epoch()
        s.run_epoch()
        runs[cl] = s
    a, b = runs[True], runs[False]
    for (name, p), (_, q) in zip(a.net.named_parameters(), b.net.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", ["pcdarts", "drnas"])
def test_channels_last_search_is_bit_identical_when_repeated_in_one_process(digits, method):
    """Regression: with few partial channels, oneDNN's stride-2 1x1 weight gradient (then in
    FactorizedReduce) and NCHW slices of NHWC tensors made the second run differ from the first."""
    extra = {"drnas": {"ks": [4, 2], "keep_ops": [7, 3], "stage_warmup": 0, "stage_epochs": [1, 1]}} \
        if method == "drnas" else {}
    c = cfg(method=method, space="darts", **extra)
    first = Search(c, digits)
    first.run_epoch()
    first.run_epoch()
    junk = [torch.empty(n) for n in (17, 1031, 4099)]  # move the allocator's addresses
    second = Search(c, digits)
    second.run_epoch()
    second.run_epoch()
    del junk
    for (name, p), (_, q) in zip(first.net.state_dict().items(), second.net.state_dict().items()):
        assert torch.equal(p, q), name


def test_partial_channel_outputs_stay_channels_last(digits):
    s = Search(cfg(method="pcdarts", space="darts"), digits)
    seen = []
    for module in [*s.net.cells, *(op for _, _, op in s.net.mixed_ops())]:  # cells sum edges via MixedOp.partial
        module.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    x, _ = next(iter(s.w_stream.epoch(s.generator(0))))
    weights = {k: v.detach() for k, v in s.method.edge_weights(s.net).items()}
    s.net(s.to_input(x), weights)
    assert len(seen) == len(s.net.cells) and all(seen)
    _, e, op = next(iter(s.net.mixed_ops()))
    op(torch.randn(2, op.C, 8, 8).contiguous(memory_format=torch.channels_last), weights["normal"][e])
    assert len(seen) == len(s.net.cells) + 1 and all(seen)
