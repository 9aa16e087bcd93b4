"""NAS-aware logging of one trial into its own MLflow child run: params, every epoch's scalars and
alpha weights, the genotype as a tag and JSON, the cell drawing and alpha heatmap at the end.

Trials run in Ray workers, several in one process, so everything goes through ``MlflowClient`` with
explicit run ids (no global active run). What cannot be sent goes to the offline journal
(:mod:`raynas.tracking.journal`), so a search never dies because the tracking server is down.
"""

from __future__ import annotations

import json
import numbers
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from raynas.tracking.journal import Journal, execute, transient
from raynas.tracking.store import PARAM_MAX, TAG_MAX, clean_key, client, error_reason, is_http, probe, warn

#: Tune bookkeeping fields that are not search metrics
NOT_METRICS = {"epoch", "done", "timestamp", "pid", "training_iteration", "iterations_since_restore",
               "time_this_iter_s", "time_total_s", "time_since_restore", "timesteps_total", "episodes_total",
               "timesteps_since_restore"}
#: raynas trial status -> MLflow run status
RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "stopped_collapse": "FINISHED",
              "finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "error": "FAILED",
              "killed": "KILLED"}


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


def _degenerate_reason(space: str, genotype: str) -> str | None:
    try:
        import search_spaces
        return search_spaces.degenerate_reason(space, search_spaces.parse_genotype(space, genotype))
    except (ValueError, KeyError):  # not a cell genotype of a known space (e.g. an NB101 hash)
        return None


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
        self._q = Journal(pending_dir)
        self._alpha_history: list[dict[str, Any]] = []
        self._dead = False
        self._degenerate_tagged = bool(run_id)  # a resumed run may carry a reason from before
        self._offline, self._probe_after = False, 0.0
        if is_http(uri):
            client(uri)  # sets the fail-fast HTTP retry policy before the first request
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
            run_id = execute(op, self.uri, self._q.runs(), self._q.root)
        except Exception as e:  # noqa: BLE001 - a search must not die for its tracking
            if transient(e):
                self._q.append(op)
                return
            warn(f"{op['kind']} rejected by {self.uri}: {error_reason(e)}")
            self._dead = op["kind"] == "create_run"
            return
        if op["kind"] == "create_run":
            self.run_id = run_id

    def _server_up(self) -> bool:
        """Probe before sending anything while offline; a failed probe is trusted for 10 s, so a
        blackholed server costs one 2 s probe per 10 s rather than one per operation."""
        if time.monotonic() < self._probe_after:
            return False
        if probe(self.uri):
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
                    warn(f"cannot write {name}: {type(e).__name__}: {e}")
                    continue
                out.append([str(path), art])
            if out:
                self._submit({"kind": "log_artifacts", "files": out})

    def _degenerate_tags(self, reason: str | None) -> list[list[str]]:
        """Tags ``degenerate`` (true/false) and ``degenerate_reason`` (emptied when the cell is sound again)."""
        if reason:
            self._degenerate_tagged = True
            return [["degenerate", "true"], ["degenerate_reason", reason[:TAG_MAX]]]
        return [["degenerate", "false"], *([["degenerate_reason", ""]] if self._degenerate_tagged else [])]

    def log_epoch(self, metrics: dict[str, Any], step: int) -> None:
        """Scalars, every alpha weight and the genotype tag in one ``log_batch``; alpha and genotype
        of the epoch as JSON artifacts."""
        ts = _now_ms()
        batch = [[k, v, ts, step] for k, v in epoch_metrics(metrics).items()]
        genotype = metrics.get("genotype")
        tags = [["genotype", str(genotype)[:TAG_MAX]]] if genotype else []
        if "degenerate" in metrics:
            tags += self._degenerate_tags(metrics.get("degenerate_reason") if metrics["degenerate"] else None)
        self._submit({"kind": "log_batch", "metrics": batch, "tags": tags})
        alpha = metrics.get("alpha")
        files = []
        if alpha:
            self._alpha_history.append(alpha)
            files.append((f"alpha_epoch_{step:03d}.json", "alpha", {"epoch": step, "alpha": alpha}))
        if genotype:
            stats = {k: v for k, v in metrics.items() if k.startswith(("skip_count", "param_free_count", "degenerate"))}
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
        tags = [["genotype", str(genotype)[:TAG_MAX]], *self._degenerate_tags(_degenerate_reason(space, genotype))]
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

