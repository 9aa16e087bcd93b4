"""Retraining found genotypes from scratch, as the papers do, one Ray Tune trial per (genotype, seed).

DARTS-family spaces follow quark0/darts ``cnn/train.py``: ``NetworkCIFAR`` with 20 cells at C=36 and
an auxiliary head (weight 0.4), batch 96, SGD lr 0.025 (cosine to 0 over 600 epochs), momentum 0.9,
wd 3e-4, grad clip 5, drop-path ramped linearly to 0.2, cutout 16. NB201 follows the benchmark's
200-epoch recipe (xautodl ``200E.config``): C=16, N=5, batch 256, SGD nesterov lr 0.1 cosine to 0,
wd 5e-4, no auxiliary head, drop-path or cutout. Every number is a ``RetrainConfig`` field.

Deliberate differences from the reference: the schedule steps at the end of each epoch (epoch 0 uses
the full lr; the reference steps first, an artefact of old PyTorch), and all randomness of an epoch
(order, crop/flip, cutout, drop-path masks) is seeded by (seed, epoch), so a run resumed from any
epoch boundary is bit-identical on the CPU.

Importing this module loads neither torch nor Ray (the CLI imports it for ``register``):
``RetrainTrainable`` is built on first access.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raynas.config import ConfigError, _build, parse_set

if TYPE_CHECKING:
    import torch

SPACES = ("darts", "s1", "s2", "s3", "s4", "nb201")
CHECKPOINT_FILE = "retrain.pt"
SUMMARY_FILE = "retrain_summary.json"


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
    search: dict[str, Any] | None = None  # where the genotype came from (search trial), carried to the summary


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
    cfg = _build(RetrainConfig, {**defaults, **over})
    _check(cfg)
    return cfg


def _check(cfg: RetrainConfig) -> None:
    import search_spaces
    from raynas.data import DATASETS
    from search_spaces.nb201 import GenotypeError

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.space in SPACES, f"unknown space {cfg.space!r}; valid: {', '.join(SPACES)}")
    need(cfg.dataset in DATASETS, f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    need(cfg.genotype.strip() != "", "genotype is empty; pass the genotype text of the space")
    try:
        search_spaces.parse_genotype(cfg.space, cfg.genotype)
    except GenotypeError as e:
        raise ConfigError(f"genotype: {e}") from None
    need(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
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
    if cfg.data_dir is not None and cfg.dataset != "digits":
        need(Path(cfg.data_dir).is_dir() or cfg.download,
             f"data_dir {cfg.data_dir} does not exist; pass an existing --data-dir (or --download to fetch)")


# ------------------------------------------------------------------------------------------ training

class RetrainDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``epoch`` is 0-based."""

    def __init__(self, epoch: int):
        super().__init__(f"retraining diverged at epoch {epoch + 1}: the training loss is not finite")
        self.epoch = epoch


