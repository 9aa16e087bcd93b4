"""One Ray Tune trainable for every kind of run: search, retraining, NAR training.

``RunTrainable`` drives any ``trials.epochs.EpochRun``: ``step()`` is one epoch, checkpoints sit between
epochs (a corrupted one falls back to the trial's previous checkpoint), divergence ends the trial with
status ``diverged``, and with ``tracking`` (from ``tune.with_parameters``) the trial is an MLflow child
run under the experiment's parent, continued after a restore. A kind of run says only what differs:
how to build it, what to call and tag its MLflow run, and what to log per epoch and at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raynas.diskfull import STATUS, full_reason, is_full
from raynas.tables.nb201 import nb201_headline
from trials.epochs import Diverged, EpochRun, set_threads_from_env

TRACKING_FILE = "tracking.json"

def node() -> dict[str, str]:
    """Ray's node id and IP of this trial (empty outside Ray; never starts a Ray instance)."""
    if not ray.is_initialized():
        return {"node_id": "", "node_ip": ""}
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def previous_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Sibling ``checkpoint_NNNNNN`` directories older than ``checkpoint_dir``, newest first."""
    def index(p: Path) -> int:
        try:
            return int(p.name.rsplit("_", 1)[-1])
        except ValueError:
            return -1

    me = index(checkpoint_dir)
    older = [p for p in checkpoint_dir.parent.glob("checkpoint_*") if p.is_dir() and -1 < index(p) < me]
    return sorted(older, key=index, reverse=True)


def search_live(info: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A search's progress report as the console shows it: the table row of the current genotype becomes
    its headline accuracy (``nb201_test``); for a search trial and for each seed of a seed group."""
    row = info.pop("nb201", None)
    return {**info, **nb201_headline(row, dataset)}


