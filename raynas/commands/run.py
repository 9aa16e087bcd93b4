"""``raynas run``: an experiment file (grid x Optuna) as Ray Tune trials."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raynas.commands.common import check_data, check_resources, trials_exit_code


def register(subparsers: Any) -> argparse.ArgumentParser:
    r = subparsers.add_parser("run", help="run an experiment file (grid x Optuna) as Ray Tune trials")
    r.add_argument("experiment", help="experiment YAML (see experiments/)")
    r.add_argument("--out", help="output directory (default runs/<name>)")
    r.add_argument("--address", help="Ray cluster address, e.g. auto or HOST:PORT (default: local instance)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment field (tune.num_samples=4) or a search field (epochs=2)")
    r.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (none: off)")
    r.set_defaults(func=cmd_run)
    return r


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.config import parse_set
    from raynas.experiment import load_experiment
    from raynas.runner import run_experiment

    exp = load_experiment(args.experiment, parse_set(args.set))
    if args.tracking_uri:
        exp.tracking_uri = args.tracking_uri
    check_resources(exp.resources.cpu, exp.resources.gpu if not args.address else 0.0)
    check_data(exp)
    out = args.out or f"runs/{exp.name}"
    summary = run_experiment(exp, out, address=args.address, yaml_text=Path(args.experiment).read_text())
    print(f"summary: {os.path.join(out, 'summary.json')}")
    return trials_exit_code(summary["trials"])