class Retrain:
    """State and loop of one retraining (one Tune trial): ``run_epoch`` trains on the whole train
    split and evaluates on the test split; ``save``/``load`` at epoch boundaries resume bit-exactly."""

    def __init__(self, cfg: RetrainConfig, data: Any = None):
        import torch

        import search_spaces
        from raynas.data import BatchStream, load_dataset
        from search_spaces.darts_eval import DartsNetwork, count_params
        from search_spaces.fast import accelerate
        from search_spaces.nb201 import NB201Network

        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # weight init; everything random later is seeded per epoch
        from trials.bilevel import resolve_device

        self.device = resolve_device(cfg.device)
        d = self.data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
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
        self.train_stream = BatchStream(d.train_x, d.train_y, None, cfg.batch_size, augment=True, **stream)
        self.test_stream = BatchStream(d.test_x, d.test_y, None, cfg.batch_size, augment=False, drop_last=False,
                                       **stream)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    def _seed(self, stream: int) -> int:
        return (self.cfg.seed * 1_000_003 + self.epoch) * 4 + stream

    def _generator(self, stream: int) -> torch.Generator:
        import torch

        return torch.Generator(device=self.device).manual_seed(self._seed(stream))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.net(x)
        return out if isinstance(out, tuple) else (out, None)  # NB201Network returns logits only

    def run_epoch(self) -> dict[str, Any]:
        """One epoch of training, then the test split; the metrics every Tune result carries."""
        import torch
        import torch.nn.functional as F

        from raynas.data import cutout

        cfg, e = self.cfg, self.epoch
        torch.manual_seed(self._seed(3))  # drop-path masks (and S4 noise ops) depend on (seed, epoch) only
        if hasattr(self.net, "drop_path_prob"):
            self.net.drop_path_prob = cfg.drop_path_prob * e / cfg.epochs
        self.net.train()
        cut_gen = self._generator(1)
        sums = torch.zeros(2, device=self.device)  # loss, correct: no per-step host sync
        n = steps = 0
        t0 = time.perf_counter()
        for x, y in self.train_stream.epoch(self._generator(0)):
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
        }
        self.history.append(metrics)
        return metrics

    def evaluate(self) -> tuple[float | None, float | None]:
        """Loss and top-1 accuracy (%) on the test split, in eval mode (no drop-path, no auxiliary head)."""
        import torch
        import torch.nn.functional as F

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

    def save(self, path: str | Path) -> None:
        import torch

        torch.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        from raynas.checkpoints import load_state

        self.load_state_dict(load_state(path, self.device))


def retrain(cfg: RetrainConfig, data: Any = None) -> list[dict[str, Any]]:
    """A whole retraining in this process (no Ray); returns the per-epoch metrics."""
    run = Retrain(cfg, data)
    while run.epoch < cfg.epochs:
        run.run_epoch()
    return run.history


# --------------------------------------------------------------------------------------- Ray Tune

@functools.cache
def _trainable_class() -> type:
    import torch
    from ray import tune

    class RetrainTrainable(tune.Trainable):
        """One retraining as a Tune class trainable: ``step`` is one epoch; every metric of the epoch
        (and ``status``) is in the result dict, which is what a tracker (MLflow) should log."""

        def setup(self, config: dict[str, Any]) -> None:
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            if threads > 0:
                torch.set_num_threads(threads)
            self.cfg = resolve_retrain(config)
            self.run = Retrain(self.cfg)

        def step(self) -> dict[str, Any]:
            try:
                metrics = self.run.run_epoch()
            except RetrainDiverged as e:
                last = dict(self.run.history[-1]) if self.run.history else {}
                return {"params_m": self.run.params_m, **last, "status": "diverged", "error": str(e),
                        "epoch": e.epoch + 1, "done": True}
            done = self.run.epoch >= self.cfg.epochs
            return {**metrics, "status": "completed" if done else "running", "done": done}

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self.setup(new_config)
            return True

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            self.run.save(Path(checkpoint_dir) / CHECKPOINT_FILE)

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.run.load(Path(checkpoint_dir) / CHECKPOINT_FILE)

    # importable as raynas.retrain.RetrainTrainable (through __getattr__), so Ray pickles it by reference
    RetrainTrainable.__module__, RetrainTrainable.__qualname__ = __name__, "RetrainTrainable"
    return RetrainTrainable


def __getattr__(name: str) -> Any:
    if name == "RetrainTrainable":
        return _trainable_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- genotypes of a search

