"""Experiment files: methods x spaces x datasets x seeds, fixed settings, an optional Optuna ``tune:``
block, resources, scheduler, storage and tracking; typed and validated before Ray starts."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raynas.checks import check_blocks, check_search_trials
from raynas.config import ConfigError, build, check_name, deep_merge, unflatten, load_yaml, resolve
from raynas.objectives import ProxyConfig, check_objectives

GRID_AXES = ("method", "space", "dataset", "seed")


@dataclass
class GridConfig:
    method: list[str] = field(default_factory=lambda: ["darts"])
    space: list[str] = field(default_factory=lambda: ["nb201"])
    dataset: list[str] = field(default_factory=lambda: ["digits"])
    seed: list[int] = field(default_factory=lambda: [0])


@dataclass
class TuneBlock:
    """The outer search: Optuna over any config field, run by Ray Tune's OptunaSearch."""
    metric: str = "valid_acc"        # raynas.objectives: valid_acc, nb201_test, proxy_acc, params, flops, ...
    mode: str = "max"
    num_samples: int = 8
    max_concurrent_trials: int = 2
    sampler: str = "tpe"             # tpe | cmaes | nsga2 (multi-objective with `objectives`)
    seed: int = 0
    storage: str | None = None       # SQLAlchemy URL; default sqlite:///OUT/optuna.db
    study_name: str | None = None
    objectives: list[str] = field(default_factory=list)  # e.g. ["valid_acc:max", "params:min"] (nsga2)
    space: dict[str, dict] = field(default_factory=dict)  # dotted key -> {type, low, high, log, choices}
    seeds_per_trial: int = 1         # k searches per Optuna trial, in parallel (raynas.seeds)
    aggregate: str = "mean"          # mean | worst | mean_minus_std: what of the k seeds Optuna sees
    risk: float = 1.0                # lambda of mean_minus_std
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # known-good configs (dotted keys) Optuna tries first
    pruner: str | None = None        # rejected: OptunaSearch runs no Optuna pruner (use scheduler asha)


@dataclass
class SchedulerConfig:
    type: str = "fifo"               # fifo | asha | hyperband
    metric: str | None = None        # the per-epoch metric rungs compare (default: tune.metric / valid_acc)
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass
class ResourcesConfig:
    cpu: float = 1.0
    gpu: float = 0.0
    threads: int | None = None       # torch threads per trial; None: the whole CPUs it holds (raynas.threads)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    grid: GridConfig = field(default_factory=GridConfig)
    fixed: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list] = field(default_factory=dict)  # more grid axes: dotted key -> values (e.g. model.drop_path)
    tune: TuneBlock | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # the proxy retrain recipe of proxy_acc
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_concurrent_trials: int = 0   # 0: as many as resources allow
    max_failures: int = 2
    checkpoint_keep: int = 2
    storage_path: str | None = None  # default OUT/ray_results; NFS path or s3:// on a cluster
    tracking_uri: str | None = None  # default sqlite:///<cwd>/mlflow.db


def _check_tune(t: TuneBlock) -> None:
    if t.mode not in ("max", "min"):
        raise ConfigError(f"tune.mode must be max or min, got {t.mode!r}")
    if t.sampler not in ("tpe", "cmaes", "nsga2"):
        raise ConfigError(f"tune.sampler must be tpe, cmaes or nsga2, got {t.sampler!r}")
    if t.num_samples < 1 or t.max_concurrent_trials < 1:
        raise ConfigError("tune.num_samples and tune.max_concurrent_trials must be >= 1")
    if t.sampler == "nsga2" and len(t.objectives) < 2:
        raise ConfigError("tune.sampler nsga2 needs tune.objectives with at least two 'metric:max|min' entries")
    for o in t.objectives:
        if o.count(":") != 1 or o.split(":")[1] not in ("max", "min"):
            raise ConfigError(f"tune.objectives entry {o!r} must be 'metric:max' or 'metric:min'")
    if not t.space:
        raise ConfigError("tune.space is empty: name at least one field to search, e.g. mim.mask_ratio")
    from raynas.searchers.space import reject_cell_param

    for key, spec in t.space.items():
        reject_cell_param(key, spec)  # nb201_cell / nb101_cell: study files only (a one-line error here)
        check_param(key, spec)


def check_param(key: str, spec: Any, where: str = "tune.space") -> None:
    """One hyperparameter of a ``tune.space`` block: ``{type: float|int|categorical, low, high, log, choices,
    step}`` (the ends already numbers, ``raynas.checks.check_numbers``); shared by experiment and study files."""
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise ConfigError(f"{where}.{key}: needs type float, int or categorical")
    extra = set(spec) - {"type", "low", "high", "log", "choices", "step"}
    if extra:
        raise ConfigError(f"{where}.{key}: unknown keys {sorted(extra)}")
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise ConfigError(f"{where}.{key}: categorical needs a non-empty choices list")
        return
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}.{key}: {spec['type']} needs low and high")
    low, high = spec["low"], spec["high"]
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low > high:
        raise ConfigError(f"{where}.{key}: low ({low}) must be <= high ({high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}.{key}: log scale needs low > 0, got {low}")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None, exp_fields: set[str],
                    rename: dict[str, str] | None = None) -> dict[str, Any]:
    """``--set`` on an experiment: experiment fields replace, grid axes become one-value axes, anything
    else is a fixed trial setting."""
    for key, value in (overrides or {}).items():
        key = (rename or {}).get(key, key)
        if key in exp_fields:
            data = deep_merge(data, {key: value})
        elif key in GRID_AXES:
            data = deep_merge(data, {"grid": {key: value if isinstance(value, list) else [value]}})
        else:
            data = deep_merge(data, {"fixed": {key: value}})
    return data


