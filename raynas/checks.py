"""Checks of what Ray, Tune, Optuna, MLflow or the trials would reject only after Ray has started: run in
the driver, before anything is written, each failing with one ``ConfigError`` line.

- :func:`check_blocks`: the experiment file's run settings (scheduler, checkpoints, failures, storage
  URIs) and the ends of every tuned range as numbers (YAML 1.1 reads ``1e-3`` as a string).
- :func:`check_search_trials`: every value a search trial may be given (both ends of every range, every
  categorical choice) resolves; the objective is a metric search trials report.
- :func:`check_device`, :func:`check_model`: devices that exist here, op lists that leave every edge an
  op to train, supernets that fit in memory.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

from trials.config import ConfigError, deep_merge, need, unflatten

def search_trial_metrics() -> tuple[str, ...]:
    """The numbers a search trial's result may carry (``raynas.trainable.SearchTrainable``): a search epoch's
    (``trials.bilevel.search_metrics``, which each method piece extends) and the NB-201 headline
    (``raynas.tables.nb201.nb201_headline``). What tune objectives and schedulers are checked against."""
    from raynas.tables.nb201 import NB201_METRICS
    from trials.bilevel import search_metrics

    return search_metrics() + NB201_METRICS


#: the names a search trial reports, derived (not listed) from where the trials build their results
SEARCH_METRICS = search_trial_metrics()
#: what a seed-group trial (``raynas.seeds``) adds when a seed's search or proxy retrain ends
#: (``raynas.objectives``): the proxy's accuracy, then the costs
GROUP_METRICS = ("proxy_acc", "params", "flops", "search_gpu_hours")
#: storage URI schemes pyarrow's filesystems serve (Tune's ``storage_path``)
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "file")
#: a supernet whose rough activation + weight footprint exceeds this cannot run anywhere
MAX_BYTES = 2 ** 40
IMAGE_SIDE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "imagenet16-120": 16, "fashion-mnist": 28, "digits": 8}


def number(value: Any, key: str) -> float:
    """A range end as a number: YAML 1.1 leaves ``1e-3`` a string, which is parsed; anything else that is
    not a number is said to be one, never compared."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: not a number ({value!r})")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: not a number ({value!r})")


def check_blocks(exp: Any) -> None:
    """The run settings of an experiment file, search or NAR, and its tuned ranges as numbers."""
    need(exp.checkpoint_keep >= 1, f"checkpoint_keep must be >= 1, got {exp.checkpoint_keep}")
    need(exp.max_failures >= -1, f"max_failures must be >= -1 (-1: retry forever), got {exp.max_failures}")
    need(exp.max_concurrent_trials >= 0, f"max_concurrent_trials must be >= 0 (0: as resources allow), "
                                         f"got {exp.max_concurrent_trials}")
    s = exp.scheduler
    need(s.grace_period >= 1, f"scheduler.grace_period must be >= 1, got {s.grace_period}")
    need(s.reduction_factor >= 2, f"scheduler.reduction_factor must be >= 2, got {s.reduction_factor}")
    if exp.storage_path:
        check_storage_path(exp.storage_path)
    if exp.tune is None:
        return
    if exp.tune.storage:
        check_optuna_storage(exp.tune.storage)
    check_numbers(exp.tune.space)


def check_numbers(space: dict[str, Any], where: str = "tune.space") -> None:
    """The ends of every float / int range of a ``tune.space`` block as numbers, in place (ints for int)."""
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int"):
            continue  # the type itself is checked with the tune block
        for end in ("low", "high"):
            if end in spec:
                spec[end] = number(spec[end], f"{where}.{key}.{end}")
        if spec["type"] == "int" and any(isinstance(spec.get(e), float) and not float(spec[e]).is_integer()
                                         for e in ("low", "high")):
            raise ConfigError(f"{where}.{key}: int needs integer low and high, got {spec.get('low')!r} "
                              f"and {spec.get('high')!r}")
        for end in ("low", "high"):
            if spec["type"] == "int" and isinstance(spec.get(end), float):
                spec[end] = int(spec[end])


def check_storage_path(path: str) -> None:
    """Tune's ``storage_path``: a URI of a filesystem pyarrow serves, or a local directory we can create."""
    if "://" in path:
        scheme = path.split("://", 1)[0].lower()
        need(scheme in STORAGE_SCHEMES, f"storage_path {path!r}: no filesystem serves {scheme}://; use a local or "
                                        f"NFS path or one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}")
        return
    p = Path(path).expanduser()
    parent = next((q for q in [p, *p.parents] if q.exists()), None)
    need(parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK),
         f"storage_path {path}: {parent or p} is not a writable directory")


