"""Dominant eigenvalue of the validation-loss Hessian w.r.t. alpha (RobustDARTS, Zela et al., ICLR 2020).

RobustDARTS tracks the largest eigenvalue of ``∇²_α L_valid`` during the search: it grows before the
architecture collapses (skip connections take over), so it is an early-stopping / regularisation signal.

Computed here by power iteration on exact Hessian-vector products (double backprop,
``∇_α (∇_α L · v)``) at the current weights, on ``batches`` batches of the alpha split drawn with a
fixed generator. Conventions:

- **Which eigenvalue**: the largest *algebraic* one, as RobustDARTS (``max(eigvals)`` of the Hessian).
  Early in a search a negative eigenvalue often dominates in magnitude, where plain power iteration
  would return it; ``power_iteration`` reads the largest from a Rayleigh-Ritz projection on its iterates.
  Softmax is invariant to adding a constant to an edge's alphas, so the Hessian has zero eigenvalues and
  the largest is >= 0 (up to rounding) for the softmax relaxations.
- **BN**: the net runs in train mode (batch statistics), as RobustDARTS computes it on validation batches
  in train mode; the BN running-stat buffers are saved before and restored after, so the search state
  (``net.state_dict()``) is unchanged.
- **RNG**: the global torch/NumPy/Python RNG states are untouched (``torch.random.fork_rng`` and saved
  states); anything stochastic inside the forward (DrNAS' Dirichlet samples, drop-path) is seeded from the
  search seed and epoch, so two calls at the same state give the same number.
"""

from __future__ import annotations

import random
from itertools import islice
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from search_spaces.fast import recompute_off
from trials.epochs import Stream, stream_seed

if TYPE_CHECKING:
    from trials.step import SearchRun



def power_iteration(hvp: Callable[[torch.Tensor], torch.Tensor], shape: int | tuple[int, ...] | torch.Size,
                    iters: int = 20, tol: float = 1e-4, generator: torch.Generator | None = None, *,
                    largest: bool = True, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> float:
    """An extreme eigenvalue of the symmetric operator ``hvp`` from ``iters`` power-iteration steps.

    The power iterates ``v, Hv, H²v, ...`` are kept (orthonormalised) and the eigenvalue is read from the
    Rayleigh-Ritz projection of ``H`` on them -- i.e. Lanczos with full reorthogonalisation. This is never
    worse than the last iterate's Rayleigh quotient, and finds the largest *algebraic* eigenvalue
    (``largest=True``, RobustDARTS' quantity) even when a negative eigenvalue dominates in magnitude,
    where shifted plain power iteration needs hundreds of steps. ``largest=False``: the eigenvalue of
    largest magnitude, signed. Stops early when the estimate changes by less than ``tol`` relative to its
    magnitude. The start vector is a normal draw of ``generator`` on the CPU, moved to ``device``.
    """
    q = torch.randn(shape, generator=generator, dtype=dtype).to(device).reshape(-1)
    basis, images = [q / q.norm()], []
    lam = None
    for _ in range(iters):
        images.append(hvp(basis[-1].view(shape)).reshape(-1))
        Q, HQ = torch.stack(basis).double(), torch.stack(images).double()
        ritz = torch.linalg.eigvalsh((Q @ HQ.T + HQ @ Q.T) / 2)  # ascending
        new = float(ritz[-1] if largest or ritz[-1] >= -ritz[0] else ritz[0])
        done = lam is not None and abs(new - lam) <= tol * max(abs(new), 1e-12)
        lam = new
        r = HQ[-1]
        for _ in range(2):  # the next power iterate, orthogonalised against the basis (twice: stability)
            r = r - Q.T @ (Q @ r)
        if done or len(basis) == r.numel() or r.norm() == 0:
            break
        basis.append((r / r.norm()).to(q.dtype))
    return 0.0 if lam is None else lam


def dominant_eigenvalue(search: SearchRun, batches: int = 2, iters: int = 20, tol: float = 1e-4) -> float:
    """Dominant eigenvalue of the Hessian of the mean validation (alpha-split) loss w.r.t. all of
    ``search.method.arch_parameters(search.net)``, at the current weights (see the module docstring)."""
    net, method = search.net, search.method
    params = method.arch_parameters(net)
    gen = search.generator(Stream.HESSIAN)
    data = [(search.to_input(x), y) for x, y in islice(search.a_stream.epoch(gen), batches)]
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    was_training = net.training
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [search.device] if search.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), recompute_off(net):
            seed = stream_seed(search.cfg.seed, search.epoch, Stream.HESSIAN_FORWARD)
            torch.random.default_generator.manual_seed(seed)  # not torch.manual_seed: it also seeds CUDA
            if devices:
                with torch.cuda.device(search.device):
                    torch.cuda.manual_seed(seed)
            net.train()
            step = search.step_context()
            loss = sum(method.loss(step, x, y, method.edge_weights(net), "arch")[0] for x, y in data) / len(data)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]  # others: zero rows
            if not used:
                return 0.0
            sizes = [p.numel() for p in params]

            def hvp(v: torch.Tensor) -> torch.Tensor:
                vs = [c.view_as(p) for c, p in zip(v.split(sizes), params)]
                hv = torch.autograd.grad([grads[i] for i in used], params, grad_outputs=[vs[i] for i in used],
                                         retain_graph=True, allow_unused=True)
                return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1).detach()
                                  for h, p in zip(hv, params)])

            gen_v = torch.Generator().manual_seed(search.cfg.seed)
            return power_iteration(hvp, sum(sizes), iters, tol, gen_v, device=params[0].device,
                                   dtype=params[0].dtype)
    finally:
        with torch.no_grad():
            for name, b in net.named_buffers():
                b.copy_(buffers[name])
        net.train(was_training)
        np.random.set_state(np_state)
        random.setstate(py_state)
