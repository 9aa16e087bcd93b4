"""Retraining found genotypes as Ray Tune trials, one per (genotype, seed); summaries and MLflow.

The run itself (recipe, loop, checkpoints) is ``trials.retrain``; here it becomes a Tune trial, its
results a ``retrain_summary.json`` with mean and std over seeds, and its metrics MLflow runs linked to
the search that found the genotype.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from raynas.config import ConfigError, need
from raynas.trainable import RunTrainable
from trials.retrain import Retrain, RetrainConfig
from trials.retrain import resolve_retrain as _resolve_retrain

CHECKPOINT_FILE = "retrain.pt"
SUMMARY_FILE = "retrain_summary.json"


def resolve_retrain(overrides: dict[str, Any] | None = None) -> RetrainConfig:
    """``trials.retrain.resolve_retrain`` plus the app's checks: a dataset raynas can load, data that exist."""
    from raynas.data import DATASETS

    from raynas.checks import check_device

    cfg = _resolve_retrain(overrides)
    check_device(cfg.device)
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
    from raynas.tables.nb201 import ACCURACY_KEYS

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

    from raynas.outdir import OutputError, claim

    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a directory; pass a directory")
    with claim(out):  # one retraining per --out at a time
        return _run(jobs, seeds, out, overrides, resources, address, max_failures, verbose, tracking_uri)


def _run(jobs: list[dict[str, Any]], seeds: list[int], out: Path, overrides: dict[str, Any],
         resources: dict[str, float] | None, address: str | None, max_failures: int, verbose: int,
         tracking_uri: str | None) -> dict[str, Any]:
    from ray import tune

    from raynas.outdir import write_json

    grid = fit_retrainings(out, {**overrides, "arch": tune.grid_search(jobs), "seed": tune.grid_search(list(seeds))},
                           n_trials=len(jobs) * len(seeds), resources=resources, address=address,
                           max_failures=max_failures, verbose=verbose)
    entries = [_entry(r) for r in grid]
    summary = {"experiment": "retrain", "trials": entries, "genotypes": aggregate(entries)}
    if tracking_uri is not None:
        summary["tracking"] = track_retrain(entries, tracking_uri)
    write_json(out / SUMMARY_FILE, summary)
    return summary


def fit_retrainings(out: Path, param_space: dict[str, Any], *, n_trials: int, trainable: type = RetrainTrainable,
                    name: str = "retrain", kind: Any = None, tune_config: dict[str, Any] | None = None,
                    resources: dict[str, float] | None = None, address: str | None = None, max_failures: int = 1,
                    verbose: int = 1, checkpoint_keep: int = 2, **trainable_kw: Any) -> Any:
    """Retrainings as Tune trials under ``out/ray_results/name``, every epoch checkpointed, with the console's
    progress lines; returns Tune's results. ``param_space``: the trials' configs (``trainable`` resolves each);
    ``tune_config``: ``TuneConfig`` fields over the grid defaults (a searcher, ``num_samples``, ...);
    ``trainable_kw``: ``tune.with_parameters`` arguments (``tracking``, ...). ``raynas retrain`` and retrain
    studies (``raynas.searchers.retrain_run``) share it."""
    from ray import tune

    from raynas.cluster import init_ray
    from raynas.diskfull import DiskFullWatch, watched

    from raynas.console import RETRAIN, make_reporter, wants_board, worker_settings
    from raynas.progress import fit, start_board
    from raynas.threads import threads_per_trial, warn_oversubscribed

    init_ray(address)
    kind = kind or RETRAIN
    resources = resources or {"cpu": 1, "gpu": 0}
    cpus, threads = resources.get("cpu", 1), threads_per_trial(resources.get("cpu", 1), resources.get("threads"))
    settings = {"reuse_actors": True, "trial_dirname_creator": lambda t: f"retrain_{t.trial_id}", **(tune_config or {})}
    warn_oversubscribed(n_trials, cpus, threads, settings.get("max_concurrent_trials"), address)
    board = start_board(str(out), bool(verbose) and wants_board())
    columns = {"epoch": "epoch", **{c.key: f"{c.label} acc" for c in kind.columns}, "epoch_time": "s/epoch"}
    reporter, tune_verbose = make_reporter(kind, board, cli_reporter=lambda: tune.CLIReporter(
        metric_columns=columns, parameter_columns=["seed"], max_report_frequency=30))
    trainable = tune.with_parameters(trainable, console=worker_settings(board), threads=threads, **trainable_kw)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus, "gpu": resources.get("gpu", 0)}),
        param_space=param_space, tune_config=tune.TuneConfig(**settings),
        run_config=tune.RunConfig(
            name=name, storage_path=str(out / "ray_results"), progress_reporter=reporter if verbose else None,
            verbose=tune_verbose if verbose else 0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoint_keep, checkpoint_frequency=1,
                                                    checkpoint_at_end=True),
            failure_config=tune.FailureConfig(max_failures=max_failures), callbacks=[DiskFullWatch(out)]))
    return watched(out, lambda: fit(tuner, board))
