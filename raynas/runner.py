"""Run experiments as Ray Tune trials (``tune.Tuner``), resume them, write ``OUT/summary.json``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raynas.cluster import check_cluster, init_ray
from raynas.config import ConfigError, build, resolve
from raynas.experiment import ExperimentConfig, param_space, trial_overrides
from raynas.outdir import (FULL, STATE_FILE, SUMMARY_FILE, OutputError, check_output, claim, clear_owned, disk_error,
                           read_json, write_json)
from raynas.progress import fit
from raynas.threads import threads_per_trial

# Quiet, documented Ray defaults for a CLI (see ../shared/reference/stack.md).
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

def trial_status(result: Any) -> str:
    """A trial's raynas status from its Tune result: error, stopped (ended before its last epoch) or its own."""
    m = result.metrics or {}
    status = m.get("status")
    if result.error:
        return "error"
    if status in (None, "running"):
        return "stopped"  # ended by the scheduler (ASHA) or a stop criterion before its last epoch
    return status


def summarise(result: Any) -> dict[str, Any]:
    """One ``summary.json`` trial entry from a Tune ``Result``."""
    cfg = resolve(result.config)
    m = result.metrics or {}
    reason = _degenerate_reason(cfg.space, m.get("genotype"))
    entry = {
        "trial_id": m.get("trial_id") or Path(result.path).name.split("_")[-1],
        "method": cfg.method, "space": cfg.space, "dataset": cfg.dataset, "seed": cfg.seed,
        "status": trial_status(result),
        "epochs": m.get("epoch", 0),
        "genotype": m.get("genotype"),
        "final": {"train_acc": m.get("train_acc"), "valid_acc": m.get("valid_acc"), "nb201": m.get("nb201")},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "mlflow_run_id": m.get("mlflow_run_id"),
        "node_id": m.get("node_id"), "node_ip": m.get("node_ip"),
        "skip_count": m.get("skip_count"),
        "degenerate": reason is not None, "degenerate_reason": reason,
        "config": result.config,
        "path": result.path,
    }
    if m.get("seeds") is not None:  # a seed group (raynas.seeds): every seed's result and the aggregates
        from raynas.objectives import END_ONLY, NB201
        entry["seeds"] = m["seeds"]
        entry["final"].update({k: v for k, v in m.items() if k in END_ONLY + NB201
                               or k.endswith(("_mean", "_std", "_worst"))})
    if result.error:
        entry["error"] = str(result.error).strip().splitlines()[-1][:500]
    elif m.get("error"):
        entry["error"] = m["error"]
    return entry


def _degenerate_reason(space: str, genotype: str | None) -> str | None:
    """Why the final cell is degenerate (``search_spaces.degenerate_reason``), None when sound or unknown."""
    if not genotype:
        return None
    import search_spaces
    try:
        return search_spaces.degenerate_reason(space, search_spaces.parse_genotype(space, genotype))
    except (ValueError, KeyError):
        return None


def warn_degenerate(trials: list[dict[str, Any]]) -> None:
    """One warning line per trial whose final cell is degenerate (its genotype is not a usable architecture)."""
    for t in trials:
        if t.get("degenerate_reason"):
            print(f"raynas: warning: {t['method']}/{t['space']}/{t['dataset']}/seed{t['seed']} found a degenerate "
                  f"cell ({t['degenerate_reason']}); set collapse_degenerate: fail to stop such trials as collapsed")


def _objective(exp: ExperimentConfig) -> tuple[str, str]:
    return (exp.tune.metric, exp.tune.mode) if exp.tune is not None else ("valid_acc", "max")


def search_alg(exp: ExperimentConfig, out: Path) -> Any:
    from raynas.study import search_alg as study_search

    return study_search(exp, out)


def tracking_uri(exp: ExperimentConfig) -> str | None:
    """``tracking_uri`` of the experiment, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``;
    ``none`` turns tracking off."""
    from raynas.tracking import default_tracking_uri

    uri = exp.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.lower() == "none":
        return None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"  # trials run in their own directories
    return uri


