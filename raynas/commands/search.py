"""``raynas search``: one architecture search from flags (and ``--config``/``--set``) as a Ray Tune trial."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raynas.console import add_flags
from raynas.commands.common import (add_force_flag, add_resource_flags, check_cluster_devices, check_data,
                                   check_resources, cpus_gpus, on_cluster, trials_exit_code)

_FLAGS = ("method", "space", "dataset", "epochs", "seed", "batch_size", "data_dir", "download", "nb201_table",
          "device")


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("search", help="run one architecture search as a Ray Tune trial")
    s.add_argument("--method", help="darts, darts2, ... (see `raynas methods`)")
    s.add_argument("--space", help="nb201, darts, s1, s2, s3, s4")
    s.add_argument("--dataset", help="digits, fashion-mnist, cifar10, cifar100, svhn, imagenet16-120")
    s.add_argument("--epochs", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--batch-size", type=int, dest="batch_size")
    s.add_argument("--data-dir", dest="data_dir")
    s.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    s.add_argument("--nb201-table", dest="nb201_table", help="compact NB201 CSV for per-epoch lookup")
    s.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    s.add_argument("--config", help="YAML file of config fields")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    s.add_argument("--out", default="runs/search", help="output directory (summary.json, Ray results)")
    s.add_argument("--name", default="search", help="experiment name")
    add_force_flag(s)
    add_resource_flags(s)
    add_flags(s)
    s.add_argument("--tracking-uri", dest="tracking_uri",
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db; none: off)")
    s.set_defaults(func=cmd_search)
    return s


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields from ``--config``, then the flags, then ``--set`` (later wins)."""
    from raynas.config import deep_merge, load_yaml, parse_set

    over: dict[str, Any] = load_yaml(args.config) if args.config else {}
    flags = {k: getattr(args, k) for k in _FLAGS}
    over = deep_merge(over, {k: v for k, v in flags.items() if v is not None})
    return deep_merge(over, parse_set(args.set))


def cmd_search(args: argparse.Namespace) -> int:
    from raynas.experiment import GRID_AXES, load_experiment
    from raynas.runner import run_experiment

    cpus, gpus = cpus_gpus(args)
    check_resources(cpus, gpus, args.address, args.threads)
    on_cluster(args.address)
    over = overrides(args)
    grid = {axis: [over.pop(axis)] for axis in GRID_AXES if axis in over}
    exp = load_experiment(None, {"fixed": over, "grid": grid, "name": args.name,
                                 "resources": {"cpu": cpus, "gpu": gpus, "threads": args.threads},
                                 "tracking_uri": args.tracking_uri})
    check_data(exp)
    check_cluster_devices(args.address, exp)
    summary = run_experiment(exp, args.out, address=args.address, force=args.force)
    for t in summary["trials"]:
        print(f"{t['method']}/{t['space']}/{t['dataset']}/seed{t['seed']}: {t['status']} after {t['epochs']} "
              f"epochs, valid_acc={t['final']['valid_acc']}")
        print(f"genotype: {t['genotype']}")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return trials_exit_code(summary["trials"], all_completed=True)
