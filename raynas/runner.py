"""Run searches as Ray Tune trials (``tune.Tuner``) and write ``OUT/summary.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raynas.config import resolve

# Quiet, documented Ray defaults for a CLI (see ../shared/reference/stack.md).
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def summarise(result: Any) -> dict[str, Any]:
    """One ``summary.json`` trial entry from a Tune ``Result``."""
    cfg = resolve(result.config)
    m = result.metrics or {}
    status = m.get("status") or ("error" if result.error else "stopped")
    if result.error and status == "running":
        status = "error"
    entry = {
        "trial_id": m.get("trial_id") or Path(result.path).name,
        "method": cfg.method, "space": cfg.space, "dataset": cfg.dataset, "seed": cfg.seed,
        "status": status,
        "epochs": m.get("epoch", 0),
        "genotype": m.get("genotype"),
        "final": {"train_acc": m.get("train_acc"), "valid_acc": m.get("valid_acc"), "nb201": m.get("nb201")},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "node_id": m.get("node_id"), "node_ip": m.get("node_ip"),
        "path": result.path,
    }
    if result.error:
        entry["error"] = str(result.error).strip().splitlines()[-1][:500]
    elif m.get("error"):
        entry["error"] = m["error"]
    return entry


def run_searches(param_space: dict[str, Any], out: str | Path, *, name: str = "search",
                 resources: Resources | None = None, address: str | None = None,
                 num_samples: int = 1, max_failures: int = 2, keep_checkpoints: int = 2,
                 verbose: int = 1) -> dict[str, Any]:
    """Run every trial of ``param_space`` (user overrides, may contain ``tune.grid_search``)."""
    from ray import tune
    from ray.tune import CLIReporter

    from raynas.trainable import SearchTrainable

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    resources = resources or Resources()
    init_ray(address, num_cpus=None)
    reporter = CLIReporter(
        metric_columns={"epoch": "epoch", "train_acc": "train acc", "valid_acc": "val acc",
                        "skip_count": "skips", "alpha_entropy": "H(alpha)", "epoch_time": "s/epoch"},
        parameter_columns=["method", "space", "dataset", "seed"], max_report_frequency=30)
    tuner = tune.Tuner(
        tune.with_resources(SearchTrainable, {"cpu": resources.cpu, "gpu": resources.gpu}),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples,
                                    trial_dirname_creator=lambda t: f"{t.trainable_name}_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(out / "ray_results"), progress_reporter=reporter, verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints, checkpoint_frequency=1,
                                                    checkpoint_at_end=True),
            failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    grid = tuner.fit()
    summary = {"trials": [summarise(r) for r in grid]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
