"""The app's search config: ``trials``' typed config plus the checks only the app can make.

The config itself (fields, paper defaults, method blocks, ranges) lives with the methods in
``trials.search_config``; here the names a user gives are checked against what this installation can
load (datasets, data directories, benchmark tables), before Ray starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trials import SearchConfig
from trials import from_dict as _from_dict
from trials import resolve as _resolve
from trials.config import ConfigError, build, deep_merge, flatten, load_yaml, need, parse_set, unflatten

__all__ = ["ConfigError", "SearchConfig", "build", "check_name", "check_resources", "deep_merge", "flatten",
           "from_dict", "load_yaml", "need", "parse_set", "resolve", "unflatten"]


#: an experiment name becomes a directory (Ray results) and an MLflow experiment: one path component
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(value: Any, key: str = "name") -> None:
    """A name that is a safe directory name: letters, digits, ``_ . -``, at most 100, starting with a
    letter or digit (so never empty, ``..``, absolute or nested; every file stays under ``--out``)."""
    need(isinstance(value, str) and NAME_RE.fullmatch(value) is not None,
         f"{key} must be 1-100 letters, digits, '_', '.' or '-' starting with a letter or digit, got {value!r}")


def check_resources(cfg: Any) -> None:
    """The dataset is one raynas can load, the files named exist, the seed is one NumPy takes, the device
    exists here, every edge keeps an op to train and the supernet fits in memory."""
    from raynas.checks import check_device, check_model
    from raynas.data import DATASETS

    need(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    check_device(cfg.device)
    check_model(cfg)
    need(cfg.dataset in DATASETS, f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    if cfg.data_dir is not None and cfg.dataset != "digits":
        need(Path(cfg.data_dir).is_dir() or cfg.download,
             f"data_dir {cfg.data_dir} does not exist; pass an existing --data-dir (or --download to fetch)")
    if cfg.nb201_table is not None:
        need(cfg.space == "nb201", "nb201_table is only meaningful with space nb201")
        need(Path(cfg.nb201_table).is_file(), f"nb201_table {cfg.nb201_table} does not exist")


def resolve(overrides: dict[str, Any] | None = None) -> Any:
    """``trials.resolve`` (defaults < space < method preset < overrides; ranges) plus the app's checks."""
    cfg = _resolve(overrides)
    check_resources(cfg)
    return cfg


def from_dict(data: dict[str, Any]) -> Any:
    cfg = _from_dict(data)
    check_resources(cfg)
    return cfg
