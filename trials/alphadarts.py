"""alphaDARTS (Guo et al., arXiv 2211.10105): masked image modelling added to the search.

Random patches of the input are masked (``mim.mask_ratio``, ``mim.patch_size``); a light decoder
(1x1 conv + PixelShuffle, SimMIM-style) reconstructs the pixels from the supernet's last features,
and ``mim.loss_weight`` x the reconstruction error on masked pixels joins the cross-entropy in the
steps named by ``mim.steps``. Selection is by the largest alpha, exactly as DARTS.

The paper's full text is not available here, so every choice above is a config field; the defaults
are the SimMIM-style reading documented in the README. With ``loss_weight=0`` this is exactly
DARTS: the decoder and the mask generator never touch the search's random stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from trials.config import ConfigError, need
from trials.darts import Darts
from trials.registry import register_method, register_piece, register_section

if TYPE_CHECKING:
    from trials.step import SearchRun, Step


@register_section("mim")
@dataclass
class MIMConfig:
    """alphaDARTS masked image modelling (paper text unavailable: every choice is a field)."""
    enabled: bool = False
    mask_ratio: float = 0.5
    patch_size: int = 4
    loss_weight: float = 1.0
    steps: str = "weight"          # weight | arch | both: which steps add the reconstruction loss
    loss: str = "l1"               # l1 | l2, on masked pixels of the normalised input
    cls_on_masked: bool = False    # classify the masked image (one forward) instead of the clean one

    def check(self, cfg: Any) -> None:
        need(0.0 < self.mask_ratio < 1.0, f"mim.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        need(self.patch_size >= 1, f"mim.patch_size must be >= 1, got {self.patch_size}")
        need(self.loss_weight >= 0, f"mim.loss_weight must be >= 0, got {self.loss_weight}")
        need(self.steps in ("weight", "arch", "both"), f"mim.steps must be weight, arch or both, got {self.steps!r}")
        need(self.loss in ("l1", "l2"), f"mim.loss must be l1 or l2, got {self.loss!r}")


def patch_mask(shape: torch.Size, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean [B, 1, H, W] mask with exactly round(ratio * patches) random patches per image set."""
    b, _, h, w = shape
    gh, gw = h // patch, w // patch
    n_masked = round(ratio * gh * gw)
    scores = torch.rand(b, gh * gw, generator=generator, device=generator.device)
    masked = scores.argsort(dim=1).argsort(dim=1) < n_masked
    grid = masked.view(b, 1, gh, gw)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


@register_piece(10, when=lambda cfg: cfg.mim.enabled)
class MaskedImageModelling(Darts):
    #: masks come from the method's own generator and the reconstruction loss is read each step: eager
    graphable = False

    def prepare(self, search: SearchRun) -> None:
        super().prepare(search)
        cfg, data, net = self.cfg, search.data, search.net
        p = cfg.mim.patch_size
        if data.resolution % p:
            raise ConfigError(f"mim.patch_size={p} must divide the {cfg.dataset} image size {data.resolution}")
        with torch.random.fork_rng(devices=[]):  # the probe and decoder init leave the search's RNG alone
            torch.manual_seed(cfg.seed + 7)
            was_training = net.training
            net.eval()
            with torch.no_grad():
                x = torch.zeros(1, data.in_channels, data.resolution, data.resolution, device=search.device)
                net(x, self.eval_weights(net))
            net.train(was_training)
            feats = net.features
            up = data.resolution // feats.shape[-1]
            decoder = nn.Sequential(nn.Conv2d(feats.shape[1], data.in_channels * up * up, 1), nn.PixelShuffle(up))
        net.add_module("mim_decoder", decoder.to(search.device))
        self.mask_gen = torch.Generator(device=search.device).manual_seed(cfg.seed * 31 + 17)
        self._rec = [0.0, 0]

    def uses_mim(self, phase: str) -> bool:
        steps = self.cfg.mim.steps
        return self.cfg.mim.loss_weight > 0 and (steps == "both" or steps == phase)

    def reconstruction_loss(self, net: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rec = net.mim_decoder(net.features)
        err = (rec - x).abs() if self.cfg.mim.loss == "l1" else (rec - x) ** 2
        return (err * mask).sum() / (mask.sum() * x.shape[1]).clamp_min(1)

    def loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
             phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        if phase == "weight" and not self.uses_mim("weight") and self.uses_mim("arch"):
            return self._decoder_loss(step, x, y, weights)
        if not self.uses_mim(phase):
            return super().loss(step, x, y, weights, phase)
        mask = patch_mask(x.shape, self.cfg.mim.patch_size, self.cfg.mim.mask_ratio, self.mask_gen)
        masked = x.masked_fill(mask, 0.0)  # zero in normalised space = the dataset mean
        if self.cfg.mim.cls_on_masked:
            loss, logits = super().loss(step, masked, y, weights, phase)
        else:
            loss, logits = super().loss(step, x, y, weights, phase)
            step.forward(masked, weights)
        rec = self.reconstruction_loss(step.supernet, x, mask)
        self._rec[0] += float(rec.detach())
        self._rec[1] += 1
        return loss + self.cfg.mim.loss_weight * rec, logits

    def _decoder_loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mim.steps=arch``: the weight step's cross-entropy, plus the reconstruction loss on features
        computed without gradient, so it trains the decoder only (it would otherwise stay random: the
        arch step updates alpha alone) and the supernet weights never see it."""
        loss, logits = super().loss(step, x, y, weights, "weight")
        mask = patch_mask(x.shape, self.cfg.mim.patch_size, self.cfg.mim.mask_ratio, self.mask_gen)
        with torch.no_grad():
            step.forward(x.masked_fill(mask, 0.0), weights)
        return loss + self.cfg.mim.loss_weight * self.reconstruction_loss(step.supernet, x, mask), logits

    def epoch_metrics(self) -> dict[str, Any]:
        total, n = self._rec
        self._rec = [0.0, 0]
        return {**super().epoch_metrics(), "mim_rec_loss": total / n if n else None}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask_gen": self.mask_gen.get_state()}

    def load_state_dict(self, search: SearchRun, state: dict[str, Any]) -> None:
        super().load_state_dict(search, state)
        self.mask_gen.set_state(state["mask_gen"].cpu() if torch.is_tensor(state["mask_gen"]) else state["mask_gen"])


@register_method("alphadarts")
def defaults(space: str) -> dict[str, Any]:
    """DARTS' protocol plus MIM with the documented defaults (ratio 0.5, patch 4, weight 1, w step)."""
    return {"mim": {"enabled": True}}
