"""Retraining a found genotype from scratch, as the papers do: one ``EpochRun`` per (genotype, seed).

DARTS-family spaces follow quark0/darts ``cnn/train.py``: ``NetworkCIFAR`` with 20 cells at C=36 and
an auxiliary head (weight 0.4), batch 96, SGD lr 0.025 (cosine to 0 over 600 epochs), momentum 0.9,
wd 3e-4, grad clip 5, drop-path ramped linearly to 0.2, cutout 16. NB201 follows the benchmark's
200-epoch recipe (xautodl ``200E.config``): C=16, N=5, batch 256, SGD nesterov lr 0.1 cosine to 0,
wd 5e-4, no auxiliary head, drop-path or cutout. Every number is a ``RetrainConfig`` field.

Deliberate differences from the reference: the schedule steps at the end of each epoch (epoch 0 uses
the full lr; the reference steps first, an artefact of old PyTorch), and all randomness of an epoch
(order, crop/flip, cutout, drop-path masks) is seeded by (seed, epoch), so a run resumed from any
epoch boundary is bit-identical on the CPU. The Tune trial, summaries and MLflow are in
``raynas.retrain``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

import search_spaces
from search_spaces.darts_eval import DartsNetwork, count_params
from search_spaces.fast import accelerate
from search_spaces.nb201 import GenotypeError, NB201Network
from trials.batches import BatchStream, DataConfig, Dataset, cutout, train_subset
from trials.config import ConfigError, build, need
from trials.epochs import Diverged, EpochRun, RetrainStream, resolve_device, stream_seed
SPACES = ("darts", "s1", "s2", "s3", "s4", "nb201")
#: where the removed ``subset`` fraction went: one way to subsample the train split, as searches do
SUBSET_MOVED = "data.train_subset (a per-class count, or a fraction in (0, 1] of each class)"


@dataclass
class RetrainConfig:
    """One retraining; defaults are quark0/darts ``train.py`` (NB201: ``RETRAIN_DEFAULTS['nb201']``)."""
    space: str = "darts"
    genotype: str = ""               # DARTS Genotype(...) text / JSON, or an NB201 |op~0|+... string
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    seed: int = 0
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0              # cosine schedule end
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0    # max grad norm; None: no clipping
    layers: int = 20                 # DARTS spaces: cells; NB201: cells per stage (N)
    channels: int = 36               # initial channels C
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2      # reached at the last epoch, ramped linearly from 0
    cutout: int = 16                 # side of the zeroed square; 0: off
    label_smoothing: float = 0.0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    max_steps_per_epoch: int | None = None  # cap for smoke runs
    eval_batches: int | None = None  # test batches evaluated per epoch; None: the whole test split
    data: DataConfig = field(default_factory=DataConfig)  # data.train_subset: the part of the train split used
    holdout: float = 0.0             # fraction of the (subsampled) train split held out and evaluated instead of test
    search: dict[str, Any] | None = None  # where the genotype came from (search trial), carried to the summary

    #: keys of earlier versions and what replaces them (``trials.config.build``: one line naming the new key)
    REMOVED: ClassVar[dict[str, str]] = {"subset": SUBSET_MOVED}


RETRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "nb201": {"epochs": 200, "batch_size": 256, "lr": 0.1, "nesterov": True, "weight_decay": 5e-4,
              "grad_clip": None, "layers": 5, "channels": 16, "auxiliary": False, "drop_path_prob": 0.0,
              "cutout": 0},
}


def resolve_retrain(overrides: dict[str, Any] | None = None) -> RetrainConfig:
    """Defaults < the space's recipe < ``overrides``; validated. ``overrides["arch"]`` (the grid value
    :func:`run_retrain` gives each trial: space, genotype, dataset, search) is merged in first."""
    over = dict(overrides or {})
    arch = over.pop("arch", None)
    if isinstance(arch, dict):
        over.update(arch)
    space = over.get("space", RetrainConfig.space)
    defaults = RETRAIN_DEFAULTS.get(space, {}) if isinstance(space, str) else {}
    cfg = build(RetrainConfig, {**defaults, **over})
    check(cfg)
    return cfg


def check(cfg: RetrainConfig) -> None:
    """Ranges of every field, and a genotype the space parses (the dataset is the app's to check)."""
    need(cfg.space in SPACES, f"unknown space {cfg.space!r}; valid: {', '.join(SPACES)}")
    need(cfg.genotype.strip() != "", "genotype is empty; pass the genotype text of the space")
    try:
        search_spaces.parse_genotype(cfg.space, cfg.genotype)
    except GenotypeError as e:
        raise ConfigError(f"genotype: {e}") from None
    need(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    cfg.data.check()
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(0 <= cfg.lr_min <= cfg.lr, f"lr_min must be in [0, lr], got {cfg.lr_min}")
    need(0 <= cfg.momentum < 1, f"momentum must be in [0, 1), got {cfg.momentum}")
    need(not cfg.nesterov or cfg.momentum > 0, "nesterov needs momentum > 0")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.grad_clip is None or cfg.grad_clip > 0, f"grad_clip must be > 0 or null, got {cfg.grad_clip}")
    min_layers = 1 if cfg.space == "nb201" else 3
    need(cfg.layers >= min_layers, f"layers must be >= {min_layers} for the {cfg.space} space, got {cfg.layers}")
    need(cfg.channels >= 1, f"channels must be >= 1, got {cfg.channels}")
    need(cfg.auxiliary_weight >= 0, f"auxiliary_weight must be >= 0, got {cfg.auxiliary_weight}")
    need(0 <= cfg.drop_path_prob < 1, f"drop_path_prob must be in [0, 1), got {cfg.drop_path_prob}")
    if cfg.space == "nb201":
        need(not cfg.auxiliary and cfg.drop_path_prob == 0,
             "auxiliary and drop_path_prob apply to the DARTS-space network only; NB201 has neither")
    need(cfg.cutout >= 0, f"cutout must be >= 0, got {cfg.cutout}")
    need(0 <= cfg.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    need(cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"),
         f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    need(cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1,
         f"max_steps_per_epoch must be >= 1 or null, got {cfg.max_steps_per_epoch}")
    need(cfg.eval_batches is None or cfg.eval_batches >= 0, f"eval_batches must be >= 0, got {cfg.eval_batches}")
    need(0 <= cfg.holdout < 1, f"holdout must be in [0, 1), got {cfg.holdout}")


# ------------------------------------------------------------------------------------------ training

class RetrainDiverged(Diverged):
    """The training loss became NaN or infinite; ``epoch`` is 0-based."""

    def __init__(self, epoch: int):
        super().__init__(epoch, f"retraining diverged at epoch {epoch + 1}: the training loss is not finite")


def split_train(data: Dataset, holdout: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices into the train split (already cut to ``data.train_subset``): (trained on, held out for
    evaluation or None). One fixed permutation (generator seed 0) holds out its first ``holdout`` and
    trains on the rest, so every seed and every trial of a study sees the same images; (everything, None)
    is the plain recipe (train on the whole split, evaluate on the test split)."""
    n = len(data.train_y)
    if holdout == 0:
        return torch.arange(n), None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_hold = max(1, round(holdout * n))
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


class Retrain(EpochRun):
    """State and loop of one retraining (one Tune trial): ``run_epoch`` trains on the train split and
    evaluates on the test split (or, with ``holdout``, on a held-out part of the train split: the outer
    search's proxy selects without seeing the test split); ``save``/``load`` resume bit-exactly."""

    def __init__(self, cfg: RetrainConfig, data: Dataset):
        super().__init__()
        self.cfg, self.seed, self.epochs = cfg, cfg.seed, cfg.epochs
        torch.manual_seed(cfg.seed)  # weight init; everything random later is seeded per epoch
        self.device = resolve_device(cfg.device)
        d = self.data = train_subset(data, cfg.data)
        self.genotype = search_spaces.parse_genotype(cfg.space, cfg.genotype)
        if cfg.space == "nb201":
            net = NB201Network(self.genotype, C=cfg.channels, N=cfg.layers, num_classes=d.num_classes,
                               in_channels=d.in_channels)
        else:
            net = DartsNetwork(self.genotype, C=cfg.channels, layers=cfg.layers, num_classes=d.num_classes,
                               auxiliary=cfg.auxiliary, in_channels=d.in_channels)
        self.net = accelerate(net.to(self.device))  # the CPU-fast forms of the same layers
        self.params_m = count_params(self.net) / 1e6
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.epochs, eta_min=cfg.lr_min)
        stream = dict(mean=d.mean, std=d.std, crop_padding=d.crop_padding, flip=d.flip, device=self.device)
        train, held_out = split_train(d, cfg.holdout)
        self.train_stream = BatchStream(d.train_x, d.train_y, None if held_out is None else train, cfg.batch_size,
                                        augment=True, **stream)
        if held_out is None:
            self.test_stream = BatchStream(d.test_x, d.test_y, None, cfg.batch_size, augment=False,
                                           drop_last=False, **stream)
        else:
            self.test_stream = BatchStream(d.train_x, d.train_y, held_out, cfg.batch_size, augment=False,
                                           drop_last=False, **stream)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.net(x)
        return out if isinstance(out, tuple) else (out, None)  # NB201Network returns logits only

    def run_epoch(self) -> dict[str, Any]:
        """One epoch of training, then the test split; the metrics every Tune result carries."""
        cfg, e = self.cfg, self.epoch
        torch.manual_seed(stream_seed(self.seed, e, RetrainStream.DROP_PATH))  # drop-path masks: (seed, epoch) only
        if hasattr(self.net, "drop_path_prob"):
            self.net.drop_path_prob = cfg.drop_path_prob * e / cfg.epochs
        self.net.train()
        cut_gen = self.generator(RetrainStream.CUTOUT)
        sums = torch.zeros(2, device=self.device)  # loss, correct: no per-step host sync
        n = steps = 0
        total = len(self.train_stream) if cfg.max_steps_per_epoch is None else min(len(self.train_stream),
                                                                                   cfg.max_steps_per_epoch)
        t0 = time.perf_counter()
        for x, y in self.train_stream.epoch(self.generator(RetrainStream.TRAIN_BATCHES)):
            if cfg.max_steps_per_epoch is not None and steps >= cfg.max_steps_per_epoch:
                break
            if cfg.cutout > 0:
                x = cutout(x, cfg.cutout, cut_gen)
            logits, logits_aux = self._forward(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if logits_aux is not None:
                loss = loss + cfg.auxiliary_weight * F.cross_entropy(logits_aux, y,
                                                                     label_smoothing=cfg.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.opt.step()
            sums[0] += loss.detach() * len(y)
            sums[1] += (logits.detach().argmax(1) == y).sum()
            n += len(y)
            steps += 1
            self.tick(steps, total, lambda n=n: {"train_acc": 100.0 * float(sums[1]) / max(n, 1)})
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        loss_sum, correct = sums.tolist()
        if not math.isfinite(loss_sum):
            raise RetrainDiverged(e)
        train_time = time.perf_counter() - t0
        test_loss, test_acc = self.evaluate()
        self.epoch += 1
        best = max([h["test_acc"] for h in self.history if h["test_acc"] is not None] + [test_acc or 0.0])
        metrics = {
            "epoch": self.epoch, "lr": lr, "drop_path_prob": getattr(self.net, "drop_path_prob", 0.0),
            "train_loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1),
            "test_loss": test_loss, "test_acc": test_acc, "best_test_acc": best,
            "steps": steps, "epoch_time": time.perf_counter() - t0,
            "images_per_s": n / train_time if train_time > 0 else 0.0, "params_m": self.params_m,
            "eval_split": "holdout" if self.cfg.holdout > 0 else "test",  # what test_* were measured on
        }
        self.history.append(metrics)
        return metrics

    def evaluate(self) -> tuple[float | None, float | None]:
        """Loss and top-1 accuracy (%) on the test split, in eval mode (no drop-path, no auxiliary head)."""
        if self.cfg.eval_batches == 0:
            return None, None
        self.net.eval()
        loss_sum, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for i, (x, y) in enumerate(self.test_stream.epoch()):
                if self.cfg.eval_batches is not None and i >= self.cfg.eval_batches:
                    break
                logits, _ = self._forward(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
        self.net.train()
        return (loss_sum / n, 100.0 * correct / n) if n else (None, None)

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, schedule, epoch, history: with per-epoch seeding that is all there is."""
        return {"epoch": self.epoch, "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])


def retrain(cfg: RetrainConfig, data: Dataset) -> list[dict[str, Any]]:
    """A whole retraining in this process (no Ray); returns the per-epoch metrics."""
    return Retrain(cfg, data).run()
