"""The real-Tune path: a searcher and the tabular trainable in ``tune.Tuner`` on a (local) Ray instance.

One trial at a time (``max_concurrent_trials=1``), as the simulator's one worker, and ASHA as Ray's own
``ASHAScheduler`` over the trainable's two iterations (12 and 200 epochs), Hyperband as Ray's asynchronous
Hyperband (``raynas.searchers.hyperband``), so both paths propose the same cells
for the same seed. Trial configs hold only the cell; the table, dataset and cost model travel with
``tune.with_parameters``. Time budgets exist only in the simulator (no real run waits out simulated hours).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from raynas.config import ConfigError
from raynas.searchers.space import arch_of
from raynas.searchers.tabular import load_bench


class TabularTrainable(tune.Trainable):
    """``step()`` returns the cell's next table report (:meth:`TabularBench.reports`); ``done`` on the last."""

    def setup(self, config: dict[str, Any], bench: dict[str, Any] | None = None) -> None:
        self.settings = dict(bench or {})
        b = load_bench(self.settings["table"], self.settings.get("dataset", "cifar10"), self.settings.get("cost"))
        self.reports, self.i = b.reports(arch_of(config, self.settings.get("key", "cell"))), 0

    def step(self) -> dict[str, Any]:
        result = dict(self.reports[self.i])
        self.i += 1
        result["done"] = self.i >= len(self.reports)
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"i": self.i}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.i = checkpoint["i"]

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)  # ``tune.with_parameters`` passes ``bench`` again
        return True


def _dirname(trial: Any) -> str:
    """``cell_00001_<id>``: the counter Tune gives each trial in creation (= proposal) order."""
    return f"cell_{int(str(trial.experiment_tag).split('_')[0]):05d}_{trial.trial_id}"


def run_tune(s: Any, searcher: Any, name: str, seed: int, out: str | Path | None = None) -> dict[str, Any]:
    """``searcher`` (a fresh one, ``name`` with ``seed``) on study ``s``'s table through ``tune.Tuner``; the
    same record as the simulator's. The study has checked the table before."""
    import time

    import ray
    from ray.tune.schedulers import ASHAScheduler

    from raynas.searchers.simulate import Query

    if s.bench.time_budget or not s.bench.budget:
        raise ConfigError("real Tune runs take a query budget (--budget N); time budgets are simulator-only")
    if not ray.is_initialized():
        from raynas.runner import init_ray

        init_ray()
    t0 = time.time()
    scheduler = None
    if s.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=2, grace_period=1,
                                  reduction_factor=s.scheduler.reduction_factor)
    elif s.scheduler.type == "hyperband":
        from raynas.searchers.hyperband import SeededHyperband

        scheduler = SeededHyperband(s.scheduler.reduction_factor, seed)
    settings = {"table": s.bench.table, "dataset": s.bench.dataset, "cost": dataclasses.asdict(s.bench.cost),
                "key": s.key}
    trainable = tune.with_resources(tune.with_parameters(TabularTrainable, bench=settings), {"cpu": 1})
    storage = Path(out or tempfile.mkdtemp(prefix="raynas-bench-")).resolve() / "ray_results"
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric=s.tune.metric,
                                    mode=s.tune.mode, num_samples=s.bench.budget, max_concurrent_trials=1,
                                    reuse_actors=True, trial_dirname_creator=_dirname),
        run_config=tune.RunConfig(name=f"{s.name}-{name}-{seed}", storage_path=str(storage), verbose=0))
    grid = tuner.fit()
    results = sorted((r for r in grid if r.metrics), key=lambda r: Path(r.path).name)
    clock, queries = 0.0, []
    for r in results:
        m = r.metrics
        clock += m["sim_time"]
        queries.append(Query(arch_of(r.config, s.key), int(m["epoch"]), float(m["valid_acc"]), float(m["test_acc"]),
                             clock).to_dict())
    return {"searcher": name, "seed": seed, "queries": queries, "wall_s": time.time() - t0,
            "errors": sum(1 for r in grid if r.error)}
