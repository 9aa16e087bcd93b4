"""NAR experiments: NAR training trials (``NARTrainable``) from an experiment file, Optuna-tuned and tracked.

The file has the format of ``raynas.experiment`` (grid, fixed, sweep, an Optuna ``tune:`` block, resources,
scheduler, storage, tracking) and is run by the same pieces (``param_space``, ``runner.search_alg``,
``runner.start_tracking``, the MLflow parent/child runs). Only the grid means something else: ``method`` is
``nar``, ``space`` is the benchmark (``nb201`` | ``nb101``), ``dataset`` the NB201 dataset, and ``fixed``,
``sweep`` and ``tune.space`` hold ``NARConfig`` fields. Every trial config is validated before Ray starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from raynas.config import ConfigError, build, deep_merge, load_yaml
from raynas.experiment import ExperimentConfig, apply_overrides, check_experiment, param_space, trial_overrides

GRID_DEFAULTS = {"method": ["nar"], "space": ["nb201"], "dataset": ["cifar10"], "seed": [0]}
#: per-epoch results a tune.metric / scheduler can use (the final ones exist only at the last epoch)
EPOCH_METRICS = ("val_kendall_tau", "val_spearman_rho", "val_tier_acc", "val_loss", "loss", "rank_loss", "tier_acc")
FINAL_METRICS = ("kendall_tau", "spearman_rho", "precision_at_top_5pct", "kendall_tau_valid", "spearman_rho_valid",
                 "precision_at_top_5pct_valid", "best_test_acc", "best_valid_acc", "percentile", "rank")
SUMMARY_FILE = "summary.json"


def to_nar(over: dict[str, Any]) -> dict[str, Any]:
    """A trial's experiment-style config -> ``NARConfig`` overrides: grid ``space`` is the bench."""
    over = dict(over)
    method = over.pop("method", "nar")
    if method != "nar":
        raise ConfigError(f"grid.method must be nar in a NAR experiment, got {method!r}")
    if "bench" in over:
        raise ConfigError("set the benchmark with grid.space (nb201 | nb101), not bench")
    if "space" in over:
        over["bench"] = over.pop("space")
    return over