def genotypes_from_search(search_out_dir: str | Path, top_k: int = 1, objective: str = "valid_acc",
                          mode: str = "max") -> list[tuple[str, str, dict[str, Any]]]:
    """The best ``top_k`` distinct genotypes of a search (its ``summary.json``) by ``objective``.

    ``objective`` is a key of each trial's ``final`` (``train_acc``, ``valid_acc``) or ``nb201_valid`` /
    ``nb201_test`` (the NB201 row of the searched dataset). Errored and diverged trials are skipped.
    Returns ``(space, genotype, meta)``; ``meta`` names the search trial (method, dataset, seed, value).
    """
    import search_spaces
    from raynas.benchmarks.nb201 import ACCURACY_KEYS

    path = Path(search_out_dir) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{search_out_dir} is not a raynas experiment (no summary.json)")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode must be max or min, got {mode!r}")

    def value(t: dict[str, Any]) -> float | None:
        final = t.get("final") or {}
        if objective in ("nb201_valid", "nb201_test"):
            cols = ACCURACY_KEYS.get(t.get("dataset"), ACCURACY_KEYS["cifar10"])
            return (final.get("nb201") or {}).get(cols[objective == "nb201_test"])
        return final.get(objective)

    trials = summary.get("trials", []) if isinstance(summary, dict) else summary
    ranked = [(value(t), t) for t in trials if t.get("genotype") and t.get("status") not in ("error", "diverged")]
    if not ranked:
        raise ConfigError(f"{path} holds no finished trial with a genotype to retrain")
    sign = 1 if mode == "max" else -1
    ranked.sort(key=lambda vt: float("-inf") if vt[0] is None else sign * vt[0], reverse=True)
    out, seen = [], set()
    for v, t in ranked:
        space = t.get("space", "darts")
        key = (space, search_spaces.genotype_str(space, search_spaces.parse_genotype(space, t["genotype"])))
        if key in seen:
            continue
        seen.add(key)
        meta = {k: t.get(k) for k in ("trial_id", "method", "space", "dataset", "seed", "status", "epochs",
                                      "mlflow_run_id")}
        meta["tracking_uri"] = (summary.get("tracking") or {}).get("uri") if isinstance(summary, dict) else None
        out.append((space, key[1], {**meta, "objective": objective, "value": v, "summary": str(path.resolve())}))
        if len(out) == top_k:
            break
    return out


# ----------------------------------------------------------------------------------------- Ray runs

def track_retrain(entries: list[dict[str, Any]], uri: str) -> dict[str, Any]:
    """Log each retrain trial into its own MLflow run (per-epoch metrics from the trial's results),
    tag it ``raynas.search_run_id``, and write ``retrain.test_acc`` (mean over seeds) back onto the
    search run, so one UI column compares searched and retrained quality."""
    from raynas.tracking import TrialTracker, log_metric_on

    runs, by_search = [], {}
    for e in entries:
        search = e.get("search") or {}
        search_run = search.get("mlflow_run_id")
        tracker = TrialTracker(uri, "retrain", f"retrain/{e['space']}/{e['dataset']}/{e['seed']}",
                               params={"space": e["space"], "dataset": e["dataset"], "seed": e["seed"],
                                       "genotype": e["genotype"]},
                               tags={"space": e["space"], "dataset": e["dataset"], "seed": e["seed"],
                                     "genotype": e["genotype"], "raynas.search_run_id": search_run or "",
                                     "raynas.kind": "retrain"},
                               pending_dir=Path(e["path"]) / "mlflow_pending")
        result_file = Path(e["path"]) / "result.json"
        lines = result_file.read_text().splitlines() if result_file.is_file() else []
        for line in lines:
            r = json.loads(line)
            tracker.log_epoch({k: v for k, v in r.items() if k in ("test_acc", "train_acc", "train_loss", "lr",
                                                                     "epoch_time", "params_m", "best_test_acc")},
                              step=r.get("epoch", r.get("training_iteration", 0)))
        tracker.finish(e["status"], e.get("error"))
        runs.append(tracker.run_id)
        if search_run and e["test_acc"] is not None:
            by_search.setdefault(search_run, []).append(e["test_acc"])
    for run_id, accs in by_search.items():
        log_metric_on(uri, run_id, "retrain.test_acc", sum(accs) / len(accs))
    return {"uri": uri, "runs": runs, "search_runs": sorted(by_search)}


def _entry(result: Any) -> dict[str, Any]:
    """One ``retrain_summary.json`` trial entry from a Tune ``Result``."""
    import search_spaces

    cfg = resolve_retrain(result.config)
    m = result.metrics or {}
    status = "error" if result.error else m.get("status")
    entry = {
        "genotype": search_spaces.genotype_str(cfg.space, search_spaces.parse_genotype(cfg.space, cfg.genotype)),
        "space": cfg.space, "dataset": cfg.dataset, "seed": cfg.seed,
        "params_m": m.get("params_m"), "test_acc": m.get("test_acc"), "best_test_acc": m.get("best_test_acc"),
        "train_acc": m.get("train_acc"), "epochs": m.get("epoch", 0),
        "status": "stopped" if status in (None, "running") else status,
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "trial_id": m.get("trial_id") or Path(result.path).name.split("_")[-1],
        "search": cfg.search, "path": result.path,
    }
    if result.error:
        entry["error"] = str(result.error).strip().splitlines()[-1][:500]
    elif m.get("error"):
        entry["error"] = m["error"]
    return entry


