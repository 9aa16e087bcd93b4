"""Seed-robust Optuna trials: one Tune trial runs its config as k seeds in parallel.

The trial holds a placement group of k bundles (``resources`` each: one seed per GPU on a cluster);
``SeedsTrainable`` (the ``RunTrainable`` skeleton) starts one ``raynas.proxy.SeedWorker`` actor per
bundle and steps them together, one epoch each per Tune iteration, so the seeds run at the same time
and the trial's result at every epoch is the aggregate over its seeds (``raynas.objectives``):
ASHA rungs compare trials at equal epochs on the seeds' mean (or worst, or mean - risk*std), and
Optuna is told the aggregate of the last epoch. A checkpoint holds every seed's state, so a restored
trial resumes each seed where it stopped. MLflow: the trial is a run under the experiment's parent,
each seed's search a run under it, each proxy retrain a run under its search. Live progress: each seed
reports its in-epoch progress to the driver's board itself (``SeedWorker.show_progress``), a line per seed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray
import torch

from raynas.objectives import END_ONLY, NB201, aggregate_result, needs_proxy, objective_specs, trial_seeds
from raynas.trainable import RunTrainable
from trials.epochs import Diverged, EpochRun, write_bytes_whole, write_state

META_FILE = "group.pt"


def group_spec(exp: Any) -> dict[str, Any]:
    """What every trial of the study needs besides its config: seeds, tune block, proxy recipe, resources."""
    t = exp.tune
    names = [m for m, _ in objective_specs(t)]
    for extra in ("valid_acc", "train_acc", *NB201, *END_ONLY, exp.scheduler.metric):
        if extra and extra not in names:
            names.append(extra)
    return {"seeds": trial_seeds(exp), "tune": dataclasses.asdict(t), "names": names,
            "proxy": dataclasses.asdict(exp.proxy) if needs_proxy(t) else None,  # trained when an objective needs it
            "recipe": dataclasses.asdict(exp.proxy),  # the shape params/flops are measured at, always the user's
            "cpu": exp.resources.cpu, "gpu": exp.resources.gpu}


def resources(exp: Any) -> Any:
    """An empty head bundle (the trainable only coordinates) and one bundle per seed."""
    from ray.tune import PlacementGroupFactory

    bundle = {"CPU": exp.resources.cpu, **({"GPU": exp.resources.gpu} if exp.resources.gpu > 0 else {})}
    return PlacementGroupFactory([{}] + [dict(bundle) for _ in range(exp.tune.seeds_per_trial)])


def trainable(exp: Any, tracking: dict[str, Any] | None, board: str | None = None) -> Any:
    """``board``: the driver's progress board (``raynas.progress``), or None for no live lines."""
    from ray import tune

    from raynas.console import worker_settings

    return tune.with_resources(tune.with_parameters(SeedsTrainable, tracking=tracking, group=group_spec(exp),
                                                    console=worker_settings(board)), resources(exp))


class SeedGroup(EpochRun):
    """k ``SeedWorker`` actors advanced together; ``run_epoch`` is one epoch of each, aggregated."""

    def __init__(self, workers: list[Any], epochs: int, spec: dict[str, Any]):
        from trials.config import build

        from raynas.experiment import TuneBlock

        super().__init__()
        self.workers, self.epochs, self.spec = workers, epochs, spec
        self.tune = build(TuneBlock, spec["tune"])
        self.seed, self.device = spec["seeds"][0], torch.device("cpu")
        self.seed_results: list[dict[str, Any]] = []

    def run_epoch(self) -> dict[str, Any]:
        results = ray.get([w.step.remote() for w in self.workers])
        for r in results:
            if "diverged" in r:
                raise Diverged(r["epoch"] - 1, f"seed {r['seed']}: {r['diverged']}")
        self.epoch += 1
        self.seed_results = results
        metrics = {"epoch": self.epoch, "phase": results[0].get("phase"),
                   "epoch_time": max(r.get("epoch_time") or 0.0 for r in results),
                   **aggregate_result(results, self.tune, self.spec["names"]),
                   "seeds": [{k: v for k, v in r.items() if k != "nb201"} for r in results]}
        self.history.append({k: v for k, v in metrics.items() if k != "seeds"})
        return metrics

    def save(self, path: str | Path) -> None:
        path = Path(path)
        blobs = ray.get([w.state.remote() for w in self.workers])
        for i, blob in enumerate(blobs):
            write_bytes_whole(blob, path.with_name(f"seed{i}.pt"))  # whole or not at all, like group.pt
        write_state({"epoch": self.epoch, "history": self.history, "seed_results": self.seed_results}, path)

    def load(self, path: str | Path) -> None:
        from trials.checkpoint import load_state

        path = Path(path)
        state = load_state(path)
        blobs = []
        for i in range(len(self.workers)):
            f = path.with_name(f"seed{i}.pt")
            if not f.is_file():
                raise RuntimeError(f"cannot read checkpoint {f}: missing")
            blobs.append(f.read_bytes())
        try:
            ray.get([w.restore.remote(b) for w, b in zip(self.workers, blobs)])
        except ray.exceptions.RayTaskError as e:
            raise RuntimeError(f"cannot read checkpoint {path.parent}: {str(e).strip().splitlines()[-1]}") from None
        self.epoch, self.history, self.seed_results = state["epoch"], list(state["history"]), state["seed_results"]


