"""Where the MLflow store lives and how to talk to it: default URIs, the ``raynas server`` command,
reachability checks with one-line errors, the cached client and the run-level calls the driver makes
(experiment, parent run, finding a trial's run)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

#: schemes of the tracking stores MLflow serves besides http(s): SQLAlchemy databases and Databricks
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "databricks")
MAX_BATCH, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits
PARAM_MAX, TAG_MAX = 6000, 8000                   # MLflow's value length limits
#: fail fast on a dead server (MLflow's default retries for ~4 minutes); the queue does the retrying
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingError(RuntimeError):
    """Tracking cannot work as configured; the message is one line saying what to do."""


def warn(msg: str) -> None:
    """Tracking trouble goes to stderr, never up the stack: a search must not die for its tracking."""
    print(f"raynas tracking: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------ locations

def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db``: absolute, because a Tune trial's cwd is its trial dir."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def default_artifact_root(cwd: str | Path | None = None) -> str:
    return str(Path(cwd or os.getcwd()).resolve() / "mlartifacts")


def is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def _sqlite_path(uri: str) -> Path | None:
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def server_command(host: str = "127.0.0.1", port: int = 5000, backend_store: str | Path | None = None,
                   artifacts_destination: str | Path | None = None) -> list[str]:
    """``mlflow server`` with a sqlite store and proxied artifacts, so cluster workers need no shared disk."""
    backend = str(backend_store or Path.cwd() / "mlflow.db")
    if "://" not in backend:
        backend = f"sqlite:///{Path(backend).resolve()}"
    dest = Path(artifacts_destination or Path.cwd() / "mlartifacts").resolve()
    exe = Path(sys.executable).with_name("mlflow")
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    return [*prog, "server", "--backend-store-uri", backend, "--artifacts-destination", str(dest),
            "--host", host, "--port", str(port), "--workers", "1"]


def error_reason(e: BaseException) -> str:
    """An exception as a few words for a one-line message (``connection refused``, its first line)."""
    r = getattr(e, "reason", e)
    if isinstance(r, ConnectionRefusedError):
        return "connection refused"
    if isinstance(r, TimeoutError):
        return "timed out"
    if isinstance(r, socket.gaierror):
        return "unknown host"
    text = str(r).strip().splitlines()
    return text[0] if text else type(r).__name__


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail early, in the driver, with one line: a dead server, an unwritable sqlite dir, a file store."""
    if is_http(uri):
        base, last = uri.rstrip("/"), ""
        for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
            try:
                with urllib.request.urlopen(base + path, timeout=timeout) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} on {path.split('?')[0]}"
            except (urllib.error.URLError, OSError) as e:
                raise TrackingError(f"tracking server {uri} is unreachable ({error_reason(e)}); "
                                    "start it with `raynas server` or pass --tracking-uri") from None
        raise TrackingError(f"{uri} does not answer like an MLflow tracking server ({last}); check --tracking-uri")
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"tracking store {uri}: cannot create {db.parent} ({e.strerror})") from None
        if not os.access(db.resolve().parent, os.W_OK):
            raise TrackingError(f"tracking store {uri}: {db.resolve().parent} is not writable")
    elif uri.lower().startswith("file:") or "://" not in uri:
        raise TrackingError(f"tracking URI {uri!r} is a file store, which MLflow 3 refuses; "
                            f"use e.g. {default_tracking_uri()} or http://HOST:PORT")
    elif uri.split("://", 1)[0].split("+", 1)[0].lower() not in DB_SCHEMES:
        raise TrackingError(f"tracking URI {uri!r}: MLflow has no store for this scheme; use "
                            f"{default_tracking_uri()}, http://HOST:PORT or a database URL (postgresql://...)")


def probe(uri: str, timeout: float = 2.0) -> bool:
    """:func:`check_reachable` as a yes/no with a short timeout, for deciding whether to queue."""
    try:
        check_reachable(uri, timeout=timeout)
        return True
    except TrackingError:
        return False


# ------------------------------------------------------------------------------------ MLflow calls

