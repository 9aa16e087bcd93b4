"""Dominant Hessian eigenvalue (RobustDARTS): power iteration on quadratics, and on a tiny NB201 search."""

import random

import numpy as np
import pytest
import torch

from raynas.config import resolve
from raynas.data import load_dataset
from trials.bilevel import Search
from trials.epochs import Stream
from trials.hessian import dominant_eigenvalue, power_iteration


def quadratic_hvp(A: torch.Tensor):
    """f(x) = 0.5 xᵀAx: the Hessian-vector product by double backprop, as dominant_eigenvalue does."""
    x = torch.zeros(A.shape[0], dtype=A.dtype, requires_grad=True)
    (g,) = torch.autograd.grad(0.5 * x @ A @ x, x, create_graph=True)
    return lambda v: torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)[0]


def with_eigenvalues(eigs: list[float], seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_power_iteration_psd(dtype):
    g = torch.Generator().manual_seed(1)
    B = torch.randn(60, 60, generator=g, dtype=torch.float64)
    A = B @ B.T / 60  # random symmetric PSD
    lam = power_iteration(quadratic_hvp(A.to(dtype)), 60, iters=20, tol=1e-8, generator=g, dtype=dtype)
    assert lam == pytest.approx(torch.linalg.eigvalsh(A)[-1].item(), rel=1e-3)


def test_power_iteration_negative_dominant():
    """Largest magnitude is -10; the largest algebraic eigenvalue (RobustDARTS', the default) is 3."""
    rest = torch.linspace(-2.0, 1.0, 38, dtype=torch.float64).tolist()
    A = with_eigenvalues([-10.0, 3.0, *rest])
    eig = torch.linalg.eigvalsh(A)
    hvp = quadratic_hvp(A)
    kw = dict(iters=25, tol=1e-8, dtype=torch.float64)
    mag = power_iteration(hvp, 40, generator=torch.Generator().manual_seed(0), largest=False, **kw)
    top = power_iteration(hvp, 40, generator=torch.Generator().manual_seed(0), **kw)
    assert mag == pytest.approx(eig[0].item(), rel=1e-3)
    assert top == pytest.approx(eig[-1].item(), rel=1e-3)


@pytest.fixture(scope="module")
def search():
    s = Search(resolve({"dataset": "digits", "epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2,
                        "model": {"C": 4, "layers": 1}, "device": "cpu"}), load_dataset("digits"))
    s.run_epoch()
    return s


def test_dominant_eigenvalue_tiny_nb201(search):
    state = {k: v.clone() for k, v in search.net.state_dict().items()}
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    first = dominant_eigenvalue(search, batches=1, iters=8)
    second = dominant_eigenvalue(search, batches=1, iters=8)
    assert isinstance(first, float) and np.isfinite(first) and first > 0
    assert first == second
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert np.array_equal(np.random.get_state()[1], np_rng[1]) and random.getstate() == py_rng
    after = search.net.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert search.net.training


def test_dominant_eigenvalue_is_the_largest_of_the_full_hessian(search):
    """30 alphas: 30 Lanczos steps span the space, so the estimate equals max eigvalsh of the full Hessian
    (built row by row, as RobustDARTS does) -- the largest algebraic eigenvalue, not the largest magnitude."""
    state = {k: v.clone() for k, v in search.net.state_dict().items()}
    params = search.method.arch_parameters(search.net)
    x, y = next(search.a_stream.epoch(search.generator(Stream.HESSIAN)))
    loss, _ = search.method.loss(search.step_context(), x, y, search.method.edge_weights(search.net), "arch")
    (g,) = torch.autograd.grad(loss, params, create_graph=True)
    g = g.reshape(-1)
    H = torch.stack([torch.autograd.grad(g[i], params, retain_graph=True)[0].reshape(-1) for i in range(len(g))])
    search.net.load_state_dict(state)
    eig = torch.linalg.eigvalsh((H + H.T).double() / 2)
    lam = dominant_eigenvalue(search, batches=1, iters=len(g), tol=0.0)
    assert lam == pytest.approx(eig[-1].item(), rel=1e-3, abs=1e-6)
