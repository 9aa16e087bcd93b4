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

import search_spaces
from trials.registry import pieces, register_method, register_piece
from trials.step import SearchRun, Step

if TYPE_CHECKING:
    from trials.batches import Dataset
    from trials.search_config import CoreSearchConfig as SearchConfig


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
        """Structural choices of the supernet: BN affine (random features), the op set, and what the
        method blocks ask for (PC-DARTS' partial channels)."""
        opts: dict[str, Any] = {"affine": False, "exclude_ops": tuple(self.cfg.model.exclude_ops)}
        for section in self.cfg.sections().values():
            opts.update(section.supernet_options() if hasattr(section, "supernet_options") else {})
        return opts

    def prepare(self, search: SearchRun) -> None:
        """Called once the supernet exists, before the optimisers are built (e.g. to freeze weights)."""

    # -- how alpha becomes edge weights ---------------------------------------------------------
    @staticmethod
    def alphas(net: nn.Module) -> dict[str, nn.Parameter]:
        """The per-cell-type op alphas (a variant's further arch parameters are in ``net.arch_extra``)."""
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
        """Alpha, then what a variant added to ``net.arch_extra`` (PC-DARTS' beta): the arch optimiser's."""
        return [*net.alphas.values(), *net.arch_extra.values()]

    def weight_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters(net)}
        return [p for p in net.parameters() if id(p) not in arch and p.requires_grad]

    def weight_param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        """SGD parameter groups (a variant may give some parameters their own weight decay)."""
        return [{"params": self.weight_parameters(net)}]

    # -- the loss ---------------------------------------------------------------------------------
    def loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
             phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy; variants add terms here. ``phase`` is ``"weight"`` or ``"arch"``."""
        logits = step.forward(x, weights)
        return F.cross_entropy(logits, y), logits

    def eval_loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and logits of one evaluation batch (DARTS ``infer``: cross-entropy of the clean
        batch); alphaDARTS masks it as its authors do."""
        logits = step.forward(x, weights)
        return F.cross_entropy(logits, y, reduction="sum"), logits

    # -- the arch step ------------------------------------------------------------------------------
    def arch_step(self, step: Step, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                  y_va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First order: grad of the validation loss w.r.t. alpha at the current weights."""
        net = step.supernet
        params = self.arch_parameters(net)
        with weights_frozen(self.weight_parameters(net)):
            # only alpha's gradient is needed: with the weights recorded as constants no backward
            # (the recomputed segments' and the column-blocked convs' included) computes their gradients
            loss, logits = self.loss(step, x_va, y_va, self.edge_weights(net), "arch")
            self._set_grads(params, torch.autograd.grad(loss, params, allow_unused=True))
        step.a_opt.step()
        return loss.detach(), logits.detach()

    @staticmethod
    def _set_grads(params: list[nn.Parameter], grads: tuple[torch.Tensor | None, ...]) -> None:
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g

    # -- schedule and state -------------------------------------------------------------------------
    def on_epoch_start(self, search: SearchRun, epoch: int) -> None:
        """Per-epoch schedule (stages, ...); DARTS has none."""

    def arch_active(self, epoch: int) -> bool:
        """Whether alpha is updated in this epoch (warm-up trains the weights alone first)."""
        return epoch >= self.cfg.arch.warmup_epochs

    def epoch_metrics(self) -> dict[str, Any]:
        """Extra per-epoch metrics of a variant (e.g. the MIM reconstruction loss)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, search: SearchRun, state: dict[str, Any]) -> None:
        pass


@register_piece(60, when=lambda cfg: cfg.arch.order == 2)
class SecondOrder(Darts):
    """DARTS second order: alpha's gradient through one unrolled SGD step of the weights.

    g = dL_val(w', a)/da - xi * d2L_train(w, a)/(da dw) . dL_val(w', a)/dw',
    w' = w - xi (mu * momentum + dL_train/dw + wd * w), with the Hessian-vector product by central
    finite differences at w +- eps * v, eps = unrolled_eps / ||v|| (DARTS ``architect.py``).
    """

    def arch_step(self, step: Step, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                  y_va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = step.supernet
        arch = self.arch_parameters(net)
        trainable = {id(p) for p in self.weight_parameters(net)}
        named = [(n, p) for n, p in net.named_parameters() if id(p) in trainable]
        names, ws = [n for n, _ in named], [p for _, p in named]
        groups = step.w_opt.param_groups
        xi, mu = groups[0]["lr"], groups[0]["momentum"]
        decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}

        def train_loss(params: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
            loss, _ = self.loss(step.with_params(params), x_tr, y_tr, weights, "weight")
            return loss

        # 1. virtual step w' (exactly SGD-with-momentum's next iterate, as in the reference)
        fixed = {k: v.detach() for k, v in self.edge_weights(net).items()}
        g_w = torch.autograd.grad(train_loss(dict(zip(names, ws)), fixed), ws)
        w_virtual = []
        for p, g in zip(ws, g_w):
            buf = step.w_opt.state.get(p, {}).get("momentum_buffer")
            update = g + decay[id(p)] * p.detach() + (mu * buf if buf is not None else 0.0)
            w_virtual.append((p.detach() - xi * update).requires_grad_())
        # 2. validation loss at w' (on a copy of the BN buffers, like the reference's model copy)
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        virtual = step.with_params({**dict(zip(names, w_virtual)), **buffers})
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
        step.a_opt.step()
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


@register_method("darts")
def defaults(space: str) -> dict[str, Any]:
    """DARTS uses the space's paper defaults (quark0/darts; NAS-Bench-201's DARTS config)."""
    return {}


@register_method("darts2")
def defaults_second_order(space: str) -> dict[str, Any]:
    """Unrolled DARTS; the arch step comes first (quark0/darts, NAS-Bench-201's DARTS-V2 script)."""
    return {"arch": {"order": 2, "step_order": "arch_weight"}}


def build_method(cfg: SearchConfig) -> Darts:
    """The method a resolved config describes: its active pieces (``trials.registry``) composed over DARTS."""
    chosen = pieces(cfg)
    if not chosen:
        return Darts(cfg)
    cls = type("+".join(p.__name__ for p in chosen), (*chosen, Darts), {})
    return cls(cfg)