def check_optuna_storage(url: str) -> None:
    """``tune.storage``: a SQLAlchemy URL with an installed dialect; for sqlite, a directory that exists."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        u = make_url(url)
        u.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError(f"tune.storage {url!r} is not a database URL this installation can open "
                          f"({e.__class__.__name__}); e.g. sqlite:////abs/path/optuna.db") from None
    except ImportError as e:
        raise ConfigError(f"tune.storage {url!r}: its database driver is not installed ({e.name})") from None
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        parent = Path(u.database).expanduser().resolve().parent
        need(parent.is_dir() and os.access(parent, os.W_OK),
             f"tune.storage {url!r}: {parent} is not a writable directory")


def _tuned_values(spec: dict) -> list[Any]:
    if spec["type"] == "categorical":
        return list(spec["choices"])
    return [spec["low"], spec["high"]]


def check_tuned_values(space: dict[str, dict], overrides: list[dict[str, Any]], resolve: Callable[[dict], Any]
                       ) -> None:
    """Every value a trial may be given resolves: each grid point, and with it each end of every tuned
    range and each categorical choice of ``space`` (one at a time, the others as the grid point has them).
    ``resolve``: the trial config's own (``raynas.config.resolve``, ``raynas.nar``'s for NAR experiments, a
    retraining's for retrain studies); its one-line ``ConfigError`` is prefixed with the ``tune.space`` key
    and value that caused it."""
    for over in overrides:
        try:
            resolve(over)  # the tuned fields at their mid values (``trial_overrides``)
        except ConfigError as e:
            key = next((k for k in space if k.rsplit(".", 1)[-1] in str(e)), None)
            if key is None:
                raise
            mid = over
            for part in key.split("."):
                mid = mid.get(part) if isinstance(mid, dict) else None
            raise ConfigError(f"tune.space.{key} = {mid!r} (its mid value): {e}") from None
        for key, spec in space.items():
            for value in _tuned_values(spec):
                try:
                    resolve(deep_merge(copy.deepcopy(over), unflatten({key: value})))
                except ConfigError as e:
                    raise ConfigError(f"tune.space.{key} = {value!r}: {e}") from None


def check_search_trials(exp: Any, overrides: list[dict[str, Any]], resolve: Callable[[dict], Any]) -> None:
    """Every value a search trial may be given resolves (:func:`check_tuned_values`). The objective names
    are checked by ``raynas.objectives.check_objectives`` against ``SEARCH_METRICS`` + ``GROUP_METRICS``.
    ``resolve``: ``raynas.config.resolve``."""
    check_tuned_values(exp.tune.space if exp.tune is not None else {}, overrides, resolve)


#: set (``devices_on_cluster``) when a command joins a cluster (``--address``): a trial's GPU is a worker's,
#: which the driver may not have, so ``cuda`` is checked against the cluster (``cluster.check_cluster_gpus``)
_ON_CLUSTER = False


def devices_on_cluster(on: bool = True) -> None:
    global _ON_CLUSTER
    _ON_CLUSTER = on


def check_device(device: str, key: str = "device") -> None:
    """``cuda:N`` names a GPU this machine has (``auto`` falls back to the CPU by itself); on a cluster
    only its form, the GPUs being the cluster's."""
    if not device.startswith("cuda"):
        return
    import torch

    index = device.partition(":")[2]
    need(index == "" or index.isdigit(), f"{key} {device!r}: expected cuda or cuda:N")
    if _ON_CLUSTER:
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = int(index) if index else 0
    need(wanted < count, f"{key} {device} does not exist here ({count} GPUs visible); use auto, cpu or "
                         f"cuda:0..{count - 1}" if count else f"{key} {device} does not exist here (no GPU "
                                                            "visible); use auto or cpu")


def edge_ops(space: str, exclude: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every edge's candidate ops in ``space`` after ``exclude`` (as ``search_spaces.build_supernet``)."""
    from search_spaces import darts, nb201, robust_darts

    if space == "nb201":
        rows = [nb201.OPS_NB201]
    elif space in robust_darts.SPACES:
        rows = [ops for cell in robust_darts.SPACES[space].values() for ops in cell]
    else:
        rows = [darts.PRIMITIVES]
    return [tuple(o for o in ops if o not in exclude) for ops in rows]


def check_model(cfg: Any) -> None:
    """Every edge keeps an op besides ``none`` after ``model.exclude_ops``, and the supernet fits in memory."""
    exclude = tuple(cfg.model.exclude_ops)
    if exclude:
        rows = edge_ops(cfg.space, exclude)
        need(all(rows), f"model.exclude_ops leaves no op on an edge of the {cfg.space} space")
        need(all(set(r) - {"none"} for r in rows),
             f"model.exclude_ops leaves no trainable op (only 'none') on an edge of the {cfg.space} space")
    side = IMAGE_SIDE.get(cfg.dataset, 32)
    ops = max(len(r) for r in edge_ops(cfg.space, exclude))
    edges = 6 if cfg.space == "nb201" else 14
    cells = cfg.model.layers * (3 if cfg.space == "nb201" else 1)
    activations = cfg.batch_size * cfg.model.C * 4 * side * side * ops * edges * cells * 4  # C grows x4 at most
    weights = (cfg.model.C * 4) ** 2 * 25 * ops * edges * cells * 4
    need(activations + weights <= MAX_BYTES,
         f"model.C={cfg.model.C}, model.layers={cfg.model.layers}, batch_size={cfg.batch_size}: the supernet is too "
         f"large (~{(activations + weights) / 2 ** 40:.0f} TiB); use sizes of the papers' order (C 16, 8 layers, "
         "batch 64)")