class RunTrainable(tune.Trainable):
    """Tune's class API over an ``EpochRun``; subclasses define the five methods of the first block."""

    checkpoint_file = "run.pt"

    # -- what a kind of run defines ------------------------------------------------------------------
    def build(self, config: dict[str, Any]) -> EpochRun:
        """Resolve ``config`` (one-line ``ConfigError``), set ``self.cfg`` and return the run."""
        raise NotImplementedError

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The MLflow run's name, params and tags."""
        raise NotImplementedError

    def epoch_result(self, metrics: dict[str, Any], done: bool) -> tuple[dict[str, Any], str, bool]:
        """This epoch's result (metrics plus anything the kind adds), its status, and whether the trial ends."""
        return metrics, ("completed" if done else "running"), done

    def log_epoch(self, tracker: Any, result: dict[str, Any]) -> None:
        tracker.log_epoch(result, step=result["epoch"])

    def log_final(self, tracker: Any, result: dict[str, Any] | None) -> None:
        """What the finished run leaves in MLflow besides its metrics (``result`` is None when stopped)."""

    def live(self, info: dict[str, Any]) -> dict[str, Any]:
        """An intra-epoch progress report as the console shows it (``raynas.progress``)."""
        return info

    # -- shared by every kind ---------------------------------------------------------------------------
    def setup(self, config: dict[str, Any], tracking: dict[str, Any] | None = None,
              console: dict[str, Any] | None = None, threads: int | None = None) -> None:
        """``console`` (``raynas.console.worker_settings``): the progress board and the console level;
        ``threads``: torch threads (the driver's ``threads_per_trial``)."""
        from raynas.console import quiet_worker_logs

        self.console = console if console is not None else getattr(self, "console", None) or {}
        self.threads = threads if threads is not None else getattr(self, "threads", None)
        if self.console.get("level"):
            os.environ["RAYNAS_CONSOLE"] = self.console["level"]
        quiet_worker_logs()
        set_threads_from_env(self.threads)
        self.run = self.build(config)
        if self.console.get("board"):
            from raynas.progress import TrialSink

            self.run.progress_every = self.console.get("every", self.run.progress_every)
            self.run.progress = TrialSink(self.console["board"], self.trial_id, self.live)
        self.status = "running"
        self.tracking = tracking if tracking is not None else getattr(self, "tracking", None)
        self.tracker: Any = None
        self.run_ref: str | None = None  # MLflow run of this trial, restored from its checkpoint
        self._finished = False
        self.disk_full: str | None = None  # the one line of a write that found the disk full
        self._full_reports = 0

    def _tracker(self) -> Any:
        """The trial's MLflow child run, created at the first epoch (after a checkpoint restore, so a
        resumed trial continues its run); ``None`` when tracking is off."""
        if self.tracker is None and self.tracking:
            from raynas.tracking import TrialTracker, find_trial_run

            t = self.tracking
            name, params, tags = self.describe()
            ref = self.run_ref or find_trial_run(t["uri"], t["experiment"], self.trial_id)
            self.tracker = TrialTracker(
                t["uri"], t["experiment"], name, parent_run_id=t.get("parent_run_id"), params=params, run_id=ref,
                tags={**tags, "raynas.trial_id": self.trial_id, "raynas.torch_threads": str(torch.get_num_threads())},
                pending_dir=Path(t["pending_root"]) / self.trial_id,
                artifact_root=t.get("artifact_root"))
        return self.tracker

    def _log(self, result: dict[str, Any]) -> dict[str, Any]:
        tracker = self._tracker()
        if tracker is None:
            return result
        self.log_epoch(tracker, result)
        if result.get("done"):
            self._finish(result["status"], result.get("error"), result)
        return {**result, "mlflow_run_id": tracker.run_id, "mlflow_pending": tracker.pending}

    def _finish(self, status: str, reason: str | None, result: dict[str, Any] | None) -> None:
        if self.tracker is None or self._finished:
            return
        self.log_final(self.tracker, result)
        self.tracker.finish(status, reason)
        self._finished = True

    def step(self) -> dict[str, Any]:
        if self.disk_full:
            return self._disk_full_result()
        try:
            metrics = dict(self.run.run_epoch())
        except Diverged as e:
            self.status = "diverged"
            return self._log({**self.last_metrics(), "status": "diverged", "error": str(e), "epoch": e.epoch + 1,
                              "done": True, **node()})
        result, self.status, done = self.epoch_result(metrics, self.run.done)
        result = {**result, "status": self.status, "done": done, "total_epochs": self.run.epochs, **node()}
        try:
            return self._log(result)
        except OSError as e:  # the MLflow journal under a full --out
            if not is_full(e):
                raise
            self.disk_full = full_reason(e, self.tracking["pending_root"] if self.tracking else self.logdir)
            return self._disk_full_result()

    def _disk_full_result(self) -> dict[str, Any]:
        """A full disk ends the trial's work once, not in retries: status ``disk_full`` (the driver's
        ``raynas.diskfull.DiskFullWatch`` interrupts the experiment, resumable from the last good checkpoint).
        Not ``done``, so that Tune keeps the trial resumable; repeated asks wait, then end it."""
        self._full_reports += 1
        if self._full_reports > 1:
            time.sleep(2.0)
        return {**self.last_metrics(), "status": STATUS, "error": self.disk_full, "epoch": self.run.epoch,
                "done": self._full_reports > 5, **node()}

    def save(self, checkpoint_dir: str | None = None) -> Any:
        """Tune's save (``save_checkpoint`` into a temporary directory, then copied to storage); a full
        disk removes what was copied of this checkpoint, reports none, and stops the trial's epochs."""
        try:
            return super().save(checkpoint_dir)
        except OSError as e:
            if not is_full(e):
                raise
            from ray.train._internal.session import _TrainingResult

            where = getattr(self._storage, "checkpoint_fs_path", None) if self._storage else None
            self.disk_full = self.disk_full or full_reason(e, where or checkpoint_dir or self.logdir)
            if where and Path(where).is_dir():
                shutil.rmtree(where, ignore_errors=True)
            return _TrainingResult(checkpoint=None, metrics=dict(self._last_result or {}))

    def last_metrics(self) -> dict[str, Any]:
        """What a diverged trial reports: its last finished epoch's metrics."""
        return dict(self.run.history[-1]) if self.run.history else {}

    def cleanup(self) -> None:
        """Stopped early by the scheduler (ASHA): close the run as ``stopped``."""
        self._finish("stopped", None, None)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this worker (and its imported torch) for the next trial of a sweep."""
        self.cleanup()
        self.setup(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / self.checkpoint_file)
        if self.tracker is not None:  # a restored trial logs to the same MLflow run
            (Path(checkpoint_dir) / TRACKING_FILE).write_text(json.dumps({"run_ref": self.tracker.run_ref}))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Restore; a corrupted or truncated file is reported by name and the previous checkpoint of
        the trial (``checkpoint_keep`` >= 2) is used instead."""
        ref = Path(checkpoint_dir) / TRACKING_FILE
        self.run_ref = (json.loads(ref.read_text()).get("run_ref") if ref.is_file() else None) or self.run_ref
        path = Path(checkpoint_dir) / self.checkpoint_file
        try:
            self.run.load(path)
            return
        except RuntimeError as e:
            print(f"raynas: {e}; trying the previous checkpoint", file=sys.stderr)
            error = e
        for older in previous_checkpoints(Path(checkpoint_dir)):
            try:
                self.run.load(older / self.checkpoint_file)
                print(f"raynas: resumed from {older / self.checkpoint_file} (epoch {self.run.epoch})", file=sys.stderr)
                return
            except RuntimeError as e:
                print(f"raynas: {e}", file=sys.stderr)
        raise error