class SeedsTrainable(RunTrainable):
    """One Optuna trial as k seeds (``raynas.seeds``); its MLflow run is the trial's, the seeds' are children."""

    checkpoint_file = META_FILE

    def setup(self, config: dict[str, Any], tracking: dict[str, Any] | None = None,
              group: dict[str, Any] | None = None, console: dict[str, Any] | None = None) -> None:
        self.group = group if group is not None else self.group
        self.tracking = tracking if tracking is not None else getattr(self, "tracking", None)
        self.workers: list[Any] = []
        self._attached = False
        super().setup(config, tracking, console)

    def build(self, config: dict[str, Any]) -> EpochRun:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from raynas.config import resolve
        from raynas.proxy import SeedWorker

        g = self.group
        self.cfg = c = resolve(config)
        pg = ray.util.get_current_placement_group()
        actor = ray.remote(SeedWorker)
        for i, seed in enumerate(g["seeds"]):
            strategy = (PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)
                        if pg is not None else None)
            worker = actor.options(num_cpus=g["cpu"], num_gpus=g["gpu"], scheduling_strategy=strategy)
            self.workers.append(worker.remote({**config, "seed": seed}, g["proxy"], g["gpu"], self.trial_id, i,
                                              self.tracking, g.get("recipe")))
            if self.console.get("board"):  # fire-and-forget, like the reports themselves
                self.workers[-1].show_progress.remote(self.console["board"], len(g["seeds"]),
                                                      self.console.get("every"))
        epochs = c.epochs + (g["proxy"]["epochs"] if g["proxy"] else 0)
        return SeedGroup(self.workers, epochs, g)

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        from raynas.config import flatten

        c, g = self.cfg, self.group
        params = {k: v for k, v in flatten(self.config).items() if k != "seed"}
        return (f"trial/{c.method}/{c.space}/{c.dataset}", params,
                {"method": c.method, "space": c.space, "dataset": c.dataset, "raynas.kind": "optuna_trial",
                 "raynas.seeds": ",".join(map(str, g["seeds"])), "raynas.aggregate": g["tune"]["aggregate"]})

    def step(self) -> dict[str, Any]:
        if not self._attached:  # the seeds' runs go under this trial's run (known once it exists)
            tracker = self._tracker()
            ray.get([w.attach.remote(tracker.run_id if tracker is not None else None) for w in self.workers])
            self._attached = True
        return super().step()

    def log_epoch(self, tracker: Any, result: dict[str, Any]) -> None:
        tracker.log_epoch({k: v for k, v in result.items() if k not in ("seeds", "nb201")}, step=result["epoch"])

    def log_final(self, tracker: Any, result: dict[str, Any] | None) -> None:
        seeds = self.run.seed_results
        if seeds:
            tracker._log_files([("seeds.json", None, {"seeds": seeds, "aggregate": self.group["tune"]["aggregate"],
                                                      "risk": self.group["tune"]["risk"]})])

    def last_metrics(self) -> dict[str, Any]:
        return dict(self.run.history[-1]) if self.run.history else {}

    def cleanup(self) -> None:
        """Close every seed's runs still open, then this trial's, and end the seed actors."""
        if self.workers:
            try:
                ray.get([w.stop.remote() for w in self.workers], timeout=60)
            except Exception:  # noqa: BLE001 - a dead actor has nothing to close
                pass
            for w in self.workers:
                ray.kill(w)
            self.workers = []
        super().cleanup()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        return False  # new actors per trial: the placement group's bundles are the trial's
