"""The supernet protocol the method hooks rely on: features on request, and explicit places for a method's
extra architecture parameters (``arch_extra``) and auxiliary modules (``aux``)."""

import pytest
import torch
import torch.nn as nn

import search_spaces
from raynas.config import resolve
from raynas.data import load_dataset
from search_spaces.supernet import Supernet
from trials.bilevel import Search


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("space", list(search_spaces.SPACES))
def test_every_space_follows_the_protocol(space):
    torch.manual_seed(0)
    net = search_spaces.build_supernet(space, C=4, layers=1 if space == "nb201" else 3, num_classes=10)
    assert isinstance(net, Supernet)
    assert len(net.arch_extra) == 0 and len(net.aux) == 0
    assert not any(k.startswith(("arch_extra.", "aux.")) for k in net.state_dict())
    weights = {k: torch.softmax(a, -1) for k, a in net.alphas.items()}
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    torch.manual_seed(1)  # S4's noise op draws
    logits, features = net(x, weights, return_features=True)
    torch.manual_seed(1)
    assert torch.equal(logits, net(x, weights))
    assert features.dim() == 4 and features.shape[0] == 2


def _search(digits, **over):
    base = {"dataset": "digits", "batch_size": 8, "max_steps_per_epoch": 1, "eval_batches": 1, "device": "cpu",
            "epochs": 1, "model": {"C": 4, "layers": 1}, "arch": {"warmup_epochs": 0}, "mim": {"patch_size": 2}}
    return Search(resolve({**base, **over}), digits)


def test_pcdarts_beta_lives_in_arch_extra_and_trains_with_alpha(digits):
    s = _search(digits, method="pcdarts")
    assert set(s.net.alphas) == {"cell"} and set(s.net.arch_extra) == {"beta_cell"}
    beta = s.net.arch_extra["beta_cell"]
    in_arch_opt = {id(p) for g in s.a_opt.param_groups for p in g["params"]}
    in_weight_opt = {id(p) for g in s.w_opt.param_groups for p in g["params"]}
    assert id(beta) in in_arch_opt and id(beta) not in in_weight_opt
    before = beta.detach().clone()
    s.run_epoch()
    assert not torch.equal(before, beta.detach())


def test_rf_freezes_the_searched_network_but_not_the_mim_decoder(digits):
    s = _search(digits, method="alphadarts", rf={"enabled": True})
    decoder = s.net.aux["mim_decoder"]
    convs = [m for m in decoder.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(p.requires_grad for m in convs for p in m.parameters())
    searched = [m for m in s.net.cells.modules() if isinstance(m, nn.Conv2d)]
    assert searched and not any(p.requires_grad for m in searched for p in m.parameters())
    before = [p.detach().clone() for p in decoder.parameters()]
    s.run_epoch()
    assert any(not torch.equal(a, b) for a, b in zip(before, decoder.parameters()))
