"""``raynas run``: an experiment file (grid x Optuna) as Ray Tune trials."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raynas.console import add_flags
from raynas.commands.common import (add_force_flag, check_cluster_devices, check_data, check_resources, on_cluster,
                                   trials_exit_code)


def register(subparsers: Any) -> argparse.ArgumentParser:
    r = subparsers.add_parser("run", help="run an experiment file (grid x Optuna) as Ray Tune trials")
    r.add_argument("experiment", help="experiment YAML (see experiments/)")
    r.add_argument("--out", help="output directory (default runs/<name>)")
    r.add_argument("--address", help="Ray cluster address, e.g. auto or HOST:PORT (default: local instance)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment field (tune.num_samples=4) or a search field (epochs=2)")
    add_force_flag(r)
    r.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (none: off)")
    add_flags(r)
    r.set_defaults(func=cmd_run)
    return r


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.config import parse_set
    from raynas.experiment import load_experiment
    from raynas.runner import run_experiment
    from raynas.searchers.study import study_kind

    kind = study_kind(args.experiment)
    if kind == "bench":  # a searcher comparison on a benchmark table (raynas bench nb201 simulate)
        return run_study_file(args)
    if kind == "retrain":  # the cell next to training hyperparameters, each trial a real retraining
        return run_retrain_study_file(args)
    on_cluster(args.address)
    exp = load_experiment(args.experiment, parse_set(args.set))
    if args.tracking_uri:
        exp.tracking_uri = args.tracking_uri
    check_resources(exp.resources.cpu, exp.resources.gpu, args.address)
    check_data(exp)
    check_cluster_devices(args.address, exp)
    out = args.out or f"runs/{exp.name}"
    summary = run_experiment(exp, out, address=args.address, yaml_text=Path(args.experiment).read_text(),
                             force=args.force)
    print(f"summary: {os.path.join(out, 'summary.json')}")
    return trials_exit_code(summary["trials"])


def run_study_file(args: argparse.Namespace) -> int:
    """A study file's searchers x seeds as real Ray Tune trials on the tabular trainable."""
    from pathlib import Path

    from raynas.commands.bench import run_and_report
    from raynas.config import parse_set
    from raynas.outdir import BENCH_FILE
    from raynas.searchers.study import load_study, open_bench

    over = parse_set(args.set)
    if args.tracking_uri:
        over["tracking_uri"] = args.tracking_uri
    study = load_study(args.experiment, over)
    open_bench(study)  # a missing or unfit table is an error before anything is written
    out = args.out or f"runs/{study.name}"
    return run_and_report(study, "tune", out=out, json_path=str(Path(out) / BENCH_FILE),
                          yaml_text=Path(args.experiment).read_text(), force=args.force)


def run_retrain_study_file(args: argparse.Namespace) -> int:
    """A retrain study: the searcher's cells and hyperparameters, each trial a retraining scored on held-out
    training images; ``OUT/retrain_study.json``."""
    from pathlib import Path

    from raynas.config import parse_set
    from raynas.outdir import RETRAIN_STUDY_FILE
    from raynas.searchers.retrain_run import run_retrain_study
    from raynas.searchers.retrain_study import load_retrain_study

    over = parse_set(args.set)
    if args.tracking_uri:
        over["tracking_uri"] = args.tracking_uri
    on_cluster(args.address)
    study = load_retrain_study(args.experiment, over)
    r = study.resources
    check_resources(r.cpu, r.gpu, args.address, r.threads)
    out = args.out or f"runs/{study.name}"
    summary = run_retrain_study(study, out, address=args.address, yaml_text=Path(args.experiment).read_text(),
                                force=args.force)
    print(f"summary: {os.path.join(out, RETRAIN_STUDY_FILE)}")
    return trials_exit_code(summary["trials"])