def _check_tracking(exp: ExperimentConfig) -> None:
    """The tracking store answers (one line if not), before ``--out`` is created."""
    from raynas.tracking import check_reachable

    uri = tracking_uri(exp)
    if uri is not None:
        check_reachable(uri)


def start_tracking(exp: ExperimentConfig, out: Path, yaml_text: str | None,
                   parent_run_id: str | None = None) -> dict[str, Any] | None:
    """Create the MLflow experiment and its parent run (once; a resumed experiment reuses it)."""
    from raynas.tracking import check_reachable, default_artifact_root, ensure_experiment, start_parent_run

    uri = tracking_uri(exp)
    if uri is None:
        return None
    check_reachable(uri)
    root = default_artifact_root() if uri.startswith("sqlite") else None
    ensure_experiment(uri, exp.name, root)
    if parent_run_id is None:
        parent_run_id = start_parent_run(uri, exp.name, yaml_text=yaml_text, artifact_root=root,
                                         study_name=(exp.tune.study_name or exp.name) if exp.tune else None,
                                         tags={"raynas.out": str(out)})
    return {"uri": uri, "experiment": exp.name, "parent_run_id": parent_run_id, "artifact_root": root,
            "pending_root": str(out / "mlflow_pending")}


def _trainable(exp: ExperimentConfig, tracking: dict[str, Any] | None = None, board: str | None = None) -> Any:
    """The search trainable, or a seed group's (``raynas.seeds``); with an objective known only at a
    group's end, Tune is told not to require it in every epoch's result (its documented switch)."""
    from ray import tune

    from raynas.console import worker_settings
    from raynas.objectives import grouped
    from raynas.trainable import SearchTrainable

    if grouped(exp):  # k seeds per Optuna trial and/or end-of-search objectives
        from raynas.seeds import trainable as seeds_trainable
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        return seeds_trainable(exp, tracking, board)
    trainable = tune.with_parameters(SearchTrainable, tracking=tracking, console=worker_settings(board),
                                     threads=threads_per_trial(exp.resources.cpu, exp.resources.threads))
    return tune.with_resources(trainable, {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu})


def _cli_reporter() -> Any:
    """Ray's own status tables (``-v``)."""
    from ray.tune import CLIReporter

    return CLIReporter(
        metric_columns={"epoch": "epoch", "train_acc": "train acc", "valid_acc": "val acc", "skip_count": "skips",
                        "nb201_test": "NB201 acc", "epoch_time": "s/epoch"},
        parameter_columns=["method", "space", "dataset", "seed"], max_report_frequency=30)


def start_console(exp: ExperimentConfig, address: str | None, n_trials: int, out: Path) -> str | None:
    """After Ray is up: the oversubscription warning and the progress board's name (none unless the normal
    console shows progress)."""
    from raynas.console import wants_board
    from raynas.progress import start_board
    from raynas.threads import warn_oversubscribed

    max_conc = exp.tune.max_concurrent_trials if exp.tune is not None else exp.max_concurrent_trials or None
    warn_oversubscribed(n_trials, exp.resources.cpu, threads_per_trial(exp.resources.cpu, exp.resources.threads),
                        max_conc, address)
    return start_board(str(out), wants_board())


def n_trials(exp: ExperimentConfig) -> int:
    return exp.tune.num_samples if exp.tune is not None else len(trial_overrides(exp))


