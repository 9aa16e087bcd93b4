"""The one bilevel search loop every method runs (DARTS' ``train_search.py`` + ``architect.py``).

Per step: an architecture step on a batch of the alpha split, then a weight step on a batch of the
weight split. A method (``trials.darts.Darts`` and its subclasses) decides the small things that
differ between papers through hooks: how alpha becomes edge weights, which parameters train, the
loss (extra terms), the arch step itself (first/second order) and the per-epoch schedule.

``Search`` holds all state, so a Ray Tune trainable can run it one epoch per ``step()`` and
checkpoint it between epochs; restoring a checkpoint and continuing is bit-identical on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

import search_spaces
from search_spaces.fast import accelerate
from trials import cuda_graph
from trials.darts import build_method
from trials.batches import BatchStream, Dataset, cutout, split_indices, train_subset
from trials.step import Step
from trials.epochs import Diverged, EpochRun, Stream, resolve_device, rng_state, seed_everything, set_rng_state

#: the numbers ``Search.run_epoch`` puts in every epoch's result, besides the architecture's
EPOCH_METRICS = ("epoch", "lr", "train_loss", "train_acc", "arch_loss", "arch_acc", "valid_loss", "valid_acc",
                 "steps", "epoch_time", "images_per_s", "hessian_eigenvalue")
#: the numbers ``Search.architecture_metrics`` adds: the genotype's collapse counts
#: (``search_spaces.genotype_stats``; ``_reduce`` in DARTS spaces) and the entropy of alpha
ARCH_METRICS = ("skip_count", "param_free_count", "skip_count_reduce", "param_free_count_reduce", "alpha_entropy")
#: what else it adds, which is no number to optimise: the genotype, its degeneracy flag and reason, alpha, the
#: NB-201 row of the genotype
ARCH_FIELDS = ("genotype", "degenerate", "degenerate_reason", "alpha", "nb201")


def search_metrics() -> tuple[str, ...]:
    """Every number a search epoch may report: the run's, the architecture's and what each registered
    method piece adds (its ``metrics``). What a tune objective or a scheduler may name is derived from this
    (``raynas.trainable.search_trial_metrics``), so a metric added here is valid there."""
    from trials.registry import all_pieces

    extra = dict.fromkeys(m for cls in all_pieces() for m in getattr(cls, "metrics", ()))
    return EPOCH_METRICS + ARCH_METRICS + tuple(m for m in extra if m not in EPOCH_METRICS + ARCH_METRICS)

if TYPE_CHECKING:
    from trials.darts import Darts
    from trials.search_config import CoreSearchConfig as SearchConfig

#: looks a derived genotype up in a benchmark table (NAS-Bench-201): the row, or None if absent
Lookup = Callable[[Any], "dict[str, Any] | None"]


class SearchDiverged(Diverged):
    """The loss or alpha became NaN or infinite; the epoch is named so the trial can report it."""

    def __init__(self, epoch: int, what: str):
        super().__init__(epoch, f"search diverged at epoch {epoch}: {what} is not finite")


@dataclass
class SearchResult:
    method: str
    space: str
    dataset: str
    seed: int
    epochs: int
    genotype: str
    genotype_json: Any
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _entropy(w: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the per-edge distributions in ``w`` (rows sum to 1)."""
    return -(w.clamp_min(1e-12).log() * w).sum(-1).mean()


