"""MLflow tracking: one parent run per raynas experiment, one child run per search trial.

Trials run in Ray workers, several in one process, so everything goes through ``MlflowClient`` with
explicit run ids (no global active run). A search must never die because the tracking server is
down: ``TrialTracker`` queues what it could not send in ``pending_dir`` and sends it later, in order
and exactly once (every operation has an id, sent ids are recorded), on its next successful call or
with :func:`sync` from any process. Queued operations carry their fixed timestamps, so a resend after a
crash between "sent" and "marked" is a no-op in MLflow (identical metrics are deduplicated).

Queue layout (``pending_dir``): ``pending.jsonl`` (operations), ``sent.txt`` (ids done),
``runs.json`` (runs created late: local ref -> run id), ``files/`` (copies of queued artifacts),
``failed.jsonl`` (operations MLflow rejected for good, e.g. an invalid value; never retried).
"""

from __future__ import annotations

import csv
import fcntl
import json
import numbers
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PENDING, SENT, RUNS, FAILED, FILES = "pending.jsonl", "sent.txt", "runs.json", "failed.jsonl", "files"
MAX_BATCH, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits
PARAM_MAX, TAG_MAX = 6000, 8000                   # MLflow's value length limits
#: fail fast on a dead server (MLflow's default retries for ~4 minutes); the queue does the retrying
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: Tune bookkeeping fields that are not search metrics
NOT_METRICS = {"epoch", "done", "timestamp", "pid", "training_iteration", "iterations_since_restore",
               "time_this_iter_s", "time_total_s", "time_since_restore", "timesteps_total", "episodes_total",
               "timesteps_since_restore"}
#: raynas trial status -> MLflow run status
RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "stopped_collapse": "FINISHED",
              "finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "error": "FAILED",
              "killed": "KILLED"}


class TrackingError(RuntimeError):
    """Tracking cannot work as configured; the message is one line saying what to do."""


# ------------------------------------------------------------------------------------ locations

def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db``: absolute, because a Tune trial's cwd is its trial dir."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def default_artifact_root(cwd: str | Path | None = None) -> str:
    return str(Path(cwd or os.getcwd()).resolve() / "mlartifacts")


def _is_http(uri: str) -> bool:
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


