"""NAR training as a Ray Tune trial: one ``step()`` = one epoch; the last step adds the held-out metrics and,
with ``budget > 0``, the tier-guided search.

Tracked in MLflow like a search trial (``raynas.trainable.SearchTrainable``): the same ``TrialTracker`` child
run under the experiment's parent run, per-epoch metrics, the run reference in the checkpoint so a restored
trial continues its run, and at the end tau/rho, the best architecture found (tag ``genotype``; NB201 also
gets the cell drawing) and the predicted-vs-true rank scatter as artifacts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from ray import tune

from raynas.nar.search import tier_search
from raynas.nar.train import NARRun, resolve_nar, scatter_png
from raynas.trainable import _node, load_run_ref, save_run_ref

CHECKPOINT_FILE = "nar.pt"
SCATTER_FILE = "rank_scatter.png"  # predicted vs true held-out ranks: in the trial directory and in MLflow
RESULT_FILE = "nar_result.json"    # the final metrics (and search result) as an MLflow artifact


def final_metrics(run: NARRun, scatter: str | Path | None = None) -> dict[str, Any]:
    """Held-out ranking metrics of the best-validation model, plus the search when a budget is set."""
    out = run.evaluate(scatter=scatter)
    if run.cfg.budget > 0:
        out.update(tier_search(run))
    return out


class NARTrainable(tune.Trainable):
    """Config keys are ``NARConfig`` fields (validated here, one-line ``ConfigError``); ``table`` must be an
    absolute path since Tune workers run in their own directory. ``tracking`` (from ``tune.with_parameters``)
    is the dict of ``raynas.runner.start_tracking``; without it nothing is logged to MLflow."""

    def setup(self, config: dict[str, Any], tracking: dict[str, Any] | None = None) -> None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.cfg = resolve_nar(config)
        self.run = NARRun(self.cfg)
        self.tracking = tracking if tracking is not None else getattr(self, "tracking", None)
        self.tracker: Any = None
        self.run_ref: str | None = None
        self._finished = False

    def _tracker(self) -> Any:
        """The trial's MLflow child run, created at the first epoch (after a restore, so it is continued)."""
        if self.tracker is None and self.tracking:
            from raynas.tracking import TrialTracker, find_trial_run

            t, c = self.tracking, self.cfg
            ref = self.run_ref or find_trial_run(t["uri"], t["experiment"], self.trial_id)
            self.tracker = TrialTracker(
                t["uri"], t["experiment"], f"nar/{c.bench}/{c.dataset}/{c.seed}",
                parent_run_id=t.get("parent_run_id"), params=c.to_dict(), run_id=ref,
                tags={"method": "nar", "space": c.bench, "dataset": c.dataset, "seed": c.seed,
                      "raynas.kind": "nar", "raynas.trial_id": self.trial_id},
                pending_dir=Path(t["pending_root"]) / self.trial_id, artifact_root=t.get("artifact_root"))
        return self.tracker

    def _log(self, result: dict[str, Any]) -> dict[str, Any]:
        tracker = self._tracker()
        if tracker is None:
            return result
        tracker.log_epoch({k: v for k, v in result.items() if k not in ("genotype", "seed")}, step=result["epoch"])
        if result["done"]:
            self._log_final(tracker, result)
        return {**result, "mlflow_run_id": tracker.run_id, "mlflow_pending": tracker.pending}

    def _log_final(self, tracker: Any, result: dict[str, Any]) -> None:
        """The scatter and the final metrics as artifacts; the best architecture as tag ``genotype``."""
        run = self.run
        pred, test = run.scores(run.test_idx), run.data.test[run.test_idx]
        final = {k: v for k, v in result.items() if k not in ("scatter_png",)}
        files = [(SCATTER_FILE, None, lambda path: scatter_png(pred, test, path)),
                 (RESULT_FILE, None, json.loads(json.dumps(final, default=str)))]
        tracker._log_files(files)  # the tracker's own artifact path (queued while the server is down)
        best = result.get("best_arch")
        if best and self.cfg.bench == "nb201":  # genotype.json, cell.png/svg, tags genotype and checkpoint
            tracker.log_final(best, {"arch": best, "test_acc": result.get("best_test_acc")}, "nb201",
                              checkpoint_path=str(self.logdir))
        elif best:  # an NB101 hash: tag genotype and genotype/genotype_epoch_NNN.json (the cell is in RESULT_FILE)
            tracker.log_epoch({"genotype": best}, step=result["epoch"])
        tracker.finish("completed")
        self._finished = True

    def step(self) -> dict[str, Any]:
        metrics: dict[str, Any] = dict(self.run.run_epoch())
        done = self.run.epoch >= self.cfg.epochs
        if done:
            scatter = Path(self.logdir) / SCATTER_FILE
            metrics.update(final_metrics(self.run, scatter), scatter_png=str(scatter))
        status = "completed" if done else "running"
        return self._log({**metrics, "seed": self.cfg.seed, "status": status, "done": done, **_node()})

    def cleanup(self) -> None:
        """Stopped early by the scheduler (ASHA): close the run as ``stopped``."""
        if self.tracker is not None and not self._finished:
            self.tracker.finish("stopped")
            self._finished = True

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this worker for the next trial of a sweep."""
        self.cleanup()
        self.setup(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / CHECKPOINT_FILE)
        save_run_ref(checkpoint_dir, self.tracker)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.run_ref = load_run_ref(checkpoint_dir) or self.run_ref
        self.run.load(Path(checkpoint_dir) / CHECKPOINT_FILE)
