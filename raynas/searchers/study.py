"""A searcher comparison ("study"): which searchers, seeds, budget, table and scheduler; run in the simulator
or through real Ray Tune; the curves, the table and MLflow (one parent run, one child per searcher x seed).

A study file is YAML with a top-level ``bench:`` block, so ``raynas run`` recognises it (a ``retrain:`` block
instead makes it a retrain study, :mod:`raynas.searchers.retrain_study`)::

    name: nb201-c10
    bench: {table: nb201.csv.gz, dataset: cifar10, searchers: [random, rea, tpe, nar], seeds: [0, 1, 2],
            budget: 300, options: {rea: {population: 10, sample_size: 3}, nar: {refit_every: 25}}}
    scheduler: {type: asha, reduction_factor: 3}   # fifo | asha | hyperband
    tune: {metric: valid_acc, mode: max, space: {cell: {type: nb201_cell}}}
"""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from raynas.config import ConfigError, build, deep_merge, load_yaml
from raynas.searchers import check_options, make_searcher
from raynas.searchers.curves import Runs, markdown, plot, table_rows
from raynas.searchers.simulate import LOW_FIDELITY, SCHEDULERS, Query, check_budget, simulate
from raynas.searchers.space import check_space
from raynas.searchers.tabular import CostModel, TabularBench, dataset_name, load_bench

BUDGETS = (50, 100, 300, 1000)


@dataclass
class BenchBlock:
    table: str = ""
    dataset: str = "cifar10"                                  # cifar10 | cifar100 | imagenet16
    searchers: list[str] = field(default_factory=lambda: ["random"])
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: int = 0                                           # queries (cells evaluated); 0: none
    time_budget: float = 0.0                                  # simulated seconds; 0: none
    budgets: list[int] = field(default_factory=lambda: list(BUDGETS))  # the table's columns
    options: dict[str, dict] = field(default_factory=dict)    # searcher -> its options
    cost: CostModel = field(default_factory=CostModel)


@dataclass
class SchedulerBlock:
    type: str = "fifo"          # fifo | asha | hyperband (over the 12- and 200-epoch results)
    reduction_factor: float = 3


@dataclass
class TuneBlock:
    metric: str = "valid_acc"
    mode: str = "max"
    space: dict[str, dict] = field(default_factory=lambda: {"cell": {"type": "nb201_cell"}})


@dataclass
class StudyConfig:
    name: str = "nb201-searchers"
    bench: BenchBlock = field(default_factory=BenchBlock)
    scheduler: SchedulerBlock = field(default_factory=SchedulerBlock)
    tune: TuneBlock = field(default_factory=TuneBlock)
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; none: off

    @property
    def key(self) -> str:
        return check_space(self.tune.space)


def study_kind(path: str | Path) -> str | None:
    """``bench`` for a YAML file with a top-level ``bench:`` block (``raynas run`` hands it to :func:`run_study`),
    ``retrain`` for one with a ``retrain:`` block (``raynas.searchers.retrain_run``), else None."""
    try:
        data = load_yaml(path) if Path(path).is_file() else {}
    except ConfigError:
        return None
    return next((kind for kind in ("retrain", "bench") if kind in data), None)


def check_study(s: StudyConfig) -> None:
    """Everything that can be wrong before a searcher runs, each a one-line ``ConfigError``."""
    b = s.bench
    check_budget(b.budget, b.time_budget)
    if not b.searchers or not b.seeds:
        raise ConfigError("bench.searchers and bench.seeds must not be empty")
    for name in dict.fromkeys(b.searchers + list(b.options)):  # options of a searcher not run now are kept
        check_options(name, b.options.get(name))
    if len(set(b.seeds)) != len(b.seeds):
        raise ConfigError(f"bench.seeds must be distinct, got {b.seeds}")
    if not b.budgets or min(b.budgets) < 1 or sorted(b.budgets) != b.budgets:
        raise ConfigError(f"bench.budgets must be increasing query counts >= 1, got {b.budgets}")
    if not b.table:
        raise ConfigError("bench.table is missing: pass --table nb201.csv.gz (see `raynas bench nb201 export`)")
    b.dataset = dataset_name(b.dataset)
    if s.scheduler.type not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {s.scheduler.type!r}; valid: {', '.join(SCHEDULERS)}")
    if s.scheduler.type in LOW_FIDELITY and s.scheduler.reduction_factor <= 1:
        raise ConfigError(f"{s.scheduler.type} needs scheduler.reduction_factor > 1, "
                          f"got {s.scheduler.reduction_factor:g}")
    if s.tune.mode not in ("max", "min") or s.tune.metric != "valid_acc":
        raise ConfigError("tune.metric must be valid_acc (the table's validation accuracy) and tune.mode max or min")
    s.key  # noqa: B018 - checks the space block