def check_experiment(exp: ExperimentConfig) -> None:
    """What every experiment file needs, search or NAR: non-empty grid axes and sweeps, a valid tune
    block, a known scheduler and positive resources."""
    check_name(exp.name)
    check_blocks(exp)
    for axis in GRID_AXES:
        if not getattr(exp.grid, axis):
            raise ConfigError(f"grid.{axis} is empty")
    for key, values in exp.sweep.items():
        if not values:
            raise ConfigError(f"sweep.{key} is empty")
    if exp.tune is not None:
        _check_tune(exp.tune)
    if exp.resources.cpu <= 0 or exp.resources.gpu < 0:
        raise ConfigError("resources.cpu must be > 0 and resources.gpu >= 0")
    if exp.resources.threads is not None and exp.resources.threads < 1:
        raise ConfigError(f"resources.threads must be >= 1, got {exp.resources.threads}")


def load_experiment(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file; ``--set`` keys go to the experiment (``name``,
    ``tune.num_samples``, ...) when they name one of its fields, otherwise into ``fixed`` (and a
    grid axis set this way, e.g. ``dataset=digits``, replaces that axis)."""
    data = load_yaml(path) if path else {}
    exp_fields = {"name", "grid", "fixed", "sweep", "tune", "proxy", "resources", "scheduler", "max_concurrent_trials",
                  "max_failures", "checkpoint_keep", "storage_path", "tracking_uri"}
    data = apply_overrides(data, overrides, exp_fields)
    exp = build(ExperimentConfig, data)
    for key in ("data_dir", "nb201_table"):  # trials run in their own directories: make paths absolute
        if isinstance(exp.fixed.get(key), str):
            exp.fixed[key] = str(Path(exp.fixed[key]).expanduser().resolve())
    check_experiment(exp)
    check_objectives(exp)  # search trials' objectives (a NAR file's are raynas.nar.experiment's)
    check_search_trials(exp, trial_overrides(exp), resolve)  # every grid point and tuned value resolves
    return exp


def trial_overrides(exp: ExperimentConfig) -> list[dict[str, Any]]:
    """The user overrides of every grid point (tuned fields at a mid value, for validation)."""
    out = []
    sweep_keys = list(exp.sweep)
    for *axes, swept in itertools.product(*(getattr(exp.grid, a) for a in GRID_AXES),
                                          itertools.product(*exp.sweep.values())):
        method, space, dataset, seed = axes
        over = deep_merge(copy.deepcopy(exp.fixed), {"method": method, "space": space, "dataset": dataset,
                                                      "seed": seed})
        over = deep_merge(over, unflatten(dict(zip(sweep_keys, swept))))
        if exp.tune is not None:
            over = deep_merge(over, unflatten({k: example_value(v) for k, v in exp.tune.space.items()}))
        out.append(over)
    return out


def example_value(spec: dict) -> Any:
    if spec["type"] == "categorical":
        return spec["choices"][0]
    value = (spec["low"] + spec["high"]) / 2
    return int(round(value)) if spec["type"] == "int" else float(value)


def param_space(exp: ExperimentConfig) -> dict[str, Any]:
    """Tune's ``param_space``: the fixed settings, grid axes as ``grid_search`` (or, under Optuna,
    as categorical choices), tuned fields as Tune distributions that OptunaSearch converts."""
    from ray import tune

    space: dict[str, Any] = copy.deepcopy(exp.fixed)
    for axis in GRID_AXES:
        values = getattr(exp.grid, axis)
        if len(values) == 1:
            space[axis] = values[0]
        else:
            space[axis] = tune.choice(values) if exp.tune is not None else tune.grid_search(values)
    for key, values in exp.sweep.items():
        space = deep_merge(space, unflatten({key: tune.grid_search(list(values)) if exp.tune is None
                                               else tune.choice(list(values))}))
    if exp.tune is not None:
        space = deep_merge(space, unflatten({key: tune_domain(spec) for key, spec in exp.tune.space.items()}))
    return space


def tune_domain(spec: dict) -> Any:
    """A checked ``tune.space`` entry as the Tune distribution OptunaSearch converts (int ``high`` inclusive)."""
    from ray import tune

    if spec["type"] == "categorical":
        return tune.choice(spec["choices"])
    if spec["type"] == "int":
        return (tune.lograndint if spec.get("log") else tune.randint)(spec["low"], spec["high"] + 1)
    return (tune.loguniform if spec.get("log") else tune.uniform)(spec["low"], spec["high"])
