"""What an Optuna trial is scored on: the objective names, when each is known, the proxy retrain
recipe, the aggregate over a trial's seeds, and the checks that reject what cannot work (before Ray).

Objectives a search reports every epoch (``valid_acc``, ``nb201_test``, ...) can drive ASHA rungs;
``proxy_acc`` (the derived genotype retrained from scratch with the ``proxy:`` recipe), ``params`` and
``flops`` (of the derived network at the proxy's shape) and ``search_gpu_hours`` are known only once a
seed's search (or its proxy) has finished, so a scheduler may not rung on them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from raynas.checks import GROUP_METRICS, SEARCH_METRICS
from raynas.config import ConfigError
from trials.batches import DataConfig
from trials.retrain import SUBSET_MOVED

if TYPE_CHECKING:
    from raynas.experiment import ExperimentConfig, TuneBlock

#: the NB-201 table lookup of each epoch's genotype (needs ``nb201_table``)
NB201 = ("nb201_test", "nb201_valid")
#: reported by every search epoch (supernet numbers and the genotype's statistics)
PER_EPOCH = tuple(m for m in SEARCH_METRICS if m not in NB201 + ("epoch",))
#: known when a seed's proxy retrain has finished
PROXY = GROUP_METRICS[:1]
#: known when a seed's search has finished: costs of the derived network (at the proxy's shape) and the search
COST = GROUP_METRICS[1:]
END_ONLY = PROXY + COST
AGGREGATES = ("mean", "worst", "mean_minus_std")
SCHEDULERS = ("fifo", "asha", "hyperband")


@dataclass
class ProxyConfig:
    """A short retraining from scratch of each seed's genotype, run in the same Tune trial after the
    search (``trials.retrain.Retrain``, the ``raynas retrain`` loop). Defaults: see the README."""
    epochs: int = 20
    channels: int = 16
    layers: int | None = None        # None: 8 cells (DARTS spaces), N=5 per stage (NB-201's own network)
    batch: int | None = None         # None: the space's retrain recipe (96 DARTS spaces, 256 NB-201)
    lr: float | None = None          # None: the recipe's (0.025 DARTS spaces, 0.1 NB-201), cosine over `epochs`
    cutout: int = 0
    #: data.train_subset: the part of the train split the proxy uses, drawn by data.subset_seed (a fixed
    #: number, default 0, never the trial's seed: the same images for every seed and trial)
    data: DataConfig = field(default_factory=DataConfig)
    holdout: float = 0.1             # fraction of that scored on (0: the test split, as DARTS' train.py)
    weight_decay: float | None = None  # None: the recipe's (3e-4 DARTS spaces, 5e-4 NB-201)
    max_steps_per_epoch: int | None = None  # caps for smoke runs
    eval_batches: int | None = None

    REMOVED: ClassVar[dict[str, str]] = {"subset": SUBSET_MOVED}


def proxy_overrides(proxy: ProxyConfig, space: str, genotype: str, search_cfg: Any) -> dict[str, Any]:
    """The ``RetrainConfig`` overrides of a proxy run: the same dict ``raynas retrain --set`` takes, so
    ``raynas retrain`` with these settings gives the same number."""
    layers = proxy.layers if proxy.layers is not None else (5 if space == "nb201" else 8)
    over = {"space": space, "genotype": genotype, "dataset": search_cfg.dataset, "data_dir": search_cfg.data_dir,
            "download": search_cfg.download, "seed": search_cfg.seed, "device": search_cfg.device,
            "epochs": proxy.epochs, "channels": proxy.channels, "layers": layers, "cutout": proxy.cutout,
            "data": dataclasses.asdict(proxy.data), "holdout": proxy.holdout, "auxiliary": False, "drop_path_prob": 0.0,
            "max_steps_per_epoch": proxy.max_steps_per_epoch, "eval_batches": proxy.eval_batches}
    for key, value in (("batch_size", proxy.batch), ("lr", proxy.lr), ("weight_decay", proxy.weight_decay)):
        if value is not None:
            over[key] = value
    return over


def objective_specs(t: TuneBlock) -> list[tuple[str, str]]:
    """``(metric, mode)`` of every objective: ``tune.objectives`` if given, else ``tune.metric``."""
    if t.objectives:
        return [(o.split(":")[0], o.split(":")[1]) for o in t.objectives]
    return [(t.metric, t.mode)]


def needs_proxy(t: TuneBlock) -> bool:
    return any(m in PROXY for m, _ in objective_specs(t))


def grouped(exp: ExperimentConfig) -> bool:
    """Whether Optuna trials run as a seed group (``raynas.seeds``): several seeds, or an objective
    that only a finished search or proxy gives."""
    t = exp.tune
    return t is not None and (t.seeds_per_trial > 1 or any(m in END_ONLY for m, _ in objective_specs(t)))


def trial_seeds(exp: ExperimentConfig) -> list[int]:
    """The seeds of every Optuna trial: ``grid.seed`` when it lists exactly k, else k from its first."""
    k, seeds = exp.tune.seeds_per_trial, exp.grid.seed
    return list(seeds) if len(seeds) == k else [seeds[0] + i for i in range(k)]


# ------------------------------------------------------------------------------------ aggregation

def aggregate(values: list[float], how: str, risk: float, mode: str) -> dict[str, float]:
    """``mean``, ``std`` (sample, 0 for one seed), ``worst`` (min when maximising) and ``value``, the
    number Optuna sees: the mean, the worst, or the mean penalised by ``risk`` standard deviations
    (``mean - risk*std`` when maximising, ``mean + risk*std`` when minimising)."""
    if not values:
        raise ValueError("aggregate of no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    worst = min(values) if mode == "max" else max(values)
    value = {"mean": mean, "worst": worst,
             "mean_minus_std": mean - risk * std if mode == "max" else mean + risk * std}[how]
    return {"mean": mean, "std": std, "worst": worst, "value": value}


def natural_mode(metric: str) -> str:
    """Which way a metric that is not an objective improves (losses and costs down, accuracies up): what
    its seeds' ``worst`` and the scheduler's rungs use."""
    return "min" if metric.endswith("_loss") or metric in COST else "max"


def aggregate_result(seed_results: list[dict[str, Any]], t: TuneBlock, names: list[str]) -> dict[str, Any]:
    """The trial's result keys from its seeds' latest results: for each metric ``m`` that every seed
    has, ``m`` (the aggregate Optuna and the scheduler see), ``m_mean``, ``m_std``, ``m_worst``."""
    modes = dict(objective_specs(t))
    out: dict[str, Any] = {}
    for m in names:
        values = [r.get(m) for r in seed_results]
        if not values or any(v is None or not math.isfinite(float(v)) for v in values):
            continue
        agg = aggregate([float(v) for v in values], t.aggregate, t.risk, modes.get(m) or natural_mode(m))
        out[m] = agg["value"]
        out.update({f"{m}_{k}": agg[k] for k in ("mean", "std", "worst")})
    return out


# ------------------------------------------------------------------------------------------ checks

def _available(exp: ExperimentConfig) -> tuple[str, ...]:
    names = PER_EPOCH + END_ONLY
    spaces = set(exp.grid.space)
    if exp.fixed.get("nb201_table") and spaces == {"nb201"}:
        names += NB201
    return names


def check_objectives(exp: ExperimentConfig) -> None:
    """Objectives some trial reports, a valid aggregate, a scheduler that rungs on a per-epoch number,
    enqueued configs inside the space: one-line ``ConfigError`` otherwise."""
    t = exp.tune
    sched = exp.scheduler
    if sched.type not in SCHEDULERS:
        raise ConfigError(f"scheduler.type must be one of {', '.join(SCHEDULERS)}, got {sched.type!r}")
    if t is None:
        if sched.metric is not None and sched.metric not in PER_EPOCH + NB201:
            raise ConfigError(f"scheduler.metric {sched.metric!r} is not reported every epoch")
        return
    if t.seeds_per_trial < 1:
        raise ConfigError(f"tune.seeds_per_trial must be >= 1, got {t.seeds_per_trial}")
    if t.aggregate not in AGGREGATES:
        raise ConfigError(f"tune.aggregate must be one of {', '.join(AGGREGATES)}, got {t.aggregate!r}")
    if not (t.risk >= 0 and math.isfinite(t.risk)):
        raise ConfigError(f"tune.risk must be a finite number >= 0, got {t.risk}")
    if t.pruner is not None:
        raise ConfigError("tune.pruner: Ray Tune's OptunaSearch runs no Optuna pruner; stop trials early with "
                          "scheduler: {type: asha} (one of the two, not both)")
    available = _available(exp)
    for metric, _ in objective_specs(t):
        if metric in NB201 and metric not in available:
            raise ConfigError(f"no trial reports {metric}: it needs space nb201 and fixed.nb201_table (a table path)")
        if metric not in available:
            raise ConfigError(f"no trial reports objective {metric!r}; valid: {', '.join(available)}")
    if t.seeds_per_trial > 1 and len(exp.grid.seed) > 1 and len(exp.grid.seed) != t.seeds_per_trial:
        raise ConfigError(f"grid.seed lists {len(exp.grid.seed)} seeds but tune.seeds_per_trial is "
                          f"{t.seeds_per_trial}: give one base seed or exactly seeds_per_trial seeds")
    if grouped(exp) and exp.fixed.get("collapse_skip") is not None:
        raise ConfigError("collapse_skip stops a single search; it does not apply to seed groups or proxy objectives")
    if sched.type != "fifo":
        rung = sched.metric or (t.metric if not t.objectives else None)
        if rung is None:
            raise ConfigError(f"scheduler {sched.type} with several tune.objectives needs scheduler.metric, a "
                              f"per-epoch metric to rung on (e.g. nb201_test or valid_acc)")
        if rung in END_ONLY:
            raise ConfigError(f"scheduler {sched.type} compares trials at every rung, but {rung} is known only at "
                              f"the end; set scheduler.metric to a per-epoch metric (nb201_test, valid_acc) or "
                              f"use scheduler fifo")
        if rung not in available:
            raise ConfigError(f"scheduler.metric {rung!r} is not reported every epoch; valid: "
                              f"{', '.join(m for m in available if m not in END_ONLY)}")
    check_enqueue(exp)
    if needs_proxy(t):
        check_proxy(exp)


#: any valid genotype per space kind: the proxy recipe's ranges are checked before a search has found one
_EXAMPLE = {"nb201": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"}


def check_proxy(exp: ExperimentConfig) -> None:
    """The proxy recipe resolves to a valid retraining on every searched space (``proxy.<key>`` errors)."""
    from types import SimpleNamespace

    from search_spaces.darts import DARTS_V2
    from trials.retrain import resolve_retrain

    for space in set(exp.grid.space):
        kind = "nb201" if space == "nb201" else "darts"
        example = _EXAMPLE.get(kind) or str(DARTS_V2)
        dummy = SimpleNamespace(dataset="cifar10", data_dir=None, download=False, seed=0, device="cpu")
        try:
            resolve_retrain(proxy_overrides(exp.proxy, kind, example, dummy))
        except ConfigError as e:
            raise ConfigError(f"proxy: {e}") from None


def tuned_keys(exp: ExperimentConfig) -> dict[str, dict]:
    """Every key Optuna samples, dotted, with its spec: ``tune.space``, multi-valued grid axes and sweeps."""
    keys = {k: v for k, v in exp.tune.space.items()}
    for axis in ("method", "space", "dataset"):
        values = getattr(exp.grid, axis)
        if len(values) > 1:
            keys[axis] = {"type": "categorical", "choices": list(values)}
    for key, values in exp.sweep.items():
        keys[key] = {"type": "categorical", "choices": list(values)}
    return keys


def check_enqueue(exp: ExperimentConfig) -> None:
    keys = tuned_keys(exp)
    for i, point in enumerate(exp.tune.enqueue):
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"tune.enqueue[{i}] must be a mapping of tuned keys to values")
        for key, value in point.items():
            spec = keys.get(key)
            if spec is None:
                raise ConfigError(f"tune.enqueue[{i}].{key} is not a tuned key; tuned: {', '.join(keys)}")
            if spec["type"] == "categorical":
                if value not in spec["choices"]:
                    raise ConfigError(f"tune.enqueue[{i}].{key}: {value!r} is not one of {spec['choices']}")
                continue
            if "low" not in spec or "high" not in spec:  # a parameter kind with no range (checked where defined)
                continue
            if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
                try:
                    value = point[key] = float(value)
                except ValueError:
                    pass
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not spec["low"] <= value <= spec["high"]:
                raise ConfigError(f"tune.enqueue[{i}].{key}: {value!r} is outside [{spec['low']}, {spec['high']}]")


def enqueue_params(exp: ExperimentConfig) -> list[dict[str, Any]]:
    """``tune.enqueue`` as Optuna parameters (Ray's OptunaSearch names them with ``/``)."""
    return [{k.replace(".", "/"): v for k, v in p.items()} for p in exp.tune.enqueue]
