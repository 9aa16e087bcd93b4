"""A retrain study (:mod:`raynas.searchers.retrain_study`) as Ray Tune trials: every trial retrains its sampled
cell with its sampled hyperparameters (``CellRetrainTrainable``, the ``raynas retrain`` trainable given the cell),
checkpointed each epoch, an MLflow child run under the study's parent; then ``OUT/retrain_study.json`` with each
trial's cell, hyperparameters and holdout accuracy, and the best.

The table (``nb201_table``) is read here, in the driver, after the trials: its accuracies go to the summary and
the trials' MLflow runs, never into a result a searcher hears.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from raynas.config import ConfigError, flatten
from raynas.console import Column, Kind
from raynas.retrain import RetrainTrainable
from raynas.searchers.retrain_study import RetrainStudyConfig, fixed_overrides, new_searcher
from raynas.searchers.space import CELL_KEY, EDGE_KEYS, arch_of
from search_spaces.nb201 import format_genotype

#: the console's columns of a trial: its label, train and holdout accuracy
CELL_RETRAIN = Kind(("space", "dataset"), (Column("train_acc", "train"), Column("holdout_acc", "holdout")))
#: ``Retrain`` with ``holdout`` measures its ``test_*`` on the held-out images: named for what they are
HOLDOUT_NAMES = {"test_acc": "holdout_acc", "test_loss": "holdout_loss", "best_test_acc": "best_holdout_acc"}


def holdout_named(metrics: dict[str, Any]) -> dict[str, Any]:
    return {HOLDOUT_NAMES.get(k, k): v for k, v in metrics.items()}


class CellRetrainTrainable(RetrainTrainable):
    """``RetrainTrainable`` whose genotype is the trial's sampled cell (``config[cell_key]``); every other config
    key is a ``RetrainConfig`` field (the study's fixed ones and the sampled hyperparameters). Results carry the
    trained genotype and the held-out metrics under holdout names, never a test-split number."""

    def setup(self, config: dict[str, Any], cell_key: str | None = None, **kw: Any) -> None:
        self.cell_key = cell_key or getattr(self, "cell_key", CELL_KEY)  # reset_config passes no parameters
        super().setup(config, **kw)

    def build(self, config: dict[str, Any]) -> Any:
        over = {k: v for k, v in config.items() if k != self.cell_key}
        run = super().build({**over, "space": "nb201", "genotype": arch_of(config, self.cell_key)})
        if self.cfg.holdout <= 0:
            raise ConfigError("a retrain study's trials are scored on retrain.holdout > 0 of the train split")
        return run

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        c = self.cfg
        params = {k: v for k, v in flatten(dataclasses.asdict(c)).items() if not k.startswith("search")}
        params.update({f"cell.{k}": op for k, op in zip(EDGE_KEYS, self.run.genotype.ops)})
        return (f"cell/{c.dataset}/{self.trial_id}", params,
                {"space": c.space, "dataset": c.dataset, "seed": c.seed, "genotype": c.genotype,
                 "eval_split": "holdout", "raynas.kind": "cell_retrain"})

    def epoch_result(self, metrics: dict[str, Any], done: bool) -> tuple[dict[str, Any], str, bool]:
        result, status, done = super().epoch_result(holdout_named(metrics), done)
        return {**result, "genotype": format_genotype(self.run.genotype),
                "holdout_images": self.run.test_stream.n}, status, done

    def last_metrics(self) -> dict[str, Any]:
        return holdout_named(super().last_metrics())

    def log_final(self, tracker: Any, result: dict[str, Any] | None) -> None:
        g = self.run.genotype
        tracker.log_final(format_genotype(g), g.to_json(), "nb201")  # genotype.json and the cell drawing


# ---------------------------------------------------------------------------------------------- the run

def run_retrain_study(s: RetrainStudyConfig, out: str | Path, *, address: str | None = None,
                      yaml_text: str | None = None, force: bool = False, verbose: int = 1) -> dict[str, Any]:
    """Run study ``s`` (checked by ``load_retrain_study``); write and return ``OUT/retrain_study.json``.
    The data, the table, the tracking store and ``out`` are checked before anything is written."""
    from raynas.data import check_dataset
    from raynas.outdir import RETRAIN_STUDY_FILE, claimed, write_json
    from raynas.retrain import fit_retrainings, resolve_retrain
    from raynas.runner import ended_on_error, tracking_uri
    from raynas.searchers.tune_run import _dirname

    cfg = resolve_retrain(fixed_overrides(s))
    check_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    table = None
    if s.nb201_table:
        from raynas.tables.nb201 import NB201Table
        table = NB201Table.load(s.nb201_table)
    uri = tracking_uri(s)
    if uri is not None:
        from raynas.tracking import check_reachable
        check_reachable(uri)
    searcher = new_searcher(s)
    t = s.tune
    with claimed(Path(out).resolve(), force=force) as out:
        tracking = start_tracking(s, out, uri, yaml_text)
        with ended_on_error(out, tracking):
            grid = fit_retrainings(
                out, {**s.retrain, "space": "nb201"}, n_trials=t.num_samples, trainable=CellRetrainTrainable,
                name=s.name, kind=CELL_RETRAIN, resources=dataclasses.asdict(s.resources), address=address,
                max_failures=s.max_failures, verbose=verbose, checkpoint_keep=s.checkpoint_keep,
                tune_config={"search_alg": searcher, "metric": t.metric, "mode": t.mode, "num_samples": t.num_samples,
                             "max_concurrent_trials": t.max_concurrent_trials, "trial_dirname_creator": _dirname},
                tracking=tracking, cell_key=s.cell_key)
            summary = summarise(grid, s, cfg.dataset, table)
            if tracking:
                summary["tracking"] = finish_tracking(tracking, summary)
            write_json(out / RETRAIN_STUDY_FILE, summary)
    print_summary(summary)
    return summary


def start_tracking(s: RetrainStudyConfig, out: Path, uri: str | None, yaml_text: str | None) -> dict[str, Any] | None:
    """The study's MLflow parent run; the trials' runs are its children (``RunTrainable``'s tracking)."""
    if uri is None:
        return None
    from raynas.tracking import default_artifact_root, start_parent_run

    root = default_artifact_root() if uri.startswith("sqlite") else None
    parent = start_parent_run(uri, s.name, yaml_text=yaml_text, artifact_root=root,
                              tags={"raynas.kind": "retrain_study", "raynas.out": str(out), "space": "nb201",
                                    "searcher": s.tune.searcher, "metric": s.tune.metric})
    return {"uri": uri, "experiment": s.name, "parent_run_id": parent, "artifact_root": root,
            "pending_root": str(out / "mlflow_pending")}


def finish_tracking(tracking: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The table's accuracies onto each trial's run, the best onto the parent; then end the parent."""
    from raynas.tracking import finish_parent
    from raynas.tracking.store import client

    c = client(tracking["uri"])
    for trial in summary["trials"]:
        for key in ("nb201_valid", "nb201_test"):
            if trial.get(key) is not None and trial.get("mlflow_run_id"):
                c.log_metric(trial["mlflow_run_id"], key, float(trial[key]))
    best, metric = summary["best"], summary["objective"]["metric"]
    if best is not None:
        c.log_metric(tracking["parent_run_id"], f"best_{metric}", float(best[metric]))
        c.set_tag(tracking["parent_run_id"], "best_genotype", best["cell"])
        for k, v in best["hyperparameters"].items():
            c.set_tag(tracking["parent_run_id"], f"best.{k}", str(v))
    pending = finish_parent(tracking)
    if pending:
        print(f"raynas: {pending} MLflow operations are pending; deliver them with "
              f"`raynas sync {Path(tracking['pending_root']).parent}`")
    return {"uri": tracking["uri"], "experiment": tracking["experiment"], "parent_run_id": tracking["parent_run_id"],
            "pending": pending}


# ------------------------------------------------------------------------------------------- the summary

def trial_entry(result: Any, s: RetrainStudyConfig) -> dict[str, Any]:
    """One trial: its sampled cell and hyperparameters, the genotype it trained, its holdout metrics."""
    from raynas.runner import trial_status

    m, flat = result.metrics or {}, flatten(result.config)
    entry = {
        "trial_id": m.get("trial_id") or Path(result.path).name.split("_")[-1], "status": trial_status(result),
        "cell": arch_of(result.config, s.cell_key), "hyperparameters": {k: flat.get(k) for k in s.hyper},
        "genotype": m.get("genotype"), "epochs": m.get("epoch", 0),
        **{k: m.get(k) for k in ("holdout_acc", "holdout_loss", "best_holdout_acc", "train_acc", "train_loss",
                                 "eval_split", "holdout_images", "params_m")},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "mlflow_run_id": m.get("mlflow_run_id"), "path": result.path,
    }
    if result.error:
        entry["error"] = str(result.error).strip().splitlines()[-1][:500]
    elif m.get("error"):
        entry["error"] = m["error"]
    return entry


def summarise(grid: Any, s: RetrainStudyConfig, dataset: str, table: Any = None) -> dict[str, Any]:
    """Every trial in proposal order (with the table's accuracies of its cell, if a table is given) and the
    best completed one by the study's metric."""
    from raynas.tables.nb201 import TableError, nb201_headline

    trials = [trial_entry(r, s) for r in sorted(grid, key=lambda r: Path(r.path).name)]
    if table is not None:
        for trial in trials:
            try:
                trial.update(nb201_headline(table.query(trial["cell"]), dataset))
            except TableError:  # a cell the table lacks: nothing to report
                pass
    metric, mode = s.tune.metric, s.tune.mode
    done = [x for x in trials if x["status"] == "completed" and x.get(metric) is not None]
    best = (max if mode == "max" else min)(done, key=lambda x: x[metric]) if done else None
    return {"study": dataclasses.asdict(s), "objective": {"metric": metric, "mode": mode, "split": "holdout"},
            "trials": trials, "best": best, "retrain_best": retrain_command(s, best, dataset) if best else None}


def retrain_command(s: RetrainStudyConfig, best: dict[str, Any], dataset: str) -> str:
    """The ``raynas retrain`` of the best cell with its hyperparameters on the whole train split, scored on the
    test split: the number a paper reports, measured once, after the search."""
    sets = {**{k: v for k, v in flatten(s.retrain).items() if k not in ("holdout", "dataset")},
            **best["hyperparameters"]}
    seed = sets.pop("seed", None)  # raynas retrain takes its seeds as a flag
    flags = " ".join([*([f"--seeds {seed}"] if seed is not None else []), *(f"--set {k}={v}" for k, v in sets.items())])
    return f"raynas retrain --genotype '{best['cell']}' --space nb201 --dataset {dataset} {flags}".rstrip()


def _value(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def print_summary(summary: dict[str, Any]) -> None:
    """Every trial (best first), the best, and how to retrain it."""
    metric, mode = summary["objective"]["metric"], summary["objective"]["mode"]
    keys = list(summary["study"]["tune"]["space"])
    hyper = [k for k in keys if summary["trials"] and k in summary["trials"][0]["hyperparameters"]]

    def order(t: dict[str, Any]) -> float:
        v = t.get(metric)
        return float("inf") if v is None else (-v if mode == "max" else v)

    print(f"\n{'trial':<12}{'status':<11}{metric:>12}  " + "".join(f"{k:>14}" for k in hyper) + "  cell")
    for t in sorted(summary["trials"], key=order):
        print(f"{t['trial_id']:<12}{t['status']:<11}{_value(t.get(metric)):>12}  "
              + "".join(f"{_value(t['hyperparameters'].get(k)):>14}" for k in hyper) + f"  {t['cell']}")
    best = summary["best"]
    if best is None:
        print("no trial completed")
        return
    hp = " ".join(f"{k}={_value(v)}" for k, v in best["hyperparameters"].items())
    print(f"best: trial {best['trial_id']}, {metric} {_value(best[metric])} on {best['holdout_images']} held-out "
          f"images{', ' + hp if hp else ''}, cell {best['cell']}")
    print(f"its test accuracy (trained on the whole train split, scored on the test split): {summary['retrain_best']}")
