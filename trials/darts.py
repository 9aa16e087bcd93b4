"""DARTS (Liu et al., ICLR 2019): softmax relaxation, first order and second order (unrolled).

``Darts`` is also the base class of every variant: a variant overrides a few of these small hooks
(``edge_weights``, ``weight_parameters``, ``loss``, ``on_epoch_start``, ...) and inherits the loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

import search_spaces
from raynas.config import SearchConfig

if TYPE_CHECKING:
    from raynas.data import Dataset
    from trials.bilevel import Search


class Darts:
    """DARTS first order: alpha -> softmax edge weights, cross-entropy, Adam step on the val batch."""

    #: the steps never wait on the host, so an epoch's iterations can replay from a CUDA graph
    graphable = True

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg

    # -- what is searched ---------------------------------------------------------------------
    def build_supernet(self, data: Dataset) -> nn.Module:
        m = self.cfg.model
        return search_spaces.build_supernet(self.cfg.space, C=m.C, layers=m.layers, num_classes=data.num_classes,
                                            in_channels=data.in_channels, track_running_stats=m.track_running_stats,
                                            **self.supernet_options())

    def supernet_options(self) -> dict[str, Any]:
        """Structural choices of the supernet: BN affine (random features), partial channels, op set."""
        return {"affine": False, "partial_k": self.cfg.pc.k, "exclude_ops": tuple(self.cfg.model.exclude_ops)}

    def prepare(self, search: Search) -> None:
        """Called once the supernet exists, before the optimisers are built (e.g. to freeze weights)."""

    # -- how alpha becomes edge weights ---------------------------------------------------------
    @staticmethod
    def alphas(net: nn.Module) -> dict[str, nn.Parameter]:
        """The per-cell-type op alphas (``net.alphas`` may also hold a variant's extra arch parameters)."""
        return {cell: net.alphas[cell] for cell in net.edge_ops()}

    def edge_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """Weights used in training forward passes (differentiable in alpha)."""
        return {k: F.softmax(a, dim=-1) for k, a in self.alphas(net).items()}

    def genotype_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """Deterministic weights for derivation and evaluation."""
        return {k: F.softmax(a.detach(), dim=-1) for k, a in self.alphas(net).items()}

    def eval_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """What the evaluation forward gets: the genotype weights plus any other input of the
        supernet's training forward (PC-DARTS' edge scales)."""
        return self.genotype_weights(net)

    # -- which parameters train -------------------------------------------------------------------
    def arch_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        return list(net.alphas.values())

    def weight_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters(net)}
        return [p for p in net.parameters() if id(p) not in arch and p.requires_grad]

    def weight_param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        """SGD parameter groups (a variant may give some parameters their own weight decay)."""
        return [{"params": self.weight_parameters(net)}]

    # -- the loss ---------------------------------------------------------------------------------
    def loss(self, search: Search, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
             phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy; variants add terms here. ``phase`` is ``"weight"`` or ``"arch"``."""
        logits = search.net(x, weights)
        return F.cross_entropy(logits, y), logits

    def eval_loss(self, search: Search, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and logits of one evaluation batch (DARTS ``infer``: cross-entropy of the clean
        batch); alphaDARTS masks it as its authors do."""
        logits = search.net(x, weights)
        return F.cross_entropy(logits, y, reduction="sum"), logits

    # -- the arch step ------------------------------------------------------------------------------
    def arch_step(self, search: Search, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                  y_va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First order: grad of the validation loss w.r.t. alpha at the current weights."""
        params = self.arch_parameters(search.net)
        with weights_frozen(self.weight_parameters(search.net)):
            # only alpha's gradient is needed: with the weights recorded as constants no backward
            # (the recomputed segments' and the column-blocked convs' included) computes their gradients
            loss, logits = self.loss(search, x_va, y_va, self.edge_weights(search.net), "arch")
            self._set_grads(params, torch.autograd.grad(loss, params, allow_unused=True))
        search.a_opt.step()
        return loss.detach(), logits.detach()

    @staticmethod
    def _set_grads(params: list[nn.Parameter], grads: tuple[torch.Tensor | None, ...]) -> None:
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g

    # -- schedule and state -------------------------------------------------------------------------
    def on_epoch_start(self, search: Search, epoch: int) -> None:
        """Per-epoch schedule (stages, ...); DARTS has none."""

    def arch_active(self, epoch: int) -> bool:
        """Whether alpha is updated in this epoch (warm-up trains the weights alone first)."""
        return epoch >= self.cfg.arch.warmup_epochs

    def epoch_metrics(self) -> dict[str, Any]:
        """Extra per-epoch metrics of a variant (e.g. the MIM reconstruction loss)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, search: Search, state: dict[str, Any]) -> None:
        pass


class SecondOrder(Darts):
    """DARTS second order: alpha's gradient through one unrolled SGD step of the weights.

    g = dL_val(w', a)/da - xi * d2L_train(w, a)/(da dw) . dL_val(w', a)/dw',
    w' = w - xi (mu * momentum + dL_train/dw + wd * w), with the Hessian-vector product by central
    finite differences at w +- eps * v, eps = unrolled_eps / ||v|| (DARTS ``architect.py``).
    """

    def arch_step(self, search: Search, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                  y_va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net, arch = search.net, self.arch_parameters(search.net)
        trainable = {id(p) for p in self.weight_parameters(net)}
        named = [(n, p) for n, p in net.named_parameters() if id(p) in trainable]
        names, ws = [n for n, _ in named], [p for _, p in named]
        groups = search.w_opt.param_groups
        xi, mu = groups[0]["lr"], groups[0]["momentum"]
        decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}

        def train_loss(params: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
            loss, _ = self.loss(_Functional(search, params), x_tr, y_tr, weights, "weight")
            return loss

        # 1. virtual step w' (exactly SGD-with-momentum's next iterate, as in the reference)
        fixed = {k: v.detach() for k, v in self.edge_weights(net).items()}
        g_w = torch.autograd.grad(train_loss(dict(zip(names, ws)), fixed), ws)
        w_virtual = []
        for p, g in zip(ws, g_w):
            buf = search.w_opt.state.get(p, {}).get("momentum_buffer")
            step = g + decay[id(p)] * p.detach() + (mu * buf if buf is not None else 0.0)
            w_virtual.append((p.detach() - xi * step).requires_grad_())
        # 2. validation loss at w' (on a copy of the BN buffers, like the reference's model copy)
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        virtual = _Functional(search, {**dict(zip(names, w_virtual)), **buffers})
        loss, logits = self.loss(virtual, x_va, y_va, self.edge_weights(net), "arch")
        grads = torch.autograd.grad(loss, arch + w_virtual, allow_unused=True)
        d_alpha, v = grads[: len(arch)], grads[len(arch):]
        v = [torch.zeros_like(w) if g is None else g for g, w in zip(v, ws)]
        # 3. Hessian-vector product by central differences on the training loss
        eps = self.cfg.arch.unrolled_eps / torch.cat([g.reshape(-1) for g in v]).norm()
        hvp = []
        for sign in (1.0, -1.0):
            shifted = {n: p.detach() + sign * eps * g for n, p, g in zip(names, ws, v)}
            hvp.append(torch.autograd.grad(train_loss(shifted, self.edge_weights(net)), arch, allow_unused=True))
        grads_alpha = []
        for da, gp, gm, a in zip(d_alpha, *hvp, arch):
            da = torch.zeros_like(a) if da is None else da
            h = (0 if gp is None else gp) - (0 if gm is None else gm)
            grads_alpha.append(da - xi * h / (2 * eps))
        self._set_grads(arch, tuple(grads_alpha))
        search.a_opt.step()
        return loss.detach(), logits.detach()


@contextlib.contextmanager
def weights_frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Record ``params`` as constants in graphs built inside (their ``requires_grad`` is restored)."""
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _Functional:
    """A stand-in for ``Search`` whose ``net`` runs with substituted parameters (torch.func)."""

    def __init__(self, search: Search, params: dict[str, torch.Tensor]):
        self._search, self._params = search, params
        self.cfg = search.cfg
        self.supernet = search.net  # module attributes (features, decoder) live on the real module

    def net(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self._search.net, self._params, (x, weights))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._search, name)


def defaults(space: str) -> dict[str, Any]:
    """DARTS uses the space's paper defaults (quark0/darts; NAS-Bench-201's DARTS config)."""
    return {}


def defaults_second_order(space: str) -> dict[str, Any]:
    """Unrolled DARTS; the arch step comes first (quark0/darts, NAS-Bench-201's DARTS-V2 script)."""
    return {"arch": {"order": 2, "step_order": "arch_weight"}}