@lru_cache(maxsize=32)
def client(uri: str) -> Any:
    """One ``MlflowClient`` per URI; for a server, with the fail-fast retry policy of :data:`HTTP_ENV`."""
    from mlflow import MlflowClient

    if is_http(uri):
        for k, v in HTTP_ENV.items():
            os.environ.setdefault(k, v)
    return MlflowClient(tracking_uri=uri)


def clean_key(name: str) -> str:
    """MLflow's key charset (alnum, ``_ - . / :`` and space): ``1<-0`` -> ``1_0``, ``0->2`` -> ``0_2``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name).replace("<-", "_").replace("->", "_"))[:250]


def log_batch(c: Any, run_id: str, metrics: list, params: list, tags: list) -> None:
    """``log_batch`` in chunks within MLflow's limits (1000 entities, 100 params, 100 tags)."""
    from mlflow.entities import Metric, Param, RunTag

    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        p, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
        t, tags = tags[:MAX_TAGS], tags[MAX_TAGS:]
        room = MAX_BATCH - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        c.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in m],
                    params=[Param(k, v) for k, v in p], tags=[RunTag(k, v) for k, v in t], synchronous=True)


def ensure_experiment(uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The experiment's id, created if missing. On sqlite (or another DB) its artifacts go to
    ``file://<artifact_root or db dir/mlartifacts>/<name>`` (MLflow's default is the cwd, a trial dir);
    an http server decides itself (proxied ``mlflow-artifacts:``), so workers need no shared disk."""
    from mlflow.exceptions import MlflowException

    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if not is_http(uri):
        db = _sqlite_path(uri)
        root = Path(artifact_root) if artifact_root else (db.resolve().parent / "mlartifacts" if db else None)
        if root is not None:
            location = (root.resolve() / re.sub(r"[^\w.-]+", "_", name)).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:
        exp = c.get_experiment_by_name(name)  # a concurrent trial created it first
        if exp is None:
            raise
        return exp.experiment_id


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def provenance_tags() -> dict[str, str]:
    """Git commit of the raynas source and the versions of the packages that decide the results."""
    tags = {}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    for pkg in ("torch", "ray", "mlflow", "optuna", "raynas"):
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tags


def start_parent_run(uri: str, experiment_name: str, *, yaml_text: str | None = None,
                     study_name: str | None = None, tags: dict[str, Any] | None = None,
                     run_name: str | None = None, artifact_root: str | Path | None = None) -> str:
    """The run that groups an experiment's trials (tag ``raynas.parent=true``); returns its id."""
    c = client(uri)
    exp_id = ensure_experiment(uri, experiment_name, artifact_root)
    all_tags = {"raynas.parent": "true", **provenance_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if study_name:
        all_tags["optuna.study_name"] = study_name
    run_id = c.create_run(exp_id, tags=all_tags, run_name=run_name or experiment_name).info.run_id
    if yaml_text is not None:
        c.log_text(run_id, yaml_text, "experiment.yaml")
    return run_id


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


def find_trial_run(uri: str, experiment_name: str, trial_id: str) -> str | None:
    """The newest run tagged ``raynas.trial_id=trial_id``, so a restored trial whose checkpoint holds
    no run id continues its run. ``None`` if there is none, or if the store cannot be asked now."""
    try:
        if is_http(uri) and not probe(uri):
            return None
        exp = client(uri).get_experiment_by_name(experiment_name)
        if exp is None:
            return None
        tid = str(trial_id).replace("'", "\\'")
        runs = client(uri).search_runs([exp.experiment_id], f"tags.`raynas.trial_id` = '{tid}'", max_results=1,
                                       order_by=["attributes.start_time DESC"])
    except Exception as e:  # noqa: BLE001 - a lookup must not kill the trial; the queue creates the run later
        warn(f"cannot look up the run of trial {trial_id}: {error_reason(e)}")
        return None
    return runs[0].info.run_id if runs else None


def log_metric_on(uri: str, run_id: str, key: str, value: float, step: int = 0) -> None:
    """One metric on an existing (possibly finished) run, e.g. ``retrain.test_acc`` on a search run."""
    client(uri).log_metric(run_id, clean_key(key), float(value), step=step)
