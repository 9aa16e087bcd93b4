"""Attaching a written report to its experiment's MLflow parent run, as artifacts under ``report/``."""

from __future__ import annotations

from raynas.outdir import read_json

import os
import sys
from pathlib import Path


def attach_to_mlflow(report_dir: str | Path, tracking_uri: str, experiment_name: str) -> str | None:
    """Log the report files and plots as artifacts (under ``report/``) of the experiment's parent run
    (tag ``raynas.parent`` = "true", newest first); return its run id, or None (said on stderr)."""
    report_dir = Path(report_dir)
    db = tracking_uri[len("sqlite:///"):].split("?")[0] if tracking_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():
        print(f"raynas report: no MLflow store at {tracking_uri}; report not attached", file=sys.stderr)
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`raynas.parent` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not runs:
        print(f"raynas report: no MLflow parent run (tag raynas.parent=true) in experiment {experiment_name!r} "
              f"at {tracking_uri}; report not attached", file=sys.stderr)
        return None
    run_id = runs[0].info.run_id
    for name in ("report.md", "report.html", "report.json"):
        if (report_dir / name).is_file():
            client.log_artifact(run_id, str(report_dir / name), artifact_path="report")
    if (report_dir / "plots").is_dir():
        client.log_artifacts(run_id, str(report_dir / "plots"), artifact_path="report/plots")
    return run_id


def tracking_target(exp_dir: Path, tracking_uri: str | None = None) -> tuple[str | None, str]:
    """(tracking URI, experiment name) a report of ``exp_dir`` attaches to: ``tracking_uri``, else as the runner
    chose: the experiment's ``tracking_uri``, ``$MLFLOW_TRACKING_URI``, ``./mlflow.db`` when it exists (else None;
    None too for ``none``, tracking off)."""
    state = exp_dir / "experiment.json"
    exp = read_json(state, "experiment.json").get("experiment", {}) if state.is_file() else {}
    implicit = Path("mlflow.db")  # the runner's default store, sqlite:///<cwd>/mlflow.db, when it exists
    uri = tracking_uri or exp.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{implicit.resolve()}" if implicit.is_file() else None)
    if uri is not None and uri.lower() == "none":  # tracking off, as for raynas run
        uri = None
    return uri, read_json(exp_dir / "summary.json", "summary.json").get("experiment", exp.get("name"))
