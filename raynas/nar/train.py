"""NAR training: typed config with the paper's defaults per benchmark, the training loop, held-out metrics.

One ``NARRun`` is one seed: a seeded split of the table into train / validation / held-out, quintile tier labels
within each labelled split (by validation accuracy, best tier first), AdamW with the Noam schedule, loss
L = L_tier + lambda * L_rank. Tier embeddings are reset every epoch and every validation pass and accumulate
the running mean of the encodings of each true tier, updated after each step (as the authors' code). The model
kept is the epoch with the best validation tier accuracy, together with that epoch's per-batch tier statistics
that guide the search.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from raynas.config import ConfigError, build
from raynas.nar.data import BenchData, load_bench
from trials.checkpoint import plain
from trials.epochs import EpochRun, NARStream
from raynas.nar.tier_stats import batch_tier_stats
from raynas.nar.scatter import scatter_png
from raynas.nar.model import NARanker, NoamSchedule, TierBank, pairwise_rank_loss, soft_cross_entropy


@dataclass
class NARConfig:
    """Every number of a NAR run. Defaults are the NB201 config of the authors' code (``config201.yml``);
    ``bench: nb101`` swaps in ``config.yml``'s (``PAPER["nb101"]``) unless a value is given explicitly."""

    bench: str = "nb201"            # nb201 | nb101
    table: str = ""                 # benchmark CSV (NB201: `raynas bench nb201 export`)
    dataset: str = "cifar10"        # NB201: cifar10 | cifar100 | imagenet16
    seed: int = 0                   # split, init, shuffling and search sampling
    train_size: int = 1000          # labelled training architectures (paper: 1000 NB201, 4236 NB101)
    train_frac: float = 0.0         # > 0: train_size = round(train_frac * table size)
    val_size: int = 256             # labelled validation architectures (model selection); the rest is held out
    epochs: int = 55
    batch_size: int = 128
    n_tier: int = 5
    d_model: int = 128
    d_ffn: int = 512
    n_layers: int = 6
    n_head: int = 4
    d_tier_hidden: int = 256
    d_score_hidden: int = 1024
    dropout: float = 0.1
    loss_factor: float = 1.0        # lambda of the ranking loss
    lr_mul: float = 0.07
    warmup: int = 30
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-9
    weight_decay: float = 1e-2
    scale_features: bool = False    # NB201: FLOPs / 1e6, params / 1e3 (the authors feed raw counts)
    bins: int = 5                   # histogram bins of the tier FLOPs/params statistics
    budget: int = 0                 # search-phase benchmark queries after training (0: no search)
    top_k: int = 5                  # queries per search iteration (top-k of the predicted best tier)
    sample_size: int = 128          # candidates ranked per search iteration
    noisy_factor: float = 0.5       # share of uniformly random candidates
    reuse_step: int = 25            # candidates per drawn FLOPs/params bound
    max_trials: int = 100
    batch_factor: float = 0.1       # tier 1 must hold this share of a batch to guide sampling
    last_tier: int = 4              # tier 1 must differ (KL) from tiers >= last_tier
    flops_kl: float = 0.35
    params_kl: float = 0.3
    ops_kl: float = 1.5
    force_uniform: bool = False     # True: switch guidance off (the released NB201 config does)
    threads: int = 0                # torch threads; 0 = torch's default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PAPER: dict[str, dict[str, Any]] = {
    "nb201": {},
    "nb101": {"train_size": 4236, "val_size": 1024, "epochs": 35, "batch_size": 256, "d_model": 256, "d_ffn": 1024,
              "d_tier_hidden": 2048, "d_score_hidden": 2048, "loss_factor": 9.0, "lr_mul": 0.1, "warmup": 50,
              "beta2": 0.982, "weight_decay": 5e-4, "bins": 8, "sample_size": 256, "flops_kl": 2.5,
              "params_kl": 2.5},
}


def resolve_nar(overrides: dict[str, Any] | None = None) -> NARConfig:
    """Paper defaults of the chosen bench < ``overrides``; one-line ``ConfigError`` on any bad value."""
    over = dict(overrides or {})
    bench = over.get("bench", "nb201")
    if bench not in PAPER:
        raise ConfigError(f"unknown bench {bench!r}; valid: {', '.join(PAPER)}")
    cfg = build(NARConfig, {**PAPER[bench], **over})
    _check(cfg)
    return cfg


