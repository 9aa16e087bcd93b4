"""NAR training as a Ray Tune trial: one ``step()`` = one epoch; the last step adds the held-out metrics and,
with ``budget > 0``, the tier-guided search.

The same ``raynas.trainable.RunTrainable`` as a search trial (checkpoints, MLflow child run continued
after a restore, per-epoch metrics); at the end it logs tau/rho, the best architecture found (tag
``genotype``; NB201 also gets the cell drawing) and the predicted-vs-true rank scatter as artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raynas.nar.search import tier_search
from raynas.nar.scatter import scatter_png
from raynas.nar.train import NARRun, resolve_nar
from raynas.trainable import RunTrainable

SCATTER_FILE = "rank_scatter.png"  # predicted vs true held-out ranks: in the trial directory and in MLflow
RESULT_FILE = "nar_result.json"    # the final metrics (and search result) as an MLflow artifact


def final_metrics(run: NARRun, scatter: str | Path | None = None) -> dict[str, Any]:
    """Held-out ranking metrics of the best-validation model, plus the search when a budget is set."""
    out = run.evaluate(scatter=scatter)
    if run.cfg.budget > 0:
        out.update(tier_search(run))
    return out


class NARTrainable(RunTrainable):
    """Config keys are ``NARConfig`` fields (validated here, one-line ``ConfigError``); ``table`` must be an
    absolute path since Tune workers run in their own directory. ``tracking`` (from ``tune.with_parameters``)
    is the dict of ``raynas.runner.start_tracking``; without it nothing is logged to MLflow."""

    checkpoint_file = "nar.pt"

    def build(self, config: dict[str, Any]) -> NARRun:
        self.cfg = resolve_nar(config)
        return NARRun(self.cfg)

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        c = self.cfg
        return (f"nar/{c.bench}/{c.dataset}/{c.seed}", c.to_dict(),
                {"method": "nar", "space": c.bench, "dataset": c.dataset, "seed": c.seed, "raynas.kind": "nar"})

    def epoch_result(self, metrics: dict[str, Any], done: bool) -> tuple[dict[str, Any], str, bool]:
        if done:
            scatter = Path(self.logdir) / SCATTER_FILE
            metrics = {**metrics, **final_metrics(self.run, scatter), "scatter_png": str(scatter)}
        return {**metrics, "seed": self.cfg.seed}, ("completed" if done else "running"), done

    def log_epoch(self, tracker: Any, result: dict[str, Any]) -> None:
        tracker.log_epoch({k: v for k, v in result.items() if k not in ("genotype", "seed")}, step=result["epoch"])

    def log_final(self, tracker: Any, result: dict[str, Any] | None) -> None:
        """The scatter and the final metrics as artifacts; the best architecture as tag ``genotype``."""
        if result is None:  # stopped by the scheduler: nothing final to log
            return
        run = self.run
        pred, test = run.scores(run.test_idx), run.data.test[run.test_idx]
        final = {k: v for k, v in result.items() if k not in ("scatter_png",)}
        files = [(SCATTER_FILE, None, lambda path: scatter_png(pred, test, path, **run.scatter_title())),
                 (RESULT_FILE, None, json.loads(json.dumps(final, default=str)))]
        tracker._log_files(files)  # the tracker's own artifact path (queued while the server is down)
        best = result.get("best_arch")
        if best and self.cfg.bench == "nb201":  # genotype.json, cell.png/svg, tags genotype and checkpoint
            tracker.log_final(best, {"arch": best, "test_acc": result.get("best_test_acc")}, "nb201",
                              checkpoint_path=str(self.logdir))
        elif best:  # an NB101 hash: tag genotype and genotype/genotype_epoch_NNN.json (the cell is in RESULT_FILE)
            tracker.log_epoch({"genotype": best}, step=result["epoch"])