class Search(EpochRun):
    """State and loop of one architecture search (one Ray Tune trial).

    ``lookup`` (optional) maps each epoch's genotype to its benchmark-table row (``nb201`` metric)."""

    def __init__(self, cfg: SearchConfig, data: Dataset, lookup: Lookup | None = None):
        super().__init__()
        self.cfg, self.seed, self.epochs = cfg, cfg.seed, cfg.epochs
        self.method: Darts = build_method(cfg)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.data = train_subset(data, cfg.data)
        self.net = self.method.build_supernet(self.data).to(self.device)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net = accelerate(self.net, recompute=cfg.recompute == "always"
                              or (cfg.recompute == "auto" and self.device.type == "cpu"))
        self.method.prepare(self)
        o, a = cfg.optim, cfg.arch
        self.w_opt = torch.optim.SGD(self.method.weight_param_groups(self.net), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)
        self.a_opt = torch.optim.Adam(self.method.arch_parameters(self.net), lr=a.lr,
                                      betas=(a.beta1, a.beta2), weight_decay=a.weight_decay,
                                      capturable=cuda_graph.use_graphs(self))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=cfg.epochs, eta_min=o.lr_min)
        w_idx, a_idx = split_indices(len(self.data.train_y), cfg.train_portion)
        d = self.data
        stream = dict(mean=d.mean, std=d.std, crop_padding=d.crop_padding, flip=d.flip, device=self.device)
        self.w_stream = BatchStream(d.train_x, d.train_y, w_idx, cfg.batch_size, augment=True, **stream)
        self.a_stream = BatchStream(d.train_x, d.train_y, a_idx, cfg.batch_size, augment=True, **stream)
        self.eval_stream = BatchStream(d.train_x, d.train_y, a_idx, cfg.batch_size, augment=False,
                                       drop_last=False, **stream)
        self.lookup = lookup
        self.iteration: Any = None  # this epoch's step function (a cuda_graph.Graphed on GPUs)

    def step_context(self) -> Step:
        """What the method's step hooks see: the supernet's forward, the module and the optimisers."""
        return Step(self.net, self.net, self.w_opt, self.a_opt)

    def rebuild_weight_optimizer(self, moved: list[tuple[nn.Parameter, nn.Parameter, Any]]) -> None:
        """New SGD over the current weights after the supernet changed shape (DrNAS stages): state of
        kept parameters carries over, momentum of replaced ones is expanded like the weights, and
        the cosine schedule continues where it was."""
        old, o = self.w_opt, self.cfg.optim
        self.w_opt = torch.optim.SGD(self.method.weight_param_groups(self.net), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)
        replaced = {id(new): (prev, expand) for prev, new, expand in moved}
        for group, old_group in zip(self.w_opt.param_groups, old.param_groups):
            group["lr"], group["initial_lr"] = old_group["lr"], old_group.get("initial_lr", o.lr)
            for p in group["params"]:
                if p in old.state:
                    self.w_opt.state[p] = old.state[p]
                elif id(p) in replaced and replaced[id(p)][0] in old.state:
                    prev, expand = replaced[id(p)]
                    self.w_opt.state[p] = {k: expand(v) if torch.is_tensor(v) and v.dim() else v
                                           for k, v in old.state[prev].items()}
        sched_state = self.sched.state_dict()
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=self.cfg.epochs, eta_min=o.lr_min)
        self.sched.load_state_dict(sched_state)
        for group, old_group in zip(self.w_opt.param_groups, old.param_groups):
            group["lr"] = old_group["lr"]

    # ----------------------------------------------------------------------------------- steps
    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the weights with alpha held fixed (its weights are detached)."""
        weights = {k: v.detach() for k, v in self.method.edge_weights(self.net).items()}
        loss, logits = self.method.loss(self.step_context(), x, y, weights, "weight")
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.method.weight_parameters(self.net), self.cfg.optim.grad_clip)
        self.w_opt.step()
        return loss.detach(), logits.detach()

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch (arch and weight step per batch, in ``arch.step_order``), evaluate, derive;
        return metrics."""
        cfg, e = self.cfg, self.epoch
        self.method.on_epoch_start(self, e)
        ramp = e / max(cfg.epochs - 1, 1)  # RobustDARTS: full strength in the last epoch
        if cfg.model.drop_path > 0:
            for _, _, op in self.net.mixed_ops():
                op.drop_prob = cfg.model.drop_path * ramp
        cut_prob = cfg.cutout_prob * (ramp if cfg.model.drop_path > 0 else 1.0)  # RobustDARTS ramps it alongside
        cut_gen = self.generator(Stream.CUTOUT) if cfg.cutout > 0 else None
        self.net.train()
        update_arch = self.method.arch_active(e)
        self.iteration = iteration = cuda_graph.iteration(self, update_arch)  # a CUDA graph per epoch if possible
        a_gen = self.generator(Stream.ARCH_BATCHES)
        a_iter = self.a_stream.epoch(a_gen)
        sums = torch.zeros(4, device=self.device)  # w_loss, w_correct, a_loss, a_correct (no per-step sync)
        n_w = n_a = steps = 0
        total = len(self.w_stream) if cfg.max_steps_per_epoch is None else min(len(self.w_stream),
                                                                               cfg.max_steps_per_epoch)
        t0 = time.perf_counter()
        for x, y in self.w_stream.epoch(self.generator(Stream.WEIGHT_BATCHES)):
            if cfg.max_steps_per_epoch is not None and steps >= cfg.max_steps_per_epoch:
                break
            if cut_gen is not None:
                x = cutout(x, cfg.cutout, cut_gen, cut_prob)
            x = self.to_input(x)
            if update_arch:
                try:
                    xa, ya = next(a_iter)
                except StopIteration:
                    a_iter = self.a_stream.epoch(a_gen)
                    xa, ya = next(a_iter)
                if cut_gen is not None:
                    xa = cutout(xa, cfg.cutout, cut_gen, cut_prob)
                xa = self.to_input(xa)
            else:
                xa, ya = x, y
            a_loss, a_logits, loss, logits = iteration(x, y, xa, ya)
            if update_arch:
                sums[2] += a_loss * len(ya)
                sums[3] += (a_logits.argmax(1) == ya).sum()
                n_a += len(ya)
            sums[0] += loss * len(y)
            sums[1] += (logits.argmax(1) == y).sum()
            n_w += len(y)
            steps += 1
            self.tick(steps, total, lambda n=n_w: self.live_metrics(sums, n))
        lr = self.w_opt.param_groups[0]["lr"]
        self.sched.step()
        s = sums.tolist()
        if not math.isfinite(s[0]) or not math.isfinite(s[2]):
            raise SearchDiverged(e, "the training loss" if not math.isfinite(s[0]) else "the validation loss")
        if any(not torch.isfinite(p).all() for p in self.method.arch_parameters(self.net)):
            raise SearchDiverged(e, "alpha")
        train_time = time.perf_counter() - t0
        valid_loss, valid_acc = self.evaluate()
        self.epoch += 1
        eigen = None
        if cfg.hessian_every and self.epoch % cfg.hessian_every == 0:
            from trials.hessian import dominant_eigenvalue
            eigen = dominant_eigenvalue(self, batches=cfg.hessian_batches)
        metrics = {
            "epoch": self.epoch,
            "lr": lr,
            "train_loss": s[0] / max(n_w, 1),
            "train_acc": 100.0 * s[1] / max(n_w, 1),
            "arch_loss": s[2] / n_a if n_a else None,
            "arch_acc": 100.0 * s[3] / n_a if n_a else None,
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "steps": steps,
            "epoch_time": time.perf_counter() - t0,
            "images_per_s": (n_w + n_a) / train_time if train_time > 0 else 0.0,
            "hessian_eigenvalue": eigen,
            **self.architecture_metrics(),
            **self.method.epoch_metrics(),
        }
        self.history.append(metrics)
        return metrics

    def live_metrics(self, sums: torch.Tensor, n_w: int) -> dict[str, Any]:
        """What a progress report inside an epoch shows: the running train accuracy and, with a benchmark
        table, the table's accuracy of the genotype the current alpha derives (one device sync)."""
        out: dict[str, Any] = {"train_acc": 100.0 * float(sums[1]) / max(n_w, 1)}
        if self.lookup is not None:
            weights = {k: v.detach().float().cpu() for k, v in self.method.genotype_weights(self.net).items()}
            out["nb201"] = self.lookup(self.net.derive(weights))
        return out

    @torch.no_grad()
    def evaluate(self) -> tuple[float | None, float | None]:
        """Supernet loss/accuracy on the alpha split in eval mode (DARTS ``infer``; the method's
        ``eval_loss`` may transform the batch, as alphaDARTS masks it)."""
        if self.cfg.eval_batches == 0:
            return None, None
        self.net.eval()
        weights = self.method.eval_weights(self.net)

        step = self.step_context()

        def forward(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.method.eval_loss(step, self.to_input(x), y, weights)

        forward = cuda_graph.Graphed(forward, "evaluation forward") if cuda_graph.use_graphs(self) else forward
        sums, n = torch.zeros(2, dtype=torch.float64, device=self.device), 0  # loss, correct (no per-batch sync)
        for i, (x, y) in enumerate(self.eval_stream.epoch(self.generator(Stream.EVAL_BATCHES))):
            if self.cfg.eval_batches is not None and i >= self.cfg.eval_batches:
                break
            loss_sum, logits = forward(x, y)
            sums[0] += loss_sum
            sums[1] += (logits.argmax(1) == y).sum()
            n += len(y)
        self.net.train()
        loss_sum, correct = sums.tolist()
        return (loss_sum / n, 100.0 * correct / n) if n else (None, None)

    # ------------------------------------------------------------------------ architecture view
    def genotype(self) -> Any:
        return self.net.derive(self.method.genotype_weights(self.net))

    def architecture_metrics(self) -> dict[str, Any]:
        """Genotype, its collapse signals (skips, degeneracy), softmaxed alpha per edge, alpha entropy; NB201 row."""
        weights = {k: v.detach().float().cpu() for k, v in self.method.genotype_weights(self.net).items()}
        geno = self.net.derive(weights)
        names, ops = self.net.edge_names(), self.net.edge_ops()
        reason = search_spaces.degenerate_reason(self.cfg.space, geno)
        alpha = {cell: {edge: dict(zip(ops[cell][i], map(float, w[i]))) for i, edge in enumerate(names[cell])}
                 for cell, w in weights.items()}
        out = {
            "genotype": search_spaces.genotype_str(self.cfg.space, geno),
            **search_spaces.genotype_stats(self.cfg.space, geno),
            "degenerate": reason is not None, "degenerate_reason": reason,
            "alpha_entropy": float(torch.stack([_entropy(w) for w in weights.values()]).mean()),
            "alpha": alpha,
            "nb201": self.lookup(geno) if self.lookup is not None else None,
        }
        return out

    def result(self) -> SearchResult:
        geno = self.genotype()
        last = self.history[-1] if self.history else {}
        gjson = search_spaces.genotype_json(geno)
        return SearchResult(
            method=self.cfg.method, space=self.cfg.space, dataset=self.cfg.dataset, seed=self.cfg.seed,
            epochs=self.epoch, genotype=search_spaces.genotype_str(self.cfg.space, geno), genotype_json=gjson,
            final={"train_acc": last.get("train_acc"), "valid_acc": last.get("valid_acc"),
                   "nb201": last.get("nb201")},
            history=self.history)

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: weights, alpha, optimisers, schedule, RNG."""
        return {
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "sched": self.sched.state_dict(),
            "method": self.method.state_dict(),
            "history": self.history,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(self, state["method"])  # may reshape the supernet (progressive methods)
        self.net.load_state_dict(state["net"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        set_rng_state(state["rng"])


def search(cfg: SearchConfig, data: Dataset, lookup: Lookup | None = None) -> SearchResult:
    """Run a whole search in this process (no Ray); the Tune trainable runs the same epochs."""
    s = Search(cfg, data, lookup)
    s.run()
    return s.result()