def _check(c: NARConfig) -> None:
    rules = [
        (c.dataset in ("cifar10", "cifar100", "imagenet16"), f"dataset must be cifar10, cifar100 or imagenet16, "
                                                              f"got {c.dataset!r}"),
        (c.bench == "nb201" or c.dataset == "cifar10", "nb101 has only the cifar10 dataset"),
        (c.n_tier >= 2, f"n_tier must be >= 2, got {c.n_tier}"),
        (c.train_size >= c.n_tier, f"train_size must be >= n_tier ({c.n_tier}), got {c.train_size}"),
        (0 <= c.train_frac < 1, f"train_frac must be in [0, 1), got {c.train_frac}"),
        (c.val_size >= c.n_tier, f"val_size must be >= n_tier ({c.n_tier}), got {c.val_size}"),
        (c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}"),
        (c.batch_size >= 2, f"batch_size must be >= 2 (the ranking loss compares pairs), got {c.batch_size}"),
        (c.d_model % c.n_head == 0, f"d_model ({c.d_model}) must be divisible by n_head ({c.n_head})"),
        (min(c.d_model, c.d_ffn, c.n_layers, c.n_head, c.d_tier_hidden, c.d_score_hidden) >= 1,
         "d_model, d_ffn, n_layers, n_head, d_tier_hidden and d_score_hidden must be >= 1"),
        (0 <= c.dropout < 1, f"dropout must be in [0, 1), got {c.dropout}"),
        (c.loss_factor >= 0, f"loss_factor must be >= 0, got {c.loss_factor}"),
        (c.lr_mul > 0 and c.warmup >= 1, "lr_mul must be > 0 and warmup >= 1"),
        (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
        (c.eps > 0 and c.weight_decay >= 0, "eps must be > 0 and weight_decay >= 0"),
        (c.bins >= 1, f"bins must be >= 1, got {c.bins}"),
        (c.budget >= 0, f"budget must be >= 0, got {c.budget}"),
        (c.top_k >= 1, f"top_k must be >= 1, got {c.top_k}"),
        (c.sample_size >= c.top_k, f"sample_size ({c.sample_size}) must be >= top_k ({c.top_k})"),
        (0 <= c.noisy_factor <= 1, f"noisy_factor must be in [0, 1], got {c.noisy_factor}"),
        (c.reuse_step >= 1 and c.max_trials >= 0, "reuse_step must be >= 1 and max_trials >= 0"),
        (0 <= c.batch_factor <= 1, f"batch_factor must be in [0, 1], got {c.batch_factor}"),
        (1 < c.last_tier <= c.n_tier, f"last_tier must be in (1, n_tier], got {c.last_tier}"),
        (c.threads >= 0, f"threads must be >= 0, got {c.threads}"),
    ]
    for ok, msg in rules:
        if not ok:
            raise ConfigError(msg)


def quintile_tiers(acc: np.ndarray, n_tier: int) -> np.ndarray:
    """Tier of each architecture within its own split: sorted by accuracy (best first), cut into n_tier groups
    of floor(N / n_tier), the remainder going to the last tier (``SplitSubet``)."""
    order = np.argsort(-acc, kind="stable")
    tiers = np.empty(len(acc), dtype=np.int64)
    tiers[order] = np.minimum(np.arange(len(acc)) // (len(acc) // n_tier), n_tier - 1)
    return tiers


def ranking_metrics(pred: np.ndarray, true: np.ndarray, top_frac: float = 0.05) -> dict[str, float]:
    """Kendall's tau-b, Spearman's rho and precision@top-5%: the share of the predicted top 5% in the true one."""
    k = max(1, math.ceil(top_frac * len(true)))
    hit = np.intersect1d(np.argsort(-pred, kind="stable")[:k], np.argsort(-true, kind="stable")[:k]).size
    return {"kendall_tau": float(stats.kendalltau(pred, true).statistic),
            "spearman_rho": float(stats.spearmanr(pred, true).statistic), "precision_at_top_5pct": hit / k}


def check_split(cfg: NARConfig, n: int) -> int:
    """The training split's size, when it and the validation split leave held-out architectures in a table
    of ``n`` (checked by the driver for every trial before Ray starts, and by the run)."""
    n_train = round(cfg.train_frac * n) if cfg.train_frac else cfg.train_size
    if n_train < cfg.n_tier or n_train + cfg.val_size >= n:
        raise ConfigError(f"{n_train} training + {cfg.val_size} validation architectures leave no held-out ones "
                          f"in a table of {n}; lower train_size/train_frac or val_size")
    return n_train


class NARRun(EpochRun):
    """One seed of NAR: ``run_epoch()`` trains one epoch and validates; ``evaluate()`` scores the held-out set."""

    device = torch.device("cpu")

    def __init__(self, cfg: NARConfig, data: BenchData | None = None):
        super().__init__()
        self.cfg, self.seed, self.epochs = cfg, cfg.seed, cfg.epochs
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.data = data if data is not None else load_bench(cfg.bench, cfg.table, cfg.dataset, cfg.scale_features)
        n = len(self.data)
        n_train = check_split(cfg, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).numpy()
        self.label(perm[:n_train], perm[n_train:n_train + cfg.val_size])
        self.test_idx = perm[n_train + cfg.val_size:]
        torch.manual_seed(cfg.seed)
        _, P, d, _ = self.data.features.shape
        self.model = NARanker(P, d, cfg.n_tier, cfg.d_model, cfg.d_ffn, cfg.n_layers, cfg.n_head,
                              cfg.d_model // cfg.n_head, cfg.d_tier_hidden, cfg.d_score_hidden, cfg.dropout)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.0, betas=(cfg.beta1, cfg.beta2),
                                           eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.schedule = NoamSchedule(self.optimizer, cfg.lr_mul, cfg.d_model, cfg.warmup)

    def label(self, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
        """Train on ``train_idx`` and pick the best epoch on ``val_idx`` from now on (tiers within each split,
        the best-epoch record reset): the seeded split, or a searcher's evaluations so far."""
        self.train_idx, self.val_idx = np.asarray(train_idx), np.asarray(val_idx)
        self.train_tier = torch.from_numpy(quintile_tiers(self.data.target[self.train_idx], self.cfg.n_tier))
        self.val_tier = torch.from_numpy(quintile_tiers(self.data.target[self.val_idx], self.cfg.n_tier))
        self.best: dict[str, Any] = {"epoch": -1, "val_tier_acc": -1.0, "state": None, "distri": []}

    def bank(self) -> TierBank:
        return TierBank(self.cfg.n_tier, self.data.features.shape[1], self.cfg.d_model)

    def _batches(self) -> list[np.ndarray]:
        """Shuffled full batches (drop_last), seeded by (seed, epoch) so a resumed run sees the same ones."""
        n, bs = len(self.train_idx), min(self.cfg.batch_size, len(self.train_idx))
        order = torch.randperm(n, generator=self.generator(NARStream.TRAIN_BATCHES))
        return [order[i:i + bs].numpy() for i in range(0, n - bs + 1, bs)]

    def _loss(self, logits: torch.Tensor, score: torch.Tensor, tier: torch.Tensor,
              acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        l_tier = soft_cross_entropy(logits, torch.nn.functional.one_hot(tier, self.cfg.n_tier).float())
        l_rank = pairwise_rank_loss(score, acc)
        return l_tier + self.cfg.loss_factor * l_rank, l_tier, l_rank

    def run_epoch(self) -> dict[str, float]:

        t0 = time.time()
        self.model.train()
        bank, distri = self.bank(), []
        sums = np.zeros(4)
        batches = self._batches()
        for i, b in enumerate(batches, 1):
            rows = self.train_idx[b]
            x, tier = self.data.features[rows], self.train_tier[b]
            acc = torch.from_numpy(self.data.target[rows]).float()
            logits, enc, score = self.model(x, bank.embeddings())
            loss, l_tier, l_rank = self._loss(logits, score, tier, acc)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = self.schedule.step()
            self.optimizer.step()
            bank.update(enc, tier)
            distri.append(batch_tier_stats(self.data, rows, tier.numpy(), self.cfg.n_tier, self.cfg.bins))
            sums += [len(b), loss.item() * len(b), l_rank.item() * len(b),
                     (logits.argmax(1) == tier).sum().item()]
            self.tick(i, len(batches), lambda s=sums: {"loss": s[1] / s[0], "tier_acc": s[3] / s[0]})
        self.epoch += 1
        val = self.validate()
        m = {"epoch": self.epoch, "loss": sums[1] / sums[0], "rank_loss": sums[2] / sums[0],
             "tier_acc": sums[3] / sums[0], **val, "lr": lr, "time_s": time.time() - t0}
        if val["val_tier_acc"] > self.best["val_tier_acc"]:
            self.best = {"epoch": self.epoch, "val_tier_acc": val["val_tier_acc"], "distri": distri,
                         "state": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        self.history.append(m)
        return m

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and tier accuracy (fresh tier embeddings, true tiers) and tau/rho of the scores."""
        self.model.eval()
        bank, bs = self.bank(), min(self.cfg.batch_size, len(self.val_idx))
        loss = correct = 0.0
        scores = []
        for i in range(0, len(self.val_idx), bs):
            rows, tier = self.val_idx[i:i + bs], self.val_tier[i:i + bs]
            logits, enc, score = self.model(self.data.features[rows], bank.embeddings())
            if len(rows) > 1:
                loss += self._loss(logits, score, tier, torch.from_numpy(self.data.target[rows]).float())[0].item() \
                    * len(rows)
            correct += (logits.argmax(1) == tier).sum().item()
            bank.update(enc, tier)
            scores.append(score)
        m = ranking_metrics(torch.cat(scores).numpy(), self.data.target[self.val_idx])
        n = len(self.val_idx)
        return {"val_loss": loss / n, "val_tier_acc": correct / n, "val_kendall_tau": m["kendall_tau"],
                "val_spearman_rho": m["spearman_rho"]}

    def use_best(self) -> None:
        """Load the weights of the best-validation epoch (the checkpoint the paper evaluates and searches with)."""
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])

    @torch.no_grad()
    def scores(self, rows: np.ndarray, batch: int = 1024) -> np.ndarray:
        self.model.eval()
        return torch.cat([self.model.score(self.model.encode(self.data.features[rows[i:i + batch]]))
                          for i in range(0, len(rows), batch)]).numpy()

    def evaluate(self, scatter: str | Path | None = None) -> dict[str, Any]:
        """Held-out metrics of the best-validation model. The headline ones are against *test* accuracy, as the
        paper reports (the ranker itself only ever sees validation accuracy); ``*_valid`` against validation."""
        self.use_best()
        pred = self.scores(self.test_idx)
        test, valid = self.data.test[self.test_idx], self.data.target[self.test_idx]
        m: dict[str, Any] = ranking_metrics(pred, test)
        m.update({f"{k}_valid": v for k, v in ranking_metrics(pred, valid).items()})
        m.update(n_train=len(self.train_idx), n_val=len(self.val_idx), n_heldout=len(self.test_idx),
                 best_epoch=self.best["epoch"], best_val_tier_acc=self.best["val_tier_acc"])
        if scatter:
            scatter_png(pred, test, scatter, **self.scatter_title())
        return m

    def scatter_title(self) -> dict[str, Any]:
        """What the rank scatter's title names: benchmark, dataset, seed, the best-validation epoch (whose weights
        ``evaluate`` scores) and the epochs trained."""
        return {"bench": self.cfg.bench, "dataset": self.cfg.dataset, "seed": self.cfg.seed,
                "epoch": self.best["epoch"] if self.best["epoch"] >= 1 else None, "epochs": self.epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"cfg": self.cfg.to_dict(), "epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule_steps": self.schedule.steps,
                "history": plain(self.history), "best": plain(self.best), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.steps, self.epoch = state["schedule_steps"], state["epoch"]
        self.history, self.best = state["history"], state["best"]
        torch.set_rng_state(state["torch_rng"])

