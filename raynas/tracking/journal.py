"""The offline journal: MLflow operations that could not be sent, kept on disk and sent later.

Every operation is a JSON dict with an ``id``, its target ``uri`` and a ``kind`` (``create_run``,
``log_batch``, ``log_artifacts``, ``terminate``, ``set_status``); ids sent are recorded, so operations
go out in order and exactly once, on a tracker's next successful call or with :func:`sync` from any
process. Queued operations carry their fixed timestamps, so a resend after a crash between "sent" and
"marked" is a no-op in MLflow (identical metrics are deduplicated).

Layout (``pending_dir``): ``pending.jsonl`` (operations), ``sent.txt`` (ids done), ``runs.json`` (runs
created late: local ref -> run id), ``files/`` (copies of queued artifacts), ``failed.jsonl``
(operations MLflow rejected for good, e.g. an invalid value; never retried).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raynas.tracking.store import TrackingError, client, ensure_experiment, error_reason, log_batch, warn

PENDING, SENT, RUNS, FAILED, FILES = "pending.jsonl", "sent.txt", "runs.json", "failed.jsonl", "files"


def transient(e: BaseException) -> bool:
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


def execute(op: dict[str, Any], uri: str, runs: dict[str, str], root: Path) -> str | None:
    """Perform one operation against ``uri``; returns the run id for ``create_run``.
    Every kind is idempotent (fixed timestamps, same values, created runs found by their local ref)."""
    c = client(uri)
    kind = op["kind"]
    if kind == "create_run":
        exp_id = ensure_experiment(uri, op["experiment"], op.get("artifact_root"))
        found = c.search_runs([exp_id], f"tags.`raynas.local_id` = '{op['local']}'", max_results=1) \
            if op.get("queued") else []
        run_id = found[0].info.run_id if found else \
            c.create_run(exp_id, start_time=op["start_time"], tags=op["tags"], run_name=op["run_name"]).info.run_id
        log_batch(c, run_id, [], op["params"], [])
        return run_id
    run_id = runs.get(op["run"], op["run"])
    if run_id.startswith("local:"):
        raise TrackingError(f"run {run_id} was never created (its create_run failed or is in another queue)")
    if kind == "log_batch":
        log_batch(c, run_id, op.get("metrics", []), op.get("params", []), op.get("tags", []))
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


class Journal:
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
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):  # written by rename, so only a hand edit cuts it
            raise TrackingError(f"{p}: runs.json is truncated or not JSON; restore it or delete it to "
                                "create the runs again") from None

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
                    run_id = execute(op, target, runs, self.root)
                except Exception as e:  # noqa: BLE001 - classified below
                    if transient(e):
                        down.add(target)
                        continue
                    warn(f"dropping a queued {op['kind']} for {op.get('run', op.get('local'))}: {error_reason(e)}")
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
    return Journal(pending_dir).flush(uri)


PARENT_QUEUE = "parent"  # the journal, under an experiment's ``mlflow_pending/``, of its parent run's operations


def finish_parent(tracking: dict[str, Any], status: str = "FINISHED") -> int:
    """Deliver what the trials queued, then end the parent run; what cannot be sent now (the server is
    down) stays queued, the parent's own end included, so ``raynas sync OUT`` finishes the job.
    Returns the number of operations still pending."""
    import time
    import uuid

    root = Path(tracking["pending_root"])
    pending = 0
    for d in sorted(p for p in root.glob("*") if p.is_dir() and p.name != PARENT_QUEUE):
        try:
            pending += sync(d).get("remaining", 0)
        except Exception:  # noqa: BLE001 - counted as pending; `raynas sync OUT` retries
            pending += 1
    queue = Journal(root / PARENT_QUEUE)
    if queue.unsent():  # an earlier end of this parent (before a resume) is still queued: send it first
        queue.flush()
    try:
        client(tracking["uri"]).set_terminated(tracking["parent_run_id"], status)
    except Exception as e:  # noqa: BLE001 - queued instead: a search must not die for its tracking
        warn(f"cannot end the parent run now ({error_reason(e)}); queued for `raynas sync`")
        queue.append({"id": uuid.uuid4().hex, "uri": tracking["uri"], "kind": "terminate",
                      "run": tracking["parent_run_id"], "status": status, "end_time": int(time.time() * 1000)})
    return pending + len(queue.unsent())
