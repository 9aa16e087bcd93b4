"""The Ray Tune trial: one architecture search, one epoch per ``step()``, checkpointed between epochs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raynas.config import resolve

CHECKPOINT_FILE = "search.pt"
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
    try:
        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    except Exception:  # outside Ray (direct use in tests)
        return {"node_id": "", "node_ip": ""}


class SearchTrainable(tune.Trainable):
    """Tune's class API: ``setup`` builds the search from the trial config (user overrides, resolved
    here against the paper defaults), ``step`` runs one epoch, ``save/load_checkpoint`` persist it."""

    def setup(self, config: dict[str, Any]) -> None:
        from trials.bilevel import Search

        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.cfg = resolve(config)
        self.search = Search(self.cfg)
        self.status = "running"

    def step(self) -> dict[str, Any]:
        from trials.bilevel import SearchDiverged

        try:
            metrics = self.search.run_epoch()
        except SearchDiverged as e:
            self.status = "diverged"
            last = dict(self.search.history[-1]) if self.search.history else {"valid_acc": 0.0, "train_acc": 0.0}
            return {**last, "status": "diverged", "error": str(e), "epoch": e.epoch + 1, "done": True, **_node()}
        done = self.search.epoch >= self.cfg.epochs
        if done:
            self.status = "completed"
        elif self.cfg.collapse_skip is not None and metrics["skip_count"] >= self.cfg.collapse_skip:
            self.status, done = "stopped_collapse", True
        return {**metrics, **nb201_headline(metrics.get("nb201"), self.cfg.dataset), "status": self.status,
                "done": done, **_node()}

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this worker (and its imported torch) for the next trial of a sweep."""
        self.setup(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.search.save(Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Restore; a corrupted or truncated file is reported by name and the previous checkpoint of
        the trial (``checkpoint_keep`` >= 2) is used instead."""
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