def _reason(e: BaseException) -> str:
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
    if _is_http(uri):
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
                raise TrackingError(f"tracking server {uri} is unreachable ({_reason(e)}); "
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


# ------------------------------------------------------------------------------------ MLflow calls

@lru_cache(maxsize=32)
def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    if _is_http(uri):
        for k, v in HTTP_ENV.items():
            os.environ.setdefault(k, v)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The experiment's id, created if missing. On sqlite (or another DB) its artifacts go to
    ``file://<artifact_root or db dir/mlartifacts>/<name>`` (MLflow's default is the cwd, a trial dir);
    an http server decides itself (proxied ``mlflow-artifacts:``), so workers need no shared disk."""
    from mlflow.exceptions import MlflowException

    c = _client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if not _is_http(uri):
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
    c = _client(uri)
    exp_id = ensure_experiment(uri, experiment_name, artifact_root)
    all_tags = {"raynas.parent": "true", **provenance_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if study_name:
        all_tags["optuna.study_name"] = study_name
    run_id = c.create_run(exp_id, tags=all_tags, run_name=run_name or experiment_name).info.run_id
    if yaml_text is not None:
        c.log_text(run_id, yaml_text, "experiment.yaml")
    return run_id


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status)


def find_trial_run(uri: str, experiment_name: str, trial_id: str) -> str | None:
    """The newest run tagged ``raynas.trial_id=trial_id``, so a restored trial whose checkpoint holds
    no run id continues its run. ``None`` if there is none, or if the store cannot be asked now."""
    try:
        if _is_http(uri) and not _probe(uri):
            return None
        exp = _client(uri).get_experiment_by_name(experiment_name)
        if exp is None:
            return None
        tid = str(trial_id).replace("'", "\\'")
        runs = _client(uri).search_runs([exp.experiment_id], f"tags.`raynas.trial_id` = '{tid}'", max_results=1,
                                        order_by=["attributes.start_time DESC"])
    except Exception as e:  # noqa: BLE001 - a lookup must not kill the trial; the queue creates the run later
        _warn(f"cannot look up the run of trial {trial_id}: {_reason(e)}")
        return None
    return runs[0].info.run_id if runs else None


def _probe(uri: str, timeout: float = 2.0) -> bool:
    try:
        check_reachable(uri, timeout=timeout)
        return True
    except TrackingError:
        return False


def log_metric_on(uri: str, run_id: str, key: str, value: float, step: int = 0) -> None:
    """One metric on an existing (possibly finished) run, e.g. ``retrain.test_acc`` on a search run."""
    _client(uri).log_metric(run_id, clean_key(key), float(value), step=step)


def clean_key(name: str) -> str:
    """MLflow's key charset (alnum, ``_ - . / :`` and space): ``1<-0`` -> ``1_0``, ``0->2`` -> ``0_2``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name).replace("<-", "_").replace("->", "_"))[:250]


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every numeric field of ``run_epoch()``'s dict, ``nb201.<column>`` and ``alpha.<cell>.<edge>.<op>``."""
    out = {clean_key(k): float(v) for k, v in metrics.items() if k not in NOT_METRICS and _is_number(v)}
    out.update({f"nb201.{clean_key(k)}": float(v) for k, v in (metrics.get("nb201") or {}).items()
                if _is_number(v)})
    for cell, edges in (metrics.get("alpha") or {}).items():
        for edge, ops in edges.items():
            for op, w in ops.items():
                out[f"alpha.{clean_key(cell)}.{clean_key(edge)}.{clean_key(op)}"] = float(w)
    return out


def _log_batch(c: Any, run_id: str, metrics: list, params: list, tags: list) -> None:
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


def _transient(e: BaseException) -> bool:
    """Worth retrying later (server down, timeout, 5xx, locked DB) rather than a rejected value."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if isinstance(e, OSError):  # connection errors (requests' exceptions are OSErrors too)
        return True
    if isinstance(e, RestException):
        return e.get_http_status_code() >= 500 or e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
    if isinstance(e, MlflowException):
        return e.error_code == "TEMPORARILY_UNAVAILABLE" or str(e.message).startswith("API request to")
    return type(e).__name__ == "OperationalError"  # sqlalchemy: database is locked


def _execute(op: dict[str, Any], uri: str, runs: dict[str, str], root: Path) -> str | None:
    """Perform one queued operation against ``uri``; returns the run id for ``create_run``.
    Every kind is idempotent (fixed timestamps, same values, created runs found by their local ref)."""
    c = _client(uri)
    kind = op["kind"]
    if kind == "create_run":
        exp_id = ensure_experiment(uri, op["experiment"], op.get("artifact_root"))
        found = c.search_runs([exp_id], f"tags.`raynas.local_id` = '{op['local']}'", max_results=1) \
            if op.get("queued") else []
        run_id = found[0].info.run_id if found else \
            c.create_run(exp_id, start_time=op["start_time"], tags=op["tags"], run_name=op["run_name"]).info.run_id
        _log_batch(c, run_id, [], op["params"], [])
        return run_id
    run_id = runs.get(op["run"], op["run"])
    if run_id.startswith("local:"):
        raise TrackingError(f"run {run_id} was never created (its create_run failed or is in another queue)")
    if kind == "log_batch":
        _log_batch(c, run_id, op.get("metrics", []), op.get("params", []), op.get("tags", []))
    elif kind == "log_artifacts":
        for path, art in op["files"]:
            c.log_artifact(run_id, str(root / path if not Path(path).is_absolute() else path), art)
    elif kind == "terminate":
        c.set_terminated(run_id, op["status"], op["end_time"])
    elif kind == "set_status":
        c.update_run(run_id, status=op["status"])
    else:
        raise TrackingError(f"unknown queued operation {kind!r}")
    return None


# ------------------------------------------------------------------------------------ offline queue

class _Queue:
    """Append-only operation log in ``root``; ``flock`` makes it safe across processes and threads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _lines(self, name: str) -> list[str]:
        p = self.root / name
        return p.read_text().splitlines() if p.exists() else []

    def ops(self) -> list[dict[str, Any]]:
        out = []
        for line in self._lines(PENDING):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: its op never returned
                pass
        return out

    def unsent(self, uri: str | None = None) -> list[dict[str, Any]]:
        if not (self.root / PENDING).exists() or not (self.root / PENDING).stat().st_size:
            return []
        done = set(self._lines(SENT))
        return [op for op in self.ops() if op["id"] not in done and (uri is None or op["uri"] == uri)]

    def runs(self) -> dict[str, str]:
        p = self.root / RUNS
        return json.loads(p.read_text()) if p.exists() else {}

    def append(self, op: dict[str, Any]) -> None:
        """Queue ``op``; its artifact files are copied in (the caller's temp files are about to go)."""
        with self.lock():
            if op["kind"] == "log_artifacts":
                files = []
                for i, (path, art) in enumerate(op["files"]):
                    rel = Path(FILES) / op["id"] / str(i) / Path(path).name
                    (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, self.root / rel)
                    files.append([str(rel), art])
                op = {**op, "files": files}
            with open(self.root / PENDING, "a") as f:
                f.write(json.dumps({**op, "queued": True}) + "\n")

    def _mark(self, op: dict[str, Any], run_id: str | None, runs: dict[str, str]) -> None:
        if run_id is not None:
            runs[op["local"]] = run_id
            tmp = self.root / (RUNS + ".tmp")
            tmp.write_text(json.dumps(runs))
            os.replace(tmp, self.root / RUNS)
        with open(self.root / SENT, "a") as f:
            f.write(op["id"] + "\n")

    def flush(self, uri: str | None = None) -> dict[str, int]:
        """Send unsent operations in order; a URI that fails transiently is skipped for the rest of
        this flush (order per run is kept). ``uri`` overrides every operation's target."""
        sent = failed = 0
        with self.lock():
            todo, runs, down = self.unsent(), self.runs(), set()
            for op in todo:
                target = uri or op["uri"]
                if target in down:
                    continue
                try:
                    run_id = _execute(op, target, runs, self.root)
                except Exception as e:  # noqa: BLE001 - classified below
                    if _transient(e):
                        down.add(target)
                        continue
                    _warn(f"dropping a queued {op['kind']} for {op.get('run', op.get('local'))}: {_reason(e)}")
                    with open(self.root / FAILED, "a") as f:
                        f.write(json.dumps({**op, "error": str(e)[:2000]}) + "\n")
                    run_id, failed = None, failed + 1
                else:
                    sent += 1
                self._mark(op, run_id, runs)
            remaining = len(todo) - sent - failed
            if remaining == 0 and todo:  # all done: start the log afresh
                for name in (PENDING, SENT):
                    (self.root / name).unlink(missing_ok=True)
                shutil.rmtree(self.root / FILES, ignore_errors=True)
        return {"sent": sent, "remaining": remaining, "failed": failed}


def sync(pending_dir: str | Path, uri: str | None = None) -> dict[str, int]:
    """Send what trackers queued in ``pending_dir`` (to ``uri`` if given, else each op's own target).
    Safe to repeat and to run beside live trackers: returns ``{sent, remaining, failed}``."""
    return _Queue(pending_dir).flush(uri)


def _warn(msg: str) -> None:
    print(f"raynas tracking: {msg}", file=sys.stderr)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _node_ip() -> str:
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            return ray.util.get_node_ip_address()
        return socket.gethostbyname(socket.gethostname())
    except Exception:  # noqa: BLE001 - a tag is not worth failing for
        return socket.gethostname()


# ------------------------------------------------------------------------------------ trial runs

class TrialTracker:
    """Logs one search trial into its own child run; survives an unreachable server.

    ``run_id`` given: resume that run (a restored trial continues its run, never creates a second).
    ``run_ref`` is what to checkpoint: the run id, or ``local:<hex>`` while the run is still queued.
    """

    def __init__(self, uri: str, experiment_name: str, run_name: str, *, parent_run_id: str | None = None,
                 params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                 pending_dir: str | Path, run_id: str | None = None, artifact_root: str | Path | None = None):
        self.uri, self.experiment_name = uri, experiment_name
        self._q = _Queue(pending_dir)
        self._alpha_history: list[dict[str, Any]] = []
        self._dead = False
        self._offline, self._probe_after = False, 0.0
        if _is_http(uri):
            _client(uri)  # sets the fail-fast HTTP retry policy before the first request
            self._offline = not self._server_up()  # queue at once rather than wait for MLflow's retries
        if run_id:
            self._ref = run_id
            self.run_id = self._q.runs().get(run_id) if run_id.startswith("local:") else run_id
            self._submit({"kind": "set_status", "status": "RUNNING"})
            return
        self._ref, self.run_id = f"local:{uuid.uuid4().hex}", None
        all_tags = {"status": "running", "node": _node_ip(), **{k: str(v) for k, v in (tags or {}).items()},
                    "raynas.local_id": self._ref}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        params = [[clean_key(k), str(v)[:PARAM_MAX]] for k, v in (params or {}).items()]
        self._submit({"kind": "create_run", "local": self._ref, "experiment": experiment_name,
                      "run_name": run_name, "tags": all_tags, "params": params, "start_time": _now_ms(),
                      "artifact_root": str(artifact_root) if artifact_root else None})

    @property
    def run_ref(self) -> str:
        return self.run_id or self._ref

    @property
    def pending(self) -> int:
        """Operations (of any tracker sharing ``pending_dir``) queued and not yet sent."""
        return len(self._q.unsent())

    def flush(self) -> dict[str, int]:
        out = self._q.flush()
        if self.run_id is None:
            self.run_id = self._q.runs().get(self._ref)
        return out

    def _submit(self, op: dict[str, Any]) -> None:
        """Send now, or queue behind earlier unsent operations for this URI (order is kept)."""
        if self._dead:
            return
        op = {"id": uuid.uuid4().hex, "uri": self.uri, **op}
        if op["kind"] != "create_run":
            op.setdefault("run", self.run_ref)
        if self._offline or self._q.unsent(self.uri):
            if self._server_up():
                self._offline = False
                self.flush()
                if op.get("run") == self._ref and self.run_id:
                    op["run"] = self.run_id
            if self._offline or self._q.unsent(self.uri):
                self._q.append(op)
                return
        try:
            run_id = _execute(op, self.uri, self._q.runs(), self._q.root)
        except Exception as e:  # noqa: BLE001 - a search must not die for its tracking
            if _transient(e):
                self._q.append(op)
                return
            _warn(f"{op['kind']} rejected by {self.uri}: {_reason(e)}")
            self._dead = op["kind"] == "create_run"
            return
        if op["kind"] == "create_run":
            self.run_id = run_id

    def _server_up(self) -> bool:
        """Probe before sending anything while offline; a failed probe is trusted for 10 s, so a
        blackholed server costs one 2 s probe per 10 s rather than one per operation."""
        if time.monotonic() < self._probe_after:
            return False
        if _probe(self.uri):
            return True
        self._probe_after = time.monotonic() + 10.0
        return False

    def _log_files(self, files: list[tuple[str, str | None, Any]]) -> None:
        """Write ``(name, artifact_dir, content)`` (dict -> JSON, callable(path) -> drawing) and log them."""
        with tempfile.TemporaryDirectory(prefix="raynas-art-") as d:
            out = []
            for name, art, content in files:
                path = Path(d) / (art or ".") / name
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    if callable(content):
                        content(path)
                    else:
                        path.write_text(json.dumps(content, indent=1))
                except Exception as e:  # noqa: BLE001 - a failed drawing must not lose the rest
                    _warn(f"cannot write {name}: {type(e).__name__}: {e}")
                    continue
                out.append([str(path), art])
            if out:
                self._submit({"kind": "log_artifacts", "files": out})

    def log_epoch(self, metrics: dict[str, Any], step: int) -> None:
        """Scalars, every alpha weight and the genotype tag in one ``log_batch``; alpha and genotype
        of the epoch as JSON artifacts."""
        ts = _now_ms()
        batch = [[k, v, ts, step] for k, v in epoch_metrics(metrics).items()]
        genotype = metrics.get("genotype")
        tags = [["genotype", str(genotype)[:TAG_MAX]]] if genotype else []
        self._submit({"kind": "log_batch", "metrics": batch, "tags": tags})
        alpha = metrics.get("alpha")
        files = []
        if alpha:
            self._alpha_history.append(alpha)
            files.append((f"alpha_epoch_{step:03d}.json", "alpha", {"epoch": step, "alpha": alpha}))
        if genotype:
            stats = {k: v for k, v in metrics.items() if k.startswith(("skip_count", "param_free_count"))}
            files.append((f"genotype_epoch_{step:03d}.json", "genotype",
                          {"epoch": step, "genotype": genotype, **stats, "nb201": metrics.get("nb201")}))
        self._log_files(files)

    def log_final(self, genotype: str, genotype_json: Any, space: str, checkpoint_path: str | None = None,
                  alpha_history: list[dict[str, Any]] | None = None) -> None:
        """``genotype.json``, the cell drawing (``cell.png``/``cell.svg``), the alpha heatmap
        (``alpha_heatmap.png``; from ``alpha_history``, else the epochs this tracker logged) and tags."""
        def cell(path: Path) -> None:
            import search_spaces
            from raynas.diagram import draw_cell
            draw_cell(space, search_spaces.parse_genotype(space, genotype), path)

        def heatmap(path: Path) -> None:
            from raynas.heatmap import draw_alpha_heatmap
            draw_alpha_heatmap(alpha_history or self._alpha_history, path)

        files = [("genotype.json", None, {"space": space, "genotype": genotype, "json": genotype_json}),
                 ("cell.png", None, cell), ("cell.svg", None, cell)]
        if alpha_history or self._alpha_history:
            files.append(("alpha_heatmap.png", None, heatmap))
        self._log_files(files)
        tags = [["genotype", str(genotype)[:TAG_MAX]]]
        if checkpoint_path:
            tags.append(["checkpoint", str(checkpoint_path)[:TAG_MAX]])
        self._submit({"kind": "log_batch", "tags": tags})

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run. ``status``: an MLflow status or a raynas one (``completed``, ``stopped``,
        ``stopped_collapse`` -> FINISHED; ``diverged``, ``error`` -> FAILED), kept as tag ``raynas.status``."""
        upper = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "killed"}
        raynas_status = upper.get(status, status.lower())
        run_status = RUN_STATUS.get(raynas_status, status.upper())
        tags = [["status", raynas_status], ["raynas.status", raynas_status]]
        if reason:
            tags.append(["raynas.failure_reason", str(reason)[:TAG_MAX]])
        self._probe_after = 0.0  # the last chance to deliver from this process: probe again
        self._submit({"kind": "log_batch", "tags": tags})
        self._submit({"kind": "terminate", "status": run_status, "end_time": _now_ms()})

    def log_metric_on(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        """A metric on another run of this URI (e.g. ``retrain.test_acc`` on a search run), queued if offline."""
        self._submit({"kind": "log_batch", "run": run_id, "metrics": [[clean_key(key), float(value), _now_ms(), step]]})


# ------------------------------------------------------------------------------------ comparison

def _all_runs(c: Any, exp_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def compare(uri: str, experiment: str, objective: str = "valid_acc", *, out_dir: str | Path | None = None,
            attach: bool = True) -> list[dict[str, Any]]:
    """One row per (method, space, dataset) over the experiment's FINISHED trial runs: n, mean and
    sample std of ``objective`` (its last value), the best value, its seed, run and genotype. Writes
    ``compare.csv``/``compare.md`` to ``out_dir`` and attaches ``compare.md`` to the parent run."""
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"no experiment {experiment!r} in {uri}")
    groups: dict[tuple[str, str, str], list[Any]] = {}
    parent = None
    for r in _all_runs(c, exp.experiment_id):
        t = r.data.tags
        if t.get("raynas.parent") == "true":
            parent = parent or r  # the newest
        elif "method" in t and r.info.status == "FINISHED" and objective in r.data.metrics:
            groups.setdefault((t["method"], t.get("space", ""), t.get("dataset", "")), []).append(r)
    higher = not objective.endswith(("loss", "error", "time"))
    rows = []
    for (method, space, dataset), runs in groups.items():
        vals = [r.data.metrics[objective] for r in runs]
        best = (max if higher else min)(runs, key=lambda r: r.data.metrics[objective])
        rows.append({"method": method, "space": space, "dataset": dataset, "objective": objective,
                     "n": len(vals), "mean": statistics.fmean(vals),
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "best": best.data.metrics[objective], "best_seed": best.data.tags.get("seed", ""),
                     "best_run_id": best.info.run_id, "genotype": best.data.tags.get("genotype", "")})
    rows.sort(key=lambda r: (r["space"], r["dataset"], -r["mean"] if higher else r["mean"]))
    if out_dir is not None or (attach and parent is not None):
        with tempfile.TemporaryDirectory() as d:
            _, md = compare_to_files(rows, out_dir or d)
            if attach and parent is not None:
                c.log_artifact(parent.info.run_id, str(md))
    return rows


def compare_to_files(rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``compare.csv`` (all fields) and ``compare.md`` (a table for a paper draft or a PR)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["method", "space", "dataset", "objective", "n", "mean", "std", "best", "best_seed", "best_run_id",
              "genotype"]
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    objective = rows[0]["objective"] if rows else "objective"
    lines = [f"| method | space | dataset | n | {objective} (mean ± std) | best | genotype of best |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['space']} | {r['dataset']} | {r['n']} | {r['mean']:.2f} ± {r['std']:.2f} "
              f"| {r['best']:.2f} | `{r['genotype']}` |" for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return out / "compare.csv", out / "compare.md"

