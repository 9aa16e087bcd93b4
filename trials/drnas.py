"""DrNAS (Chen et al., ICLR 2021): architecture mixing weights as Dirichlet samples.

Two pieces on the DARTS loop:
- ``Dirichlet``: alpha (eta in the paper) gives concentrations ``elu(alpha) + 1``; every forward
  pass draws the edge weights with ``rsample()`` (pathwise gradient), one sample per edge shared by
  the batch and by all cells of a type. The arch loss adds the regulariser (``l2``: the reference's
  Adam weight decay written as the equivalent loss ``reg_scale/2 * ||alpha||^2``; ``kl``: KL to the
  Dir(1) prior). Derivation uses softmax(alpha) as the reference's ``genotype()``.
- ``Progressive``: the DARTS-space scheme; stages with partial channels K (6 -> 4), between stages
  the weakest ops per edge are pruned (7 -> 4, by raw alpha) and the surviving ops are widened
  Net2Net-style, each stage with its own arch warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Dirichlet as Dir
from torch.distributions import kl_divergence

from trials.config import need
from trials.darts import Darts
from trials.registry import register_method, register_piece, register_section

if TYPE_CHECKING:
    from trials.step import SearchRun, Step


@register_section("drnas")
@dataclass
class DrNASConfig:
    """DrNAS: Dirichlet regulariser, and the progressive scheme of its DARTS-space search."""
    reg: str = "l2"                 # l2 | kl | none
    reg_scale: float = 1e-3
    progressive: bool = False
    stage_epochs: list[int] = field(default_factory=lambda: [25, 25])  # nominal; scaled to `epochs`
    ks: list[int] = field(default_factory=lambda: [6, 4])               # partial channels per stage
    keep_ops: list[int] = field(default_factory=lambda: [7, 4])         # ops kept per edge per stage
    stage_warmup: int = 10          # nominal epochs of each stage before alpha moves (scaled)

    def check(self, cfg: Any) -> None:
        need(self.reg in ("l2", "kl", "none"), f"drnas.reg must be l2, kl or none, got {self.reg!r}")
        need(self.reg_scale >= 0, f"drnas.reg_scale must be >= 0, got {self.reg_scale}")
        if not self.progressive:
            return
        need(len(self.stage_epochs) == len(self.ks) == len(self.keep_ops) >= 1,
             "drnas.stage_epochs, drnas.ks and drnas.keep_ops need one entry per stage")
        need(all(e >= 1 for e in self.stage_epochs), "drnas.stage_epochs must all be >= 1")
        need(all(k >= 1 and cfg.model.C % k == 0 for k in self.ks), f"drnas.ks must divide model.C={cfg.model.C}")
        need(all(k >= 1 for k in self.keep_ops) and list(self.keep_ops) == sorted(self.keep_ops, reverse=True),
             "drnas.keep_ops must be >= 1 and non-increasing")
        need(cfg.arch.order == 1, "drnas.progressive needs arch.order=1 (the reference cannot unroll across stages)")


@register_piece(50, relaxation="dirichlet")
class Dirichlet(Darts):
    op_mask: dict[str, torch.Tensor]  # set by Progressive after pruning: which ops are still alive

    #: torch's Dirichlet sampler advances the CUDA RNG in a way graph capture rejects: eager steps
    graphable = False

    def concentration(self, alpha: torch.Tensor) -> torch.Tensor:
        return F.elu(alpha) + 1.0

    def _mask(self, cell: str) -> torch.Tensor | None:
        return getattr(self, "op_mask", {}).get(cell)

    def edge_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for cell, alpha in self.alphas(net).items():
            theta = Dir(self.concentration(alpha)).rsample()
            mask = self._mask(cell)
            if mask is not None:  # Dirichlet aggregation: renormalised survivors ~ Dir(kept concentrations)
                theta = theta * mask
                theta = theta / theta.sum(-1, keepdim=True)
            out[cell] = theta
        return out

    def genotype_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for cell, alpha in self.alphas(net).items():
            a, mask = alpha.detach(), self._mask(cell)
            out[cell] = F.softmax(a if mask is None else a.masked_fill(~mask, float("-inf")), dim=-1)
        return out

    def regulariser(self, net: nn.Module) -> torch.Tensor:
        d = self.cfg.drnas
        alphas = list(self.alphas(net).values())
        if d.reg == "l2":
            return 0.5 * d.reg_scale * sum((a ** 2).sum() for a in alphas)
        if d.reg == "kl":
            return d.reg_scale * sum(kl_divergence(Dir(self.concentration(a)), Dir(torch.ones_like(a))).sum()
                                     for a in alphas)
        return alphas[0].new_zeros(())

    def loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
             phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = super().loss(step, x, y, weights, phase)
        if phase == "arch":
            loss = loss + self.regulariser(step.supernet)
        return loss, logits


@register_piece(30, when=lambda cfg: cfg.drnas.progressive)
class Progressive(Darts):
    """Stages of ``drnas.stage_epochs`` (scaled to ``epochs``), partial channels ``drnas.ks``,
    ``drnas.keep_ops`` ops per edge and ``drnas.stage_warmup`` arch warm-up epochs per stage."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        d = cfg.drnas
        scale = cfg.epochs / sum(d.stage_epochs)
        bounds = [round(sum(d.stage_epochs[:i]) * scale) for i in range(len(d.stage_epochs) + 1)]
        self.starts = bounds[:-1]
        self.warmups = [min(round(d.stage_warmup * scale), max(b - a - 1, 0)) for a, b in zip(bounds, bounds[1:])]
        self.stage = 0
        self.changes: list[tuple[dict[str, list[list[int]]], int | None]] = []  # (kept op indices, new K)
        self.op_mask: dict[str, torch.Tensor] = {}

    def supernet_options(self) -> dict[str, Any]:
        return {**super().supernet_options(), "partial_k": self.cfg.drnas.ks[0]}

    def stage_of(self, epoch: int) -> int:
        return max(i for i, start in enumerate(self.starts) if epoch >= start)

    def arch_active(self, epoch: int) -> bool:
        s = self.stage_of(epoch)
        return epoch - self.starts[s] >= self.warmups[s]

    def prepare(self, search: SearchRun) -> None:
        super().prepare(search)
        keep0 = self.cfg.drnas.keep_ops[0]
        if any(keep0 < len(ops) for ops in search.net.edge_ops().values() for ops in ops):
            self._prune(search, self._strongest(search, keep0), widen_to=None)

    def on_epoch_start(self, search: SearchRun, epoch: int) -> None:
        super().on_epoch_start(search, epoch)
        while self.stage < self.stage_of(epoch):
            self.stage += 1
            keep = self._strongest(search, self.cfg.drnas.keep_ops[self.stage])
            self._prune(search, keep, widen_to=self.cfg.drnas.ks[self.stage])

    def _strongest(self, search: SearchRun, keep: int) -> dict[str, list[list[int]]]:
        """Top-``keep`` alive ops per edge by raw alpha (DrNAS ``utils.prune``)."""
        out = {}
        for cell, alpha in self.alphas(search.net).items():
            a = alpha.detach().clone()
            if cell in self.op_mask:
                a[~self.op_mask[cell]] = float("-inf")
            out[cell] = [sorted(row.topk(min(keep, row.numel())).indices.tolist()) for row in a]
        return out

    def _prune(self, search: SearchRun, kept: dict[str, list[list[int]]], widen_to: int | None) -> None:
        net = search.net
        self.changes.append((kept, widen_to))
        moved = []
        gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + len(self.changes))
        for cell, e, op in net.mixed_ops():
            op.prune(kept[cell][e])
            if widen_to is not None:
                moved += op.widen(widen_to, gen)
        with torch.no_grad():
            for cell, alpha in self.alphas(net).items():
                mask = torch.zeros_like(alpha, dtype=torch.bool)
                for e, idx in enumerate(kept[cell]):
                    mask[e, idx] = True
                alpha.masked_fill_(~mask, 0.0)  # the reference overwrites eta with the kept values
                self.op_mask[cell] = mask
        if widen_to is not None and hasattr(search, "w_opt"):
            search.rebuild_weight_optimizer(moved)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage, "changes": self.changes}

    def load_state_dict(self, search: SearchRun, state: dict[str, Any]) -> None:
        """Replay the checkpoint's stage changes so the supernet has its shapes, then let it load."""
        super().load_state_dict(search, state)
        for kept, widen_to in state["changes"][len(self.changes):]:
            self._prune(search, kept, widen_to)
        self.stage = state["stage"]


