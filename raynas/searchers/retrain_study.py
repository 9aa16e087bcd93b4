"""A retrain study: the NB-201 cell next to training hyperparameters, every trial a real retraining of its
sampled cell with its sampled hyperparameters, scored on a held-out part of the train split.

A study file with a top-level ``retrain:`` block (instead of a table study's ``bench:``)::

    name: nb201-cell-lr
    retrain: {dataset: cifar10, epochs: 20, channels: 16, layers: 5, holdout: 0.1}  # fixed RetrainConfig fields
    nb201_table: nb201.csv.gz          # optional: each cell's NB-201 accuracy, for the summary only
    tune:
      metric: holdout_acc              # or holdout_loss (mode min); never a test-split number
      mode: max
      num_samples: 32
      searcher: tpe                    # tpe | random: any space; rea | nar: the cell alone
      space:
        cell: {type: nb201_cell}
        lr: {type: float, low: 0.01, high: 0.2, log: true}
        batch_size: {type: categorical, choices: [64, 128, 256]}

The trial is ``trials.retrain.Retrain`` with ``holdout``: it trains on the rest of the train split and reports
the held-out part as ``holdout_acc``; the test split is never evaluated, so what the searcher selects on says
nothing about test accuracy until the winner is retrained on the whole split (``raynas retrain``). Searchers: with
hyperparameters, Ray's ``OptunaSearch`` over the 6 categorical edges and the ranges (``tpe``: multivariate
``TPESampler``; ``random``: ``RandomSampler``); the cell alone, any table-study searcher (each cell once).
Everything here is checked before Ray starts; :mod:`raynas.searchers.retrain_run` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raynas.checks import check_numbers, check_tuned_values
from raynas.config import ConfigError, build, check_name, deep_merge, flatten, load_yaml, need, unflatten
from raynas.experiment import ResourcesConfig, check_param, example_value, tune_domain
from raynas.searchers import check_options, make_searcher, searcher_class
from raynas.searchers.space import cell_space, split_space
from search_spaces.nb201 import OPS_NB201, NB201Genotype, format_genotype

#: what a retrain study may select on: the held-out part of the train split, never the test split
METRICS = ("holdout_acc", "holdout_loss")
#: searchers that sample hyperparameters next to the cell (the others search the cell alone) and their options
JOINT_SEARCHERS: dict[str, dict[str, type]] = {"tpe": {"n_startup_trials": int, "multivariate": bool}, "random": {}}
#: RetrainConfig fields that a study fixes itself: the cell is the trial's, and what it is scored on is the study's
NOT_TUNED = ("space", "genotype", "arch", "search", "holdout", "dataset", "data_dir", "download", "device")
#: a cell for checking the fixed fields (every cell resolves alike)
SOME_CELL = format_genotype(NB201Genotype((OPS_NB201[3],) * 6))


@dataclass
class RetrainTuneBlock:
    metric: str = "holdout_acc"
    mode: str = "max"
    num_samples: int = 8
    searcher: str = "tpe"
    seed: int = 0                    # the searcher's seed
    options: dict[str, dict] = field(default_factory=dict)  # searcher -> its options, as a table study's bench.options
    max_concurrent_trials: int = 1
    space: dict[str, dict] = field(default_factory=lambda: {"cell": {"type": "nb201_cell"}})


@dataclass
class RetrainStudyConfig:
    name: str = "nb201-retrain"
    retrain: dict[str, Any] = field(default_factory=dict)  # fixed RetrainConfig fields (the NB-201 recipe below)
    nb201_table: str | None = None   # reporting only: the table's accuracy of each trial's cell
    tune: RetrainTuneBlock = field(default_factory=RetrainTuneBlock)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 1
    checkpoint_keep: int = 2
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; none: off

    @property
    def cell_key(self) -> str:
        return split_space(self.tune.space)[0]

    @property
    def hyper(self) -> dict[str, dict]:
        """The ``tune.space`` entries other than the cell (dotted RetrainConfig fields)."""
        return split_space(self.tune.space)[1]


def fixed_overrides(s: RetrainStudyConfig, cell: str = SOME_CELL) -> dict[str, Any]:
    """The ``resolve_retrain`` overrides of a trial of ``cell`` before its hyperparameters."""
    return {**s.retrain, "space": "nb201", "genotype": cell}


def _resolve(over: dict[str, Any]) -> Any:
    from raynas.retrain import resolve_retrain

    return resolve_retrain(over)


def check_retrain_study(s: RetrainStudyConfig) -> None:
    """Everything that can be wrong before Ray starts, each a one-line ``ConfigError``."""
    check_name(s.name)
    t = s.tune
    need(t.metric in METRICS, f"tune.metric must be {' or '.join(METRICS)} (measured on retrain.holdout of the "
                              f"train split; the test split is never a search metric), got {t.metric!r}")
    need(t.mode in ("max", "min"), f"tune.mode must be max or min, got {t.mode!r}")
    need(t.num_samples >= 1 and t.max_concurrent_trials >= 1,
         "tune.num_samples and tune.max_concurrent_trials must be >= 1")
    need(s.max_failures >= -1, f"max_failures must be >= -1 (-1: retry forever), got {s.max_failures}")
    need(s.checkpoint_keep >= 1, f"checkpoint_keep must be >= 1, got {s.checkpoint_keep}")
    searcher_class(t.searcher)  # unknown: one line with a "did you mean"
    key, hyper = split_space(t.space)
    check_numbers(hyper)
    fixed = flatten(s.retrain)
    for name, spec in hyper.items():
        check_param(name, spec)
        need(name not in NOT_TUNED, f"tune.space.{name}: the study fixes {name} (tuned fields are training "
                                    f"hyperparameters: lr, weight_decay, batch_size, ...)")
        need(name not in fixed, f"tune.space.{name}: also fixed in retrain: ({fixed.get(name)!r}); keep one")
    if hyper:
        need(t.searcher in JOINT_SEARCHERS,
             f"tune.searcher {t.searcher} searches the cell alone; with hyperparameters in tune.space "
             f"({', '.join(hyper)}) use {' or '.join(JOINT_SEARCHERS)}")
    for name in dict.fromkeys([t.searcher, *t.options]):  # options of a searcher not run now are kept
        if hyper and name == t.searcher:
            check_joint_options(name, t.options.get(name) or {})
        else:
            check_options(name, t.options.get(name))
    for where in ("genotype", "arch", "search"):
        need(where not in s.retrain, f"retrain.{where}: the cell is tune.space.{key}'s, not a fixed field")
    need(s.retrain.get("space", "nb201") == "nb201",
         f"retrain.space: the cell is NB-201's (nb201_cell), got {s.retrain.get('space')!r}")
    try:
        cfg = _resolve(fixed_overrides(s))
    except ConfigError as e:
        raise ConfigError(f"retrain: {e}") from None
    need(0 < cfg.holdout < 1, f"retrain.holdout must be in (0, 1), got {cfg.holdout:g}: the share of the train "
                              "split the trials are scored on (0 would score them on the test split)")
    mids = unflatten({k: example_value(v) for k, v in hyper.items()})
    check_tuned_values(hyper, [deep_merge(fixed_overrides(s), mids)], _resolve)


def check_joint_options(name: str, options: dict[str, Any]) -> None:
    """The options of a searcher that samples hyperparameters too (``OptunaSearch``'s sampler)."""
    allowed = JOINT_SEARCHERS[name]
    for opt, value in options.items():
        need(opt in allowed, f"unknown option {opt!r} of searcher {name} with hyperparameters; "
                             f"valid: {', '.join(allowed) or 'none'}")
        need(isinstance(value, allowed[opt]) and not (allowed[opt] is int and isinstance(value, bool)),
             f"tune.options.{name}.{opt}: expected {allowed[opt].__name__}, got {value!r}")


def load_retrain_study(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RetrainStudyConfig:
    """A study file with a ``retrain:`` block (or none) with ``overrides`` (``--set``) on top; validated."""
    data = deep_merge(load_yaml(path) if path else {}, overrides or {})
    s = build(RetrainStudyConfig, data)
    for key in ("data_dir",):  # trials run in their own directories
        if isinstance(s.retrain.get(key), str):
            s.retrain[key] = str(Path(s.retrain[key]).expanduser().resolve())
    if s.nb201_table:
        s.nb201_table = str(Path(s.nb201_table).expanduser().resolve())
    check_retrain_study(s)
    return s


def search_domains(s: RetrainStudyConfig) -> dict[str, Any]:
    """The cell's 6 edges and the hyperparameters as Tune domains, nested as the trial config holds them."""
    return {s.cell_key: cell_space(), **unflatten({k: tune_domain(v) for k, v in s.hyper.items()})}


def nar_dataset(dataset: str) -> str:
    """The NB-201 dataset whose input shape NAR's cell features assume: the study's, else CIFAR-10's."""
    from raynas.searchers.tabular import dataset_name

    try:
        return dataset_name(dataset)
    except ConfigError:
        return "cifar10"


def new_searcher(s: RetrainStudyConfig) -> Any:
    """The study's searcher: the table studies' own for the cell alone (each cell once), else ``OptunaSearch``
    over :func:`search_domains` (it hears only the metric of each result)."""
    t = s.tune
    if not s.hyper:
        dataset = nar_dataset(str(s.retrain.get("dataset", "cifar10")))
        return make_searcher(t.searcher, t.seed, t.options.get(t.searcher), dataset=dataset, metric=t.metric,
                             mode=t.mode, key=s.cell_key)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if t.searcher == "tpe":
        sampler = optuna.samplers.TPESampler(seed=t.seed, **{"multivariate": True, **t.options.get("tpe", {})})
    else:
        sampler = optuna.samplers.RandomSampler(seed=t.seed)
    return OptunaSearch(space=OptunaSearch.convert_search_space(search_domains(s)), metric=t.metric, mode=t.mode,
                        sampler=sampler)