class SearchTrainable(RunTrainable):
    """One architecture search: config keys are the search config's (resolved here against the paper
    defaults); each epoch's genotype is looked up in ``nb201_table`` when one is set."""

    checkpoint_file = "search.pt"

    def build(self, config: dict[str, Any]) -> EpochRun:
        from raynas.config import resolve
        from raynas.data import load_dataset
        from trials.bilevel import Search

        self.cfg = c = resolve(config)
        lookup = None
        if c.nb201_table:
            from raynas.tables.nb201 import NB201Table
            lookup = NB201Table.load(c.nb201_table).query
        return Search(c, load_dataset(c.dataset, c.data_dir, c.download), lookup)

    @property
    def search(self) -> Any:
        return self.run

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        from raynas.config import flatten

        c = self.cfg
        return (f"{c.method}/{c.space}/{c.dataset}/{c.seed}", flatten(c.to_dict()),
                {"method": c.method, "space": c.space, "dataset": c.dataset, "seed": c.seed})

    def epoch_result(self, metrics: dict[str, Any], done: bool) -> tuple[dict[str, Any], str, bool]:
        status = "completed" if done else "running"
        if not done and self.cfg.collapse_skip is not None and metrics["skip_count"] >= self.cfg.collapse_skip:
            status, done = "stopped_collapse", True
        if self.cfg.collapse_degenerate == "fail" and metrics.get("degenerate"):
            status, done = "stopped_collapse", True
            reason = f"degenerate cell at epoch {metrics['epoch']}: {metrics['degenerate_reason']}"
            metrics = {**metrics, "error": reason}
        return {**metrics, **nb201_headline(metrics.get("nb201"), self.cfg.dataset)}, status, done

    def live(self, info: dict[str, Any]) -> dict[str, Any]:
        return search_live(info, self.cfg.dataset)

    def log_epoch(self, tracker: Any, result: dict[str, Any]) -> None:
        if "alpha" in result:  # a diverged trial's result carries no architecture
            tracker.log_epoch(result, step=result["epoch"])

    def last_metrics(self) -> dict[str, Any]:
        last = super().last_metrics() or {"valid_acc": 0.0, "train_acc": 0.0}
        last.pop("alpha", None)
        return last

    def log_final(self, tracker: Any, result: dict[str, Any] | None) -> None:
        import search_spaces

        if not self.run.history:
            return
        geno = self.run.genotype()
        gjson = search_spaces.genotype_json(geno)
        tracker.log_final(search_spaces.genotype_str(self.cfg.space, geno), gjson, self.cfg.space,
                          checkpoint_path=str(self.logdir))