def aggregate(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (space, dataset, genotype): test accuracy mean and std over the completed seeds, as papers report."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["space"], e["dataset"], e["genotype"]), []).append(e)
    rows = []
    for (space, dataset, genotype), es in groups.items():
        accs = [e["test_acc"] for e in es if e["status"] == "completed" and e["test_acc"] is not None]
        mean = sum(accs) / len(accs) if accs else None
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else None
        rows.append({"space": space, "dataset": dataset, "genotype": genotype, "seeds": len(es),
                     "completed": len(accs), "test_acc_mean": mean, "test_acc_std": std,
                     "params_m": next((e["params_m"] for e in es if e["params_m"] is not None), None)})
    return rows


def run_retrain(genotypes: list[tuple[str, str, dict[str, Any] | None]], seeds: list[int], out: str | Path,
                epochs: int | None = None, overrides: dict[str, Any] | None = None,
                resources: dict[str, float] | None = None, *, address: str | None = None,
                max_failures: int = 1, verbose: int = 1, tracking_uri: str | None = None) -> dict[str, Any]:
    """Retrain every (genotype, seed) pair as a Tune trial (``tune.grid_search``); write and return
    ``OUT/retrain_summary.json``.

    ``genotypes`` are ``(space, genotype text, search meta or None)``; the dataset is ``overrides``'
    if given, else the one the genotype was searched on (``meta["dataset"]``), else CIFAR-10.
    All trial configs are validated before Ray starts.
    """
    from raynas.data import check_dataset

    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    if not genotypes or not seeds:
        raise ConfigError("nothing to retrain: need at least one genotype and one seed")
    jobs = []
    for space, text, meta in genotypes:
        job: dict[str, Any] = {"space": space, "genotype": text, "search": meta}
        if "dataset" not in overrides and meta and meta.get("dataset"):
            job["dataset"] = meta["dataset"]
        jobs.append(job)
    configs = [resolve_retrain({**overrides, "arch": job, "seed": seed}) for job in jobs for seed in seeds]
    for dataset, data_dir, download in {(c.dataset, c.data_dir, c.download) for c in configs}:
        check_dataset(dataset, data_dir, download)

    from ray import tune

    from raynas.runner import init_ray

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(address)
    resources = resources or {"cpu": 1, "gpu": 0}
    reporter = tune.CLIReporter(
        metric_columns={"epoch": "epoch", "train_acc": "train acc", "test_acc": "test acc", "epoch_time": "s/epoch"},
        parameter_columns=["seed"], max_report_frequency=30)
    tuner = tune.Tuner(
        tune.with_resources(_trainable_class(), {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0)}),
        param_space={**overrides, "arch": tune.grid_search(jobs), "seed": tune.grid_search(list(seeds))},
        tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=lambda t: f"retrain_{t.trial_id}"),
        run_config=tune.RunConfig(
            name="retrain", storage_path=str(out / "ray_results"), progress_reporter=reporter, verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1, checkpoint_at_end=True),
            failure_config=tune.FailureConfig(max_failures=max_failures)))
    entries = [_entry(r) for r in tuner.fit()]
    summary = {"experiment": "retrain", "trials": entries, "genotypes": aggregate(entries)}
    if tracking_uri is not None:
        summary["tracking"] = track_retrain(entries, tracking_uri)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return summary


# ----------------------------------------------------------------------------------------------- CLI

