"""Retraining found genotypes as Ray Tune trials, one per (genotype, seed); summaries and MLflow.

The run itself (recipe, loop, checkpoints) is ``trials.retrain``; here it becomes a Tune trial, its
results a ``retrain_summary.json`` with mean and std over seeds, and its metrics MLflow runs linked to
the search that found the genotype.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from raynas.config import ConfigError, need, parse_set
from raynas.trainable import RunTrainable
from trials.retrain import SPACES, Retrain, RetrainConfig
from trials.retrain import resolve_retrain as _resolve_retrain

CHECKPOINT_FILE = "retrain.pt"
SUMMARY_FILE = "retrain_summary.json"


def resolve_retrain(overrides: dict[str, Any] | None = None) -> RetrainConfig:
    """``trials.retrain.resolve_retrain`` plus the app's checks: a dataset raynas can load, data that exist."""
    from raynas.data import DATASETS

    cfg = _resolve_retrain(overrides)
    need(cfg.dataset in DATASETS, f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    if cfg.data_dir is not None and cfg.dataset != "digits":
        need(Path(cfg.data_dir).is_dir() or cfg.download,
             f"data_dir {cfg.data_dir} does not exist; pass an existing --data-dir (or --download to fetch)")
    return cfg


class RetrainTrainable(RunTrainable):
    """One retraining as a Tune trial: ``step`` is one epoch; every metric of the epoch (and ``status``)
    is in the result dict, which ``track_retrain`` logs to MLflow afterwards."""

    checkpoint_file = CHECKPOINT_FILE

    def build(self, config: dict[str, Any]) -> Retrain:
        from raynas.data import load_dataset

        self.cfg = c = resolve_retrain(config)
        return Retrain(c, load_dataset(c.dataset, c.data_dir, c.download))

    def last_metrics(self) -> dict[str, Any]:
        return {"params_m": self.run.params_m, **super().last_metrics()}


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
        tune.with_resources(RetrainTrainable, {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0)}),
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