def load_study(path: str | Path | None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A study file (or none) with ``overrides`` (a nested dict, e.g. the CLI flags) on top; validated."""
    data = deep_merge(load_yaml(path) if path else {}, overrides or {})
    if "retrain" in data:
        raise ConfigError(f"{path} is a retrain study (a retrain: block): its trials really train, so it runs as Ray "
                          f"Tune trials with `raynas run {path}`, not in the table simulator")
    study = build(StudyConfig, data)
    if study.bench.table:
        study.bench.table = str(Path(study.bench.table).expanduser().resolve())  # Tune workers run elsewhere
    check_study(study)
    return study


def open_bench(s: StudyConfig) -> TabularBench:
    """The table for this study; a missing table or missing 12-epoch columns under ASHA / Hyperband are
    one-line errors."""
    return load_bench(s.bench.table, s.bench.dataset, dataclasses.asdict(s.bench.cost),
                      need_low=s.scheduler.type in LOW_FIDELITY, scheduler=s.scheduler.type)


def new_searcher(s: StudyConfig, name: str, seed: int) -> Any:
    return make_searcher(name, seed, s.bench.options.get(name), dataset=s.bench.dataset, metric=s.tune.metric,
                         mode=s.tune.mode, key=s.key)


def _one(job: tuple[StudyConfig, str, int]) -> dict[str, Any]:
    """One searcher x seed in the simulator, with its wall and CPU seconds (and NAR's refit cost)."""
    s, name, seed = job
    t0, c0 = time.time(), time.process_time()
    searcher = new_searcher(s, name, seed)
    queries = simulate(searcher, open_bench(s), s.bench.budget, s.bench.time_budget, s.scheduler.type,
                       s.scheduler.reduction_factor, s.key, seed, s.tune.metric, s.tune.mode)
    out = {"searcher": name, "seed": seed, "queries": [q.to_dict() for q in queries],
           "wall_s": time.time() - t0, "cpu_s": time.process_time() - c0}
    if hasattr(searcher, "refit_seconds"):
        out.update(refits=searcher.refits, refit_cpu_s=searcher.refit_seconds)
    return out


def run_study(s: StudyConfig, backend: str = "sim", workers: int = 1, out: str | Path | None = None,
              progress: Any = None) -> dict[str, Any]:
    """Every searcher x seed (``backend`` sim: in this process, or ``workers`` processes; tune: real
    ``tune.Tuner`` runs, see :mod:`raynas.searchers.tune_run`); returns the runs and the table rows."""
    bench = open_bench(s)
    jobs = [(s, name, seed) for name in s.bench.searchers for seed in s.bench.seeds]
    t0 = time.time()
    if backend == "tune":
        from raynas.searchers.tune_run import run_tune

        done = [run_tune(s, new_searcher(s, name, seed), name, seed, out) for _, name, seed in jobs]
    elif workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            done = list(pool.map(_one, jobs))
    else:
        done = []
        for job in jobs:
            done.append(_one(job))
            if progress:
                progress(done[-1])
    runs: Runs = {name: [] for name in s.bench.searchers}
    for d in done:
        runs[d["searcher"]].append([Query(**q) for q in d["queries"]])
    if s.bench.budget:
        table = table_rows(runs, s.bench.budgets)
    else:  # a time budget: the table at a tenth, a quarter, half and all of it
        table = table_rows(runs, [f * s.bench.time_budget for f in (0.1, 0.25, 0.5, 1.0)], by="time")
    return {"study": dataclasses.asdict(s), "backend": backend, "optimum": bench.optimum(),
            "wall_s": time.time() - t0, "runs": done, "table": table}


def runs_of(result: dict[str, Any]) -> Runs:
    runs: Runs = {}
    for d in result["runs"]:
        runs.setdefault(d["searcher"], []).append([Query(**q) for q in d["queries"]])
    return runs


def title(result: dict[str, Any]) -> str:
    s = result["study"]
    b = s["bench"]
    budget = f"{b['budget']} queries" if b["budget"] else f"{b['time_budget']:g} simulated s"
    return (f"NAS-Bench-201 {b['dataset']}, {s['scheduler']['type']}, {len(b['seeds'])} seeds, {budget}: "
            f"incumbent (by validation) test accuracy")


def write_outputs(result: dict[str, Any], json_path: str | None = None, plot_path: str | None = None,
                  md_path: str | None = None) -> str:
    """The Markdown table (returned), and the JSON / curve PNG / table files asked for."""
    text = markdown(result["table"], title(result))
    if json_path:  # whole or not at all (a full disk leaves the previous one)
        from raynas.outdir import write_atomic
        write_atomic(json_path, json.dumps(result, indent=1))
    if plot_path:
        plot(runs_of(result), plot_path, title(result), result["optimum"]["test_acc"])
    if md_path:
        Path(md_path).write_text(text)
    return text