def run_experiment(exp: ExperimentConfig, out: str | Path, *, address: str | None = None,
                   yaml_text: str | None = None, verbose: int = 1, force: bool = False) -> dict[str, Any]:
    """Run every trial of ``exp`` with ``tune.Tuner``; write and return ``summary.json``.
    ``out`` must not hold another experiment (``force``: replace it) and is locked while the run lives."""
    from ray import tune

    from raynas.objectives import grouped

    out = Path(out).resolve()
    settings = dataclasses.asdict(exp)
    check_output(out, settings, force=force)  # before any file or MLflow run is created
    check_cluster(address, exp.storage_path or str(out / "ray_results"), tracking_uri(exp))
    _check_tracking(exp)
    with claim(out):
        check_output(out, settings, force=force)  # again under the lock: a run on this --out may have just ended
        if force:
            clear_owned(out)
        tracking = start_tracking(exp, out, yaml_text)
        with ended_on_error(out, tracking):
            write_json(out / STATE_FILE, {"experiment": settings, "yaml": yaml_text, "tracking": tracking})
            init_ray(address)
            board = start_console(exp, address, n_trials(exp), out) if verbose else None
            tune_config = tune.TuneConfig(
                search_alg=search_alg(exp, out) if exp.tune is not None else None,
                scheduler=_scheduler(exp),
                num_samples=exp.tune.num_samples if exp.tune is not None else 1,
                max_concurrent_trials=(exp.tune.max_concurrent_trials if exp.tune is not None
                                       else exp.max_concurrent_trials or None),
                reuse_actors=not grouped(exp),
                trial_dirname_creator=lambda t: f"{t.trainable_name}_{t.trial_id}")
            space = param_space(exp)
            if grouped(exp):  # the trial's seeds are the group's (raynas.seeds), not an Optuna parameter
                from raynas.objectives import trial_seeds
                space["seed"] = trial_seeds(exp)[0]
            tuner = tune.Tuner(_trainable(exp, tracking, board), param_space=space, tune_config=tune_config,
                               run_config=_run_config(exp, out, board, verbose))
            from raynas.diskfull import watched
            return write_summary(watched(out, lambda: fit(tuner, board)), exp, out, tracking)


@contextmanager
def ended_on_error(out: Path, tracking: dict[str, Any] | None) -> Iterator[None]:
    """A run that dies of an exception ends its MLflow parent FAILED (``resume`` finishes it later), and
    a full disk under ``out`` is one line naming the file, not a traceback."""
    try:
        yield
    except Exception as e:
        if tracking:
            try:
                from raynas.tracking import finish_run
                finish_run(tracking["uri"], tracking["parent_run_id"], "FAILED")
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        if isinstance(e, OSError) and e.errno in FULL:
            raise disk_error(e, out) from None
        raise


def _scheduler(exp: ExperimentConfig) -> Any:
    """ASHA or HyperBand over training iterations, on ``scheduler.metric`` (else the objective); the
    checks in ``raynas.objectives`` guarantee it is a number every epoch reports."""
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    from raynas.objectives import grouped, natural_mode, needs_proxy

    if exp.scheduler.type == "fifo":
        return None
    metric, mode = _objective(exp)
    if exp.scheduler.metric is not None:
        metric = exp.scheduler.metric
        mode = natural_mode(metric)  # the same direction the seed group aggregates it in
    max_t = max(resolve(o).epochs for o in trial_overrides(exp))
    if grouped(exp) and needs_proxy(exp.tune):
        max_t += exp.proxy.epochs
    if exp.scheduler.type == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
                                  reduction_factor=exp.scheduler.reduction_factor)
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
                         grace_period=min(exp.scheduler.grace_period, max_t),
                         reduction_factor=exp.scheduler.reduction_factor)


def _run_config(exp: ExperimentConfig, out: Path, board: str | None = None, verbose: int = 1) -> Any:
    """``verbose=0``: no console output from Tune at all (the console level decides otherwise)."""
    from ray import tune

    from raynas.console import SEARCH, make_reporter
    from raynas.diskfull import DiskFullWatch

    reporter, tune_verbose = make_reporter(SEARCH, board, cli_reporter=_cli_reporter)
    return tune.RunConfig(
        name=exp.name, storage_path=exp.storage_path or str(out / "ray_results"),
        progress_reporter=reporter if verbose else None, verbose=tune_verbose if verbose else 0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=exp.checkpoint_keep, checkpoint_frequency=1,
                                                checkpoint_at_end=True),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures), callbacks=[DiskFullWatch(out)])