def load_nar_experiment(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a NAR experiment file; ``overrides`` go to the experiment when they name one of its
    fields, to the grid for ``method/space/dataset/seed`` (``bench`` means ``space``), else into ``fixed``."""
    from raynas.checks import check_tuned_values
    from raynas.nar.data import load_bench, require_table
    from raynas.nar.train import check_split, resolve_nar

    data = deep_merge({"name": "nar", "grid": GRID_DEFAULTS}, load_yaml(path) if path else {})
    exp_fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    data = apply_overrides(data, overrides, exp_fields, rename={"bench": "space"})
    exp = build(ExperimentConfig, data)
    if isinstance(exp.fixed.get("table"), str):  # trials run in their own directories
        exp.fixed["table"] = str(Path(exp.fixed["table"]).expanduser().resolve())
    check_experiment(exp)
    if exp.scheduler.type not in ("fifo", "asha"):
        raise ConfigError(f"scheduler.type must be fifo or asha for NAR experiments, got {exp.scheduler.type!r}")
    metrics = EPOCH_METRICS + FINAL_METRICS
    if exp.tune is not None:
        for name in [exp.tune.metric] + [o.split(":")[0] for o in exp.tune.objectives]:
            if name not in metrics:
                raise ConfigError(f"tune.metric {name!r} is not a NAR result; use one of {', '.join(metrics)}")
    if exp.scheduler.type == "asha" and (exp.tune.metric if exp.tune else "val_kendall_tau") not in EPOCH_METRICS:
        raise ConfigError(f"scheduler asha compares trials every epoch: tune.metric must be one of "
                          f"{', '.join(EPOCH_METRICS)}")
    sizes: dict[tuple[str, str, str], int] = {}  # each table read once, here rather than in every trial

    def resolve_on_table(over: dict[str, Any]) -> Any:
        cfg = resolve_nar(to_nar(over))
        require_table(cfg.bench, cfg.table)
        key = (cfg.bench, cfg.table, cfg.dataset)
        if key not in sizes:
            sizes[key] = len(load_bench(*key))
        check_split(cfg, sizes[key])
        return cfg

    space = exp.tune.space if exp.tune else {}
    check_tuned_values(space, trial_overrides(exp), resolve_on_table)  # every grid point, both ends, each choice
    return exp


def nar_param_space(exp: ExperimentConfig) -> dict[str, Any]:
    """``raynas.experiment.param_space`` (grid as grid_search, or choices under Optuna; tuned distributions),
    its grid keys renamed to ``NARConfig``'s."""
    space = param_space(exp)
    space.pop("method", None)
    space["bench"] = space.pop("space")
    return space


def _objective(exp: ExperimentConfig) -> tuple[str, str]:
    return (exp.tune.metric, exp.tune.mode) if exp.tune is not None else ("val_kendall_tau", "max")


def run_nar_experiment(exp: ExperimentConfig, out: str | Path, *, address: str | None = None,
                       yaml_text: str | None = None, verbose: int = 1) -> dict[str, Any]:
    """Every trial of ``exp`` as a ``NARTrainable`` through ``tune.Tuner``; write and return ``summary.json``.
    ``out`` must not hold another experiment and is locked while the run lives."""
    from raynas.outdir import check_output, claim
    from raynas.runner import _check_tracking, ended_on_error, start_tracking

    out = Path(out).resolve()
    check_output(out, dataclasses.asdict(exp))  # before any file or MLflow run is created
    _check_tracking(exp)
    with claim(out):
        check_output(out, dataclasses.asdict(exp))
        tracking = start_tracking(exp, out, yaml_text)
        with ended_on_error(out, tracking):
            return _run(exp, out, tracking, address, verbose)


def _run(exp: ExperimentConfig, out: Path, tracking: dict[str, Any] | None, address: str | None,
         verbose: int) -> dict[str, Any]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from raynas.cluster import init_ray
    from raynas.diskfull import DiskFullWatch, watched
    from raynas.nar.trainable import NARTrainable
    from raynas.nar.train import resolve_nar
    from raynas.console import NAR, make_reporter, worker_settings
    from raynas.progress import fit
    from raynas.runner import n_trials, search_alg, start_console
    from raynas.threads import threads_per_trial

    init_ray(address)
    board = start_console(exp, address, n_trials(exp), out) if verbose else None
    metric, mode = _objective(exp)
    scheduler = None
    if exp.scheduler.type == "asha":
        max_t = max(resolve_nar(to_nar(o)).epochs for o in trial_overrides(exp))
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
                                  grace_period=min(exp.scheduler.grace_period, max_t),
                                  reduction_factor=exp.scheduler.reduction_factor)
    threads = threads_per_trial(exp.resources.cpu, exp.resources.threads)
    trainable = tune.with_resources(tune.with_parameters(NARTrainable, tracking=tracking,
                                                         console=worker_settings(board), threads=threads),
                                    {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu})
    reporter, tune_verbose = make_reporter(NAR, board, cli_reporter=lambda: tune.CLIReporter(
        metric_columns={"epoch": "epoch", "loss": "loss", "val_tier_acc": "val tier acc",
                        "val_kendall_tau": "val tau", "kendall_tau": "tau", "best_test_acc": "best acc"},
        parameter_columns=["bench", "dataset", "seed"], max_report_frequency=30))
    tuner = tune.Tuner(
        trainable, param_space=nar_param_space(exp),
        tune_config=tune.TuneConfig(
            search_alg=search_alg(exp, out) if exp.tune is not None else None, scheduler=scheduler,
            num_samples=exp.tune.num_samples if exp.tune is not None else 1,
            max_concurrent_trials=(exp.tune.max_concurrent_trials if exp.tune is not None
                                   else exp.max_concurrent_trials or None),
            reuse_actors=True, trial_dirname_creator=lambda t: f"nar_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=exp.name, storage_path=exp.storage_path or str(out / "ray_results"),
            progress_reporter=reporter if verbose else None,
            verbose=tune_verbose if verbose else 0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=exp.checkpoint_keep, checkpoint_frequency=1,
                                                    checkpoint_at_end=True),
            failure_config=tune.FailureConfig(max_failures=exp.max_failures), callbacks=[DiskFullWatch(out)]))
    return write_summary(watched(out, lambda: fit(tuner, board)), exp, out, tracking)


def _entry(result: Any) -> dict[str, Any]:
    """One ``summary.json`` trial entry from a Tune ``Result``."""
    m = result.metrics or {}
    config = result.config or {}  # None for a trial that died before its first result
    status = "error" if result.error else m.get("status")
    entry = {"trial_id": m.get("trial_id") or Path(result.path).name.split("_")[-1],
             "bench": config.get("bench"), "dataset": config.get("dataset"), "seed": config.get("seed"),
             "status": "stopped" if status in (None, "running") else status,
             "epochs": m.get("epoch", 0), **{k: m[k] for k in EPOCH_METRICS + FINAL_METRICS if k in m},
             **{k: m.get(k) for k in ("best_arch", "best_test_acc_oracle", "queries", "search_queries", "n_train",
                                      "n_val", "n_heldout", "best_epoch", "best_val_tier_acc",
                                      "scatter_png")},
             "checkpoint": result.checkpoint.path if result.checkpoint else None,
             "mlflow_run_id": m.get("mlflow_run_id"), "config": result.config, "path": result.path}
    if result.error:
        entry["error"] = str(result.error).strip().splitlines()[-1][:500]
    return entry


def write_summary(grid: Any, exp: ExperimentConfig, out: Path, tracking: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """``summary.json`` (trials best first by the objective); deliver queued MLflow operations, close the parent."""
    metric, mode = _objective(exp)
    sign = 1 if mode == "max" else -1
    trials = sorted((_entry(r) for r in grid), reverse=True,
                    key=lambda t: float("-inf") if t.get(metric) is None else sign * t[metric])
    summary: dict[str, Any] = {"experiment": exp.name, "objective": {"metric": metric, "mode": mode},
                               "trials": trials}
    if tracking:
        from raynas.tracking import finish_parent

        summary["tracking"] = {"uri": tracking["uri"], "experiment": exp.name,
                               "parent_run_id": tracking["parent_run_id"], "pending": finish_parent(tracking)}
    from raynas.outdir import write_json
    write_json(out / SUMMARY_FILE, summary)
    return summary
