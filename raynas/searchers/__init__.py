"""Architecture searchers on the NAS-Bench-201 table, as Ray Tune searchers, with simulated time.

``space`` (the cell as a Tune search space), ``base`` (``CellSearcher``: never a cell twice, only the metric),
``random_search``, ``evolution`` (REA), ``tpe`` (Optuna TPE through ``OptunaSearch``), ``nar`` (the NAR ranker),
``tabular`` (the table as a trainable, the cost model), ``simulate`` (in-process simulator, ASHA's rule),
``tune_run`` (the same through real ``tune.Tuner``), ``curves`` (anytime curves, tables), ``study`` (a
comparison: config file, runs, MLflow). ``raynas bench nb201 simulate`` is the command. ``retrain_study`` and
``retrain_run``: the cell next to training hyperparameters, each trial a real retraining (``raynas run``).

A searcher is one line of ``SEARCHERS``: ``name -> "module:Class"``, the class taking ``seed`` and its options
as keyword arguments (``dataset`` too, if its signature names it).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from raynas.config import ConfigError

SEARCHERS: dict[str, str] = {
    "random": "raynas.searchers.random_search:RandomSearcher",
    "rea": "raynas.searchers.evolution:RegularizedEvolution",
    "tpe": "raynas.searchers.tpe:TPESearcher",
    "nar": "raynas.searchers.nar:NARSearcher",
}


def searcher_class(name: str) -> type:
    if name not in SEARCHERS:
        close = difflib.get_close_matches(name, list(SEARCHERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown searcher {name!r}{hint}; valid: {', '.join(SEARCHERS)}")
    module, _, cls = SEARCHERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def check_options(name: str, options: dict[str, Any] | None) -> inspect.Signature:
    """The searcher's constructor signature, after checking that every option names one of its arguments."""
    sig = inspect.signature(searcher_class(name).__init__)
    named = [p for p in sig.parameters if p not in ("self", "seed", "kw")]
    for key in options or {}:
        if key not in named:
            raise ConfigError(f"unknown option {key!r} of searcher {name}; valid: {', '.join(named)}")
    return sig


def make_searcher(name: str, seed: int = 0, options: dict[str, Any] | None = None, **context: Any) -> Any:
    """A fresh searcher; ``context`` (``dataset``, ``metric``, ``mode``, ``key``) goes to those that take it."""
    params = check_options(name, options).parameters
    takes_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in context.items() if k in params or (takes_kw and k != "dataset")}
    return searcher_class(name)(seed=seed, **extra, **(options or {}))


__all__ = ["SEARCHERS", "check_options", "make_searcher", "searcher_class"]
