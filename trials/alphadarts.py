"""alphaDARTS (Guo et al., arXiv 2211.10105): masked image modelling added to the search.

As the authors' search code runs it (GitHub AlbertiPot/Semantic-DARTS at d525eed, ``--task
cls_mask``): each batch is normalised, cut into ``mim.patch_size`` patches, and per image all but
``int(L * (1 - mask_ratio))`` random patches are set to ``mim.mask_value`` (1.0). One forward of the
masked batch feeds the classifier and a decoder of the last cell's features; the loss of both steps
is ``l_cls + l_rec / (l_rec / l_cls).detach()`` (``mim.loss_weight: auto``), with ``l_rec`` the
per-patch MSE averaged over the masked patches only; validation masks its batches too. Selection is
by the largest alpha, exactly as DARTS. Every choice is a ``mim.*`` field (ablations, the Optuna
study); with ``mim.loss_weight=0`` this is exactly DARTS.

In the steps the piece reads only the step context (the forward with the last cell's features, and the
supernet whose ``aux`` holds the decoder); at ``prepare`` the run's data, device and supernet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from trials.config import ConfigError, need
from trials.darts import Darts
from trials.registry import register_method, register_piece, register_section

if TYPE_CHECKING:
    from trials.batches import Dataset
    from trials.step import SearchRun, Step

Classify = Callable[["Step", torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@register_section("mim")
@dataclass
class MIMConfig:
    """alphaDARTS masked image modelling. The defaults are the authors' search code (GitHub
    AlbertiPot/Semantic-DARTS at d525eed, ``--task cls_mask``); every choice stays a field for
    ablations and the Optuna study. The README's "choices and their source" table cites each one."""
    enabled: bool = False
    mask_ratio: float = 0.8        # per image int(L * (1 - ratio)) of the L patches are kept, the rest masked
    patch_size: int = 4
    loss_weight: float | str = "auto"  # auto: + l_rec / (l_rec / l_cls).detach(), i.e. rescaled to the
                                       # cross-entropy's value each step; a number: fixed weight; 0: off (DARTS)
    steps: str = "both"            # weight | arch | both: which steps add the reconstruction loss
    loss: str = "mse"              # mse | l1 | l2: per patch mean squared error, mean absolute error or the
                                   # Euclidean norm, then the mean over the masked patches only
    mask_value: float = 1.0        # masked pixels, in normalised units (the authors' mask token of ones)
    decoder: str = "authors"       # authors (convs, 2 transposed convs, Hardtanh) | light (1x1 conv + PixelShuffle)
    cls_on_masked: bool = True     # the classifier sees the masked image: one forward feeds both heads
    reconstruct: bool = True       # false: cross-entropy only (the "corrupted input, only cls loss" ablation)
    masked_eval: bool = True       # the epoch's validation masks its images too, with the steps' loss

    def check(self, cfg: Any) -> None:
        need(0.0 < self.mask_ratio < 1.0, f"mim.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        need(self.patch_size >= 1, f"mim.patch_size must be >= 1, got {self.patch_size}")
        need(self.loss_weight == "auto" or (isinstance(self.loss_weight, float) and self.loss_weight >= 0),
             f"mim.loss_weight must be auto or a number >= 0, got {self.loss_weight!r}")
        need(self.steps in ("weight", "arch", "both"), f"mim.steps must be weight, arch or both, got {self.steps!r}")
        need(self.loss in ("mse", "l1", "l2"), f"mim.loss must be mse, l1 or l2, got {self.loss!r}")
        need(self.decoder in ("authors", "light"), f"mim.decoder must be authors or light, got {self.decoder!r}")


def patch_mask(shape: torch.Size, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean [B, 1, H, W], True where masked: per image a random permutation keeps its first
    ``int(L * (1 - ratio))`` of the L patches and masks the rest (the authors' ``random_masking``)."""
    b, _, h, w = shape
    gh, gw = h // patch, w // patch
    n_keep = int(gh * gw * (1 - ratio))
    scores = torch.rand(b, gh * gw, generator=generator, device=generator.device)
    masked = scores.argsort(dim=1).argsort(dim=1) >= n_keep
    grid = masked.view(b, 1, gh, gw)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch: int,
                        kind: str) -> torch.Tensor:
    """Per patch over its p*p*C values: mean squared error (``mse``, the authors' ``MaskMSE``), mean
    absolute error (``l1``) or the Euclidean norm (``l2``); then the mean over the masked patches only."""
    b, c, h, w = target.shape
    err = (rec - target).reshape(b, c, h // patch, patch, w // patch, patch)
    dims = (1, 3, 5)
    if kind == "mse":
        per_patch = err.pow(2).mean(dim=dims)
    elif kind == "l1":
        per_patch = err.abs().mean(dim=dims)
    else:
        per_patch = torch.linalg.vector_norm(err, dim=dims)  # its gradient at a zero patch error is 0
    masked = mask[:, 0, ::patch, ::patch].to(per_patch.dtype)  # [B, H/p, W/p], one entry per patch
    return (per_patch * masked).sum() / masked.sum()


def normalised_range(data: Dataset) -> tuple[float, float]:
    """The range of normalised pixels over all channels: what the authors' Hardtanh clamps to
    (their ``DATA_STATS``, e.g. CIFAR-10 (-1.99, 2.13), are these values rounded outwards)."""
    lo = min(-m / s for m, s in zip(data.mean, data.std))
    hi = max((1 - m) / s for m, s in zip(data.mean, data.std))
    return lo, hi


def authors_decoder(c_in: int, c_out: int, up: int, clamp: tuple[float, float]) -> nn.Sequential:
    """``model_search.Decoder``: 3x3 conv C -> 4C, 1x1 conv 4C -> C, 3x3 conv + BN + ReLU, then per
    factor 2 of upsampling a ConvTranspose2d(4, stride 2) + BN + ReLU halving the channels (a 3x3
    conv + BN + ReLU between two of them), a 3x3 conv to the image channels and a Hardtanh to the
    normalised pixel range. ``up`` = 4 (two transposed convs) on every space here, as in the code."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, 4 * c_in, 3, padding=1), nn.Conv2d(4 * c_in, c_in, 1),
                               nn.Conv2d(c_in, c_in, 3, padding=1), nn.BatchNorm2d(c_in), nn.ReLU()]
    c, n_up = c_in, up.bit_length() - 1
    for i in range(n_up):
        half = max(c // 2, 1)
        layers += [nn.ConvTranspose2d(c, half, 4, stride=2, padding=1), nn.BatchNorm2d(half), nn.ReLU()]
        c = half
        if i < n_up - 1:
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
    layers += [nn.Conv2d(c, c_out, 3, padding=1), nn.Hardtanh(*clamp)]
    return nn.Sequential(*layers)


def light_decoder(c_in: int, c_out: int, up: int) -> nn.Sequential:
    """SimMIM's light decoder (the ablation): a 1x1 conv to c_out * up^2 channels + PixelShuffle."""
    return nn.Sequential(nn.Conv2d(c_in, c_out * up * up, 1), nn.PixelShuffle(up))


@register_piece(10, when=lambda cfg: cfg.mim.enabled)
class MaskedImageModelling(Darts):
    #: masks come from the method's own generators and the reconstruction loss is read each step: eager
    graphable = False

    @property
    def active(self) -> bool:
        """``mim.loss_weight=0`` switches the piece off entirely (DARTS, bit for bit)."""
        return self.cfg.mim.loss_weight != 0

    def prepare(self, search: SearchRun) -> None:
        super().prepare(search)
        cfg, m = self.cfg, self.cfg.mim
        self.mask_gen = torch.Generator(device=search.device).manual_seed(cfg.seed * 31 + 17)
        self.eval_mask_gen = torch.Generator(device=search.device).manual_seed(cfg.seed * 31 + 18)
        self._rec = [0.0, 0]
        if self.active and search.data.resolution % m.patch_size:
            raise ConfigError(f"mim.patch_size={m.patch_size} must divide the {cfg.dataset} image size "
                              f"{search.data.resolution}")
        if self.active and m.reconstruct:
            search.net.aux["mim_decoder"] = self._build_decoder(search).to(search.device)

    def _build_decoder(self, search: SearchRun) -> nn.Module:
        data, net = search.data, search.net
        with torch.random.fork_rng(devices=[]):  # the probe and decoder init leave the search's RNG alone
            torch.manual_seed(self.cfg.seed + 7)
            was_training = net.training
            net.eval()
            with torch.no_grad():
                x = torch.zeros(1, data.in_channels, data.resolution, data.resolution, device=search.device)
                _, features = net(x, self.eval_weights(net), return_features=True)
            net.train(was_training)
            c_feat, side = features.shape[1], features.shape[-1]
            up = data.resolution // side
            if side * up != data.resolution or up & (up - 1):
                raise ConfigError(f"mim.decoder: the last features ({side}x{side}) must upsample to the "
                                  f"{data.resolution}x{data.resolution} images by a power of two")
            if self.cfg.mim.decoder == "light":
                return light_decoder(c_feat, data.in_channels, up)
            return authors_decoder(c_feat, data.in_channels, up, normalised_range(data))

    def uses_mim(self, phase: str) -> bool:
        steps = self.cfg.mim.steps
        return self.active and (steps == "both" or steps == phase)

    def weighted(self, rec: torch.Tensor, l_cls: torch.Tensor) -> torch.Tensor:
        """``auto``: the authors' ``l_rec / (l_rec / l_cls).detach()`` (its value is l_cls's, its
        gradient l_rec's scaled by l_cls / l_rec); a number: that fixed weight."""
        w = self.cfg.mim.loss_weight
        return rec / (rec / l_cls).detach() if w == "auto" else w * rec

    def masked_loss(self, step: Step, x: torch.Tensor, weights: dict[str, torch.Tensor],
                    generator: torch.Generator, classify: Classify
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mask ``x``; ``classify`` the masked (``cls_on_masked``) or the clean batch; add the weighted
        reconstruction loss of the masked patches -> (loss, logits, reconstruction loss or None)."""
        m = self.cfg.mim
        mask = patch_mask(x.shape, m.patch_size, m.mask_ratio, generator)
        masked = x.masked_fill(mask, m.mask_value)
        if not m.reconstruct:
            l_cls, logits = classify(step, masked if m.cls_on_masked else x)
            return l_cls, logits, None
        if m.cls_on_masked:  # one forward feeds both heads: the decoder reads the classifier's features
            tapped, seen = step.tap_features()
            l_cls, logits = classify(tapped, masked)
            features = seen[-1]
        else:
            l_cls, logits = classify(step, x)
            _, features = step.forward_features(masked, weights)
        rec = self.reconstruction(step, features, x, mask)
        return l_cls + self.weighted(rec, l_cls), logits, rec

    def reconstruction(self, step: Step, features: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
                       ) -> torch.Tensor:
        """The decoder's output from the masked batch's features against the clean batch ``x``."""
        return reconstruction_loss(step.supernet.aux["mim_decoder"](features), x, mask, self.cfg.mim.patch_size,
                                   self.cfg.mim.loss)

    def loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor],
             phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        if phase == "weight" and not self.uses_mim("weight") and self.uses_mim("arch") and self.cfg.mim.reconstruct:
            return self._decoder_loss(step, x, y, weights)
        if not self.uses_mim(phase):
            return super().loss(step, x, y, weights, phase)
        base = super().loss
        loss, logits, rec = self.masked_loss(step, x, weights, self.mask_gen,
                                             lambda st, inp: base(st, inp, y, weights, phase))
        if rec is not None:
            self._rec[0] += float(rec.detach())
            self._rec[1] += 1
        return loss, logits

    def eval_loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' ``infer``: the validation batch masked, with the steps' combined loss (its own
        mask generator, so evaluating leaves the training masks unchanged)."""
        if not (self.active and self.cfg.mim.masked_eval):
            return super().eval_loss(step, x, y, weights)

        def classify(st: Step, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = st.forward(inp, weights)
            return F.cross_entropy(logits, y), logits

        loss, logits, _ = self.masked_loss(step, x, weights, self.eval_mask_gen, classify)
        return loss * len(y), logits

    def _decoder_loss(self, step: Step, x: torch.Tensor, y: torch.Tensor, weights: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mim.steps=arch``: the weight step's cross-entropy, plus the reconstruction loss on features
        computed without gradient, so it trains the decoder only (it would otherwise stay random: the
        arch step updates alpha alone) and the supernet weights never see it."""
        m = self.cfg.mim
        loss, logits = super().loss(step, x, y, weights, "weight")
        mask = patch_mask(x.shape, m.patch_size, m.mask_ratio, self.mask_gen)
        with torch.no_grad():
            _, features = step.forward_features(x.masked_fill(mask, m.mask_value), weights)
        return loss + self.weighted(self.reconstruction(step, features, x, mask), loss), logits

    def epoch_metrics(self) -> dict[str, Any]:
        total, n = self._rec
        self._rec = [0.0, 0]
        return {**super().epoch_metrics(), "mim_rec_loss": total / n if n else None}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask_gen": self.mask_gen.get_state(),
                "eval_mask_gen": self.eval_mask_gen.get_state()}

    def load_state_dict(self, search: SearchRun, state: dict[str, Any]) -> None:
        super().load_state_dict(search, state)
        for key in ("mask_gen", "eval_mask_gen"):
            if key in state:  # checkpoints before masked evaluation carry only the training generator
                value = state[key]
                getattr(self, key).set_state(value.cpu() if torch.is_tensor(value) else value)


@register_method("alphadarts")
def defaults(space: str) -> dict[str, Any]:
    """The authors' ``cls_mask`` search: ``MIMConfig``'s defaults are their values. On the DARTS space
    the space's preset is their ``train_search.py`` protocol (checked); on NB-201, where they publish
    no script, the same MIM choices run on DARTS' NB-201 protocol (weight step first, nesterov)."""
    return {"mim": {"enabled": True}}
