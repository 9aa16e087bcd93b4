"""The Ray Tune trial: one architecture search, one epoch per ``step()``, checkpointed between epochs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raynas.config import resolve

CHECKPOINT_FILE = "search.pt"
TRACKING_FILE = "tracking.json"


def save_run_ref(checkpoint_dir: str, tracker: Any) -> None:
    """Store the trial's MLflow run id beside its checkpoint, so a restored trial logs to the same run."""
    if tracker is not None:
        (Path(checkpoint_dir) / TRACKING_FILE).write_text(json.dumps({"run_ref": tracker.run_ref}))


def load_run_ref(checkpoint_dir: str) -> str | None:
    ref = Path(checkpoint_dir) / TRACKING_FILE
    return json.loads(ref.read_text()).get("run_ref") if ref.is_file() else None
#: NB201 table columns that are the headline numbers of a search on each dataset (valid, test)
NB201_COLUMNS = {"cifar10": ("cifar10_valid", "cifar10_test"), "cifar100": ("cifar100_valid", "cifar100_test"),
                 "imagenet16-120": ("imagenet16_valid", "imagenet16_test")}


def nb201_headline(row: dict[str, Any] | None, dataset: str) -> dict[str, float]:
    """``nb201_valid``/``nb201_test`` of the searched dataset (CIFAR-10's for other datasets)."""
    if not row:
        return {}
    valid, test = NB201_COLUMNS.get(dataset, NB201_COLUMNS["cifar10"])
    return {"nb201_valid": row.get(valid), "nb201_test": row.get(test)}


def _node() -> dict[str, str]:
    """Ray's node id and IP of this trial (empty outside Ray; never starts a Ray instance)."""
    if not ray.is_initialized():
        return {"node_id": "", "node_ip": ""}
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


class SearchTrainable(tune.Trainable):
    """Tune's class API: ``setup`` builds the search from the trial config (user overrides, resolved
    here against the paper defaults), ``step`` runs one epoch, ``save/load_checkpoint`` persist it."""

    def setup(self, config: dict[str, Any], tracking: dict[str, Any] | None = None) -> None:
        from trials.bilevel import Search

        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.cfg = resolve(config)
        self.search = Search(self.cfg)
        self.status = "running"
        self.tracking = tracking if tracking is not None else getattr(self, "tracking", None)
        self.tracker: Any = None
        self.run_ref: str | None = None  # MLflow run of this trial, restored from its checkpoint

    def _tracker(self) -> Any:
        """The trial's MLflow child run, created at the first epoch (after a checkpoint restore, so a
        resumed trial continues its run); ``None`` when tracking is off."""
        if self.tracker is None and self.tracking:
            from raynas.config import flatten
            from raynas.tracking import TrialTracker, find_trial_run

            t, c = self.tracking, self.cfg
            ref = self.run_ref or find_trial_run(t["uri"], t["experiment"], self.trial_id)
            self.tracker = TrialTracker(
                t["uri"], t["experiment"], f"{c.method}/{c.space}/{c.dataset}/{c.seed}",
                parent_run_id=t.get("parent_run_id"), params=flatten(c.to_dict()), run_id=ref,
                tags={"method": c.method, "space": c.space, "dataset": c.dataset, "seed": c.seed,
                      "raynas.trial_id": self.trial_id},
                pending_dir=Path(t["pending_root"]) / self.trial_id, artifact_root=t.get("artifact_root"))
        return self.tracker

    def _log(self, result: dict[str, Any]) -> dict[str, Any]:
        tracker = self._tracker()
        if tracker is None:
            return result
        if "alpha" in result:
            tracker.log_epoch(result, step=result["epoch"])
        if result.get("done"):
            self._finish(result["status"], result.get("error"))
        return {**result, "mlflow_run_id": tracker.run_id, "mlflow_pending": tracker.pending}

    def _finish(self, status: str, reason: str | None = None) -> None:
        if self.tracker is None or getattr(self, "_finished", False):
            return
        import search_spaces

        s = self.search
        geno = s.genotype()
        gjson = geno.to_json() if hasattr(geno, "to_json") else search_spaces.darts.genotype_to_json(geno)
        self.tracker.log_final(search_spaces.genotype_str(self.cfg.space, geno), gjson, self.cfg.space,
                               checkpoint_path=str(self.logdir))
        self.tracker.finish(status, reason)
        self._finished = True

    def cleanup(self) -> None:
        """Stopped early by the scheduler: close the run as ``stopped``."""
        if self.tracker is not None and not getattr(self, "_finished", False) and self.search.history:
            self._finish("stopped")

    def step(self) -> dict[str, Any]:
        from trials.bilevel import SearchDiverged

        try:
            metrics = self.search.run_epoch()
        except SearchDiverged as e:
            self.status = "diverged"
            last = dict(self.search.history[-1]) if self.search.history else {"valid_acc": 0.0, "train_acc": 0.0}
            last.pop("alpha", None)
            return self._log({**last, "status": "diverged", "error": str(e), "epoch": e.epoch + 1, "done": True,
                              **_node()})
        done = self.search.epoch >= self.cfg.epochs
        if done:
            self.status = "completed"
        elif self.cfg.collapse_skip is not None and metrics["skip_count"] >= self.cfg.collapse_skip:
            self.status, done = "stopped_collapse", True
        return self._log({**metrics, **nb201_headline(metrics.get("nb201"), self.cfg.dataset),
                          "status": self.status, "done": done, **_node()})

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this worker (and its imported torch) for the next trial of a sweep."""
        self.cleanup()
        self._finished = False
        self.setup(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.search.save(Path(checkpoint_dir) / CHECKPOINT_FILE)
        save_run_ref(checkpoint_dir, self.tracker)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Restore; a corrupted or truncated file is reported by name and the previous checkpoint of
        the trial (``checkpoint_keep`` >= 2) is used instead."""
        self.run_ref = load_run_ref(checkpoint_dir) or self.run_ref
        path = Path(checkpoint_dir) / CHECKPOINT_FILE
        try:
            self.search.load(path)
            return
        except RuntimeError as e:
            print(f"raynas: {e}; trying the previous checkpoint", file=sys.stderr)
            error = e
        for older in previous_checkpoints(Path(checkpoint_dir)):
            try:
                self.search.load(older / CHECKPOINT_FILE)
                print(f"raynas: resumed from {older / CHECKPOINT_FILE} (epoch {self.search.epoch})", file=sys.stderr)
                return
            except RuntimeError as e:
                print(f"raynas: {e}", file=sys.stderr)
        raise error


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
