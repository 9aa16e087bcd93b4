"""``raynas study``: an experiment's Optuna study read back from its RDB: the best trials, fANOVA
parameter importances, and Optuna's matplotlib plots as PNGs (attached to the MLflow parent run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("study", help="print an Optuna study (best trials, importances) and plot it",
                              description="Read the Optuna study of a `raynas run --out DIR` (or of an RDB URL), "
                                          "print its best trials and fANOVA importances, write PNG plots.")
    p.add_argument("target", metavar="DIR|URL", help="a run's --out directory or an Optuna RDB URL")
    p.add_argument("--study-name", dest="study_name", help="with a URL holding several studies")
    p.add_argument("--top", type=int, default=5, help="best trials to list (single objective; default 5)")
    p.add_argument("--out", help="where the PNGs go (default DIR/study, or ./study for a URL)")
    p.set_defaults(func=cmd_study)
    return p


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_study(args: argparse.Namespace) -> int:
    from raynas.config import ConfigError
    from raynas.study import best_trials, importances, open_study, write_plots

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    study, tracking = open_study(args.target, args.study_name)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    directions = ", ".join(d.name.lower() for d in study.directions)
    print(f"study {study.study_name}: {len(study.trials)} trials "
          f"({', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))}); {directions}")
    best = best_trials(study, args.top)
    print("best trials" + (" (Pareto front)" if len(study.directions) > 1 else "") + ":")
    for t in best:
        values = ", ".join(_fmt(v) for v in t.values)
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
        print(f"  #{t.number:<4} {values:>18}  {params}")
    for i, imp in enumerate(importances(study)):
        label = f" (objective {i})" if len(study.directions) > 1 else ""
        print(f"fANOVA importance{label}:")
        for name, value in imp.items():
            print(f"  {name:<32} {value:.3f}")
    out = Path(args.out) if args.out else (Path(args.target) / "study" if "://" not in args.target else Path("study"))
    paths = write_plots(study, out)
    for path in paths:
        print(f"plot: {path}")
    if tracking and paths:
        from raynas.tracking.store import client

        try:
            for path in paths:
                client(tracking["uri"]).log_artifact(tracking["parent_run_id"], str(path), "study")
            print(f"attached to MLflow run {tracking['parent_run_id']} ({tracking['uri']})")
        except Exception as e:  # noqa: BLE001 - the plots are on disk either way
            print(f"raynas study: could not attach the plots to MLflow: {type(e).__name__}: {e}")
    return 0