def load_state(out: str | Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{out} is not a raynas experiment directory (no {STATE_FILE}); pass the --out of a run")
    state = read_json(path, STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("experiment"), dict):
        raise OutputError(f"{path}: does not hold a raynas experiment (no 'experiment' mapping)")
    try:
        return build(ExperimentConfig, state["experiment"]), state
    except ConfigError as e:
        raise OutputError(f"{path}: {e}") from None


def resume_experiment(out: str | Path, *, address: str | None = None) -> dict[str, Any]:
    """Finish an interrupted experiment with ``Tuner.restore``: finished trials are not rerun."""
    from ray import tune

    out = Path(out).resolve()
    exp, state = load_state(out)
    path = Path(exp.storage_path or out / "ray_results") / exp.name
    if not tune.Tuner.can_restore(str(path)):
        raise ConfigError(f"nothing to resume under {path} (no Tune experiment state)")
    check_tune_state(path)
    check_cluster(address, exp.storage_path or str(out / "ray_results"), tracking_uri(exp))
    with claim(out):
        old = state.get("tracking")
        tracking = start_tracking(exp, out, state.get("yaml"), old["parent_run_id"]) if old else None
        with ended_on_error(out, tracking):
            init_ray(address)
            board = start_console(exp, address, n_trials(exp), out)
            tuner = tune.Tuner.restore(str(path), trainable=_trainable(exp, tracking, board), resume_unfinished=True,
                                       resume_errored=True)
            from raynas.diskfull import watched
            return write_summary(watched(out, lambda: fit(tuner, board)), exp, out, tracking)


def check_tune_state(path: Path) -> None:
    """Tune's newest experiment state under ``path`` is whole JSON: one written onto a full disk is cut
    short, and ``Tuner.restore`` would die on it in a traceback."""
    import json

    states = sorted(path.glob("experiment_state-*.json"))
    if states:
        try:
            json.loads(states[-1].read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise OutputError(f"{states[-1]}: Tune's experiment state is truncated (written onto a full disk?); "
                              "this run cannot be resumed, start it again with --force") from None


def write_summary(grid: Any, exp: ExperimentConfig, out: Path, tracking: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    metric, mode = _objective(exp)
    trials = [summarise(r) for r in grid]
    summary = {"experiment": exp.name, "objective": {"metric": metric, "mode": mode}, "trials": trials}
    if tracking:
        from raynas.tracking import finish_parent

        pending = finish_parent(tracking)
        summary["tracking"] = {"uri": tracking["uri"], "experiment": exp.name,
                               "parent_run_id": tracking["parent_run_id"], "pending": pending}
        if pending:
            print(f"raynas: {pending} MLflow operations are pending; deliver them with `raynas sync {out}`")
    write_json(out / SUMMARY_FILE, summary)
    print_table(trials, metric, mode)
    warn_degenerate(trials)
    return summary


def objective_value(trial: dict[str, Any], metric: str) -> float | None:
    final = trial.get("final", {})
    if metric in final:
        return final[metric]
    nb = final.get("nb201") or {}
    if metric.startswith("nb201_") and nb:
        from raynas.trainable import nb201_headline
        return nb201_headline(nb, trial["dataset"]).get(metric)
    return None


def _seed_genotypes(trial: dict[str, Any]) -> str:
    """A seed group's genotypes, one per seed (``-`` when there are none)."""
    genos = [s.get("genotype") or "-" for s in trial.get("seeds") or []]
    return " ; ".join(genos) if genos else "-"


def print_table(trials: list[dict[str, Any]], metric: str, mode: str) -> None:
    """All trials, best first by the objective."""
    def key(t: dict[str, Any]) -> float:
        v = objective_value(t, metric)
        return float("-inf") if v is None else (v if mode == "max" else -v)

    rows = sorted(trials, key=key, reverse=True)
    print(f"\n{'method':<11}{'space':<7}{'dataset':<15}{'seed':>5}  {'status':<17}{'ep':>4}  {metric:>12}  genotype")
    for t in rows:
        v = objective_value(t, metric)
        value = "-" if v is None else f"{v:.2f}"
        print(f"{t['method']:<11}{t['space']:<7}{t['dataset']:<15}{t['seed']:>5}  {t['status']:<17}{t['epochs']:>4}"
              f"  {value:>12}  {t['genotype'] or _seed_genotypes(t)}")