@register_method("drnas")
def defaults(space: str) -> dict[str, Any]:
    """The DrNAS code's protocols: NB201 non-progressive (201-space/train_search.py: 100 epochs,
    SGD 0.025 -> 0.001 wd 3e-4, Adam 3e-4 with the L2 regulariser 1e-3); the DARTS space progressive
    (DARTS-space/train_search.py: 20 cells C=36, no `none`, SGD 0.1 -> 0, Adam 6e-4, 25 + 25 epochs,
    K 6 -> 4, ops 7 -> 4, 10 warm-up epochs per stage). S1-S4 keep their op lists, non-progressive.
    The arch step comes first everywhere."""
    base = {"relaxation": "dirichlet", "drnas": {"reg": "l2", "reg_scale": 1e-3}}
    arch = {"weight_decay": 0.0, "step_order": "arch_weight"}
    if space == "nb201":
        return {**base, "epochs": 100, "optim": {"lr": 0.025, "lr_min": 0.001, "weight_decay": 3e-4,
                                                  "nesterov": False}, "arch": {**arch, "lr": 3e-4}}
    if space == "darts":
        return {**base, "model": {"C": 36, "layers": 20, "exclude_ops": ["none"]},
                "optim": {"lr": 0.1, "lr_min": 0.0}, "arch": {**arch, "lr": 6e-4},
                "drnas": {"reg": "l2", "reg_scale": 1e-3, "progressive": True, "stage_epochs": [25, 25],
                          "ks": [6, 4], "keep_ops": [7, 4], "stage_warmup": 10}}
    return {**base, "arch": {**arch, "lr": 6e-4}}