def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def cmd_retrain(args: argparse.Namespace) -> int:
    from raynas.genotype_cmd import read_genotype_arg

    overrides = parse_set(args.set)
    for key in ("dataset", "data_dir", "device"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.source is not None:
        if args.space is not None:
            raise ConfigError("--space goes with --genotype; with --from each genotype keeps its search's space")
        genotypes = genotypes_from_search(args.source, args.top, args.objective)
    else:
        if args.space is None:
            raise ConfigError("--genotype needs --space (darts, s1, s2, s3, s4 or nb201)")
        genotypes = [(args.space, read_genotype_arg(args.genotype), None)]
    cpus = args.cpus if args.cpus is not None else float(os.cpu_count() or 1)
    gpus = args.gpus if args.gpus is not None else 0.0
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"--cpus must be > 0 and --gpus >= 0, got {cpus} and {gpus}")
    if gpus > 0:
        import torch

        if gpus > torch.cuda.device_count():
            raise ConfigError(f"{gpus} GPUs per trial requested but {torch.cuda.device_count()} are visible")
    uri = args.tracking_uri or (genotypes[0][2] or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        from raynas.tracking import default_tracking_uri
        uri = default_tracking_uri()
    if uri.lower() == "none":
        uri = None
    else:
        from raynas.tracking import check_reachable
        check_reachable(uri)
    summary = run_retrain(genotypes, _seeds(args.seeds), args.out, args.epochs, overrides,
                          {"cpu": cpus, "gpu": gpus}, address=args.address, tracking_uri=uri)
    print(f"\n{'space':<7}{'dataset':<15}{'seed':>5}  {'status':<10}{'ep':>5}{'test_acc':>10}{'params':>9}  genotype")
    for t in summary["trials"]:
        acc = "-" if t["test_acc"] is None else f"{t['test_acc']:.2f}"
        params = "-" if t["params_m"] is None else f"{t['params_m']:.2f}M"
        print(f"{t['space']:<7}{t['dataset']:<15}{t['seed']:>5}  {t['status']:<10}{t['epochs']:>5}{acc:>10}"
              f"{params:>9}  {t['genotype']}")
    for g in summary["genotypes"]:
        if g["test_acc_mean"] is not None:
            std = f" +- {g['test_acc_std']:.2f}" if g["test_acc_std"] is not None else ""
            print(f"{g['space']}/{g['dataset']}: test acc {g['test_acc_mean']:.2f}{std} over {g['completed']} "
                  f"seeds, {g['params_m']:.2f}M params: {g['genotype']}")
    print(f"summary: {Path(args.out) / SUMMARY_FILE}")
    return 0 if all(t["status"] == "completed" for t in summary["trials"]) else 1


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``raynas retrain`` to the CLI's subparsers."""
    p = subparsers.add_parser("retrain", help="train found genotypes from scratch (one Tune trial per seed)",
                              description="Retrain the best genotypes of a search (--from) or one given genotype "
                                          "from scratch with the papers' recipe; writes OUT/retrain_summary.json.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source", metavar="SEARCH_OUT_DIR", help="the --out of a raynas search")
    src.add_argument("--genotype", metavar="TEXT|FILE", help="one genotype (with --space)")
    p.add_argument("--space", choices=SPACES, help="space of --genotype")
    p.add_argument("--top", type=int, default=1, help="with --from: the K best distinct genotypes (default 1)")
    p.add_argument("--objective", default="valid_acc",
                   help="with --from: rank by this final metric (valid_acc, train_acc, nb201_valid, nb201_test)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one trial each (default 0)")
    p.add_argument("--epochs", type=int, help="default: the recipe's (600 DARTS spaces, 200 NB201)")
    p.add_argument("--dataset", help="default: the searched dataset (--from) or cifar10")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out", default="runs/retrain", help="output directory (retrain_summary.json, Ray results)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any RetrainConfig field, e.g. --set batch_size=64 --set drop_path_prob=0.3")
    p.add_argument("--cpus", type=float, help="CPUs per trial (default: all)")
    p.add_argument("--gpus", type=float, help="GPUs per trial, fractional allowed (default: 0)")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--tracking-uri", dest="tracking_uri",
                   help="MLflow URI (default: the search's, else $MLFLOW_TRACKING_URI or ./mlflow.db; none: off)")
    p.set_defaults(func=cmd_retrain)
    return p
