"""``raynas retrain``: train found genotypes from scratch with the papers' recipe, one Tune trial per seed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from raynas.console import add_flags
from raynas.commands.common import add_resource_flags, cpus_gpus, parse_seeds, read_genotype_arg, trials_exit_code
from raynas.genotype_info import SPACES


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``raynas retrain`` to the CLI's subparsers."""
    p = subparsers.add_parser("retrain", help="train found genotypes from scratch (one Tune trial per seed)",
                              description="Retrain the best genotypes of a search (--from) or one given genotype "
                                          "from scratch with the papers' recipe; writes OUT/retrain_summary.json.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source", metavar="SEARCH_OUT_DIR", help="the --out of a raynas search")
    src.add_argument("--genotype", metavar="TEXT|FILE", help="one genotype (with --space)")
    p.add_argument("--space", choices=SPACES, help="space of --genotype")
    p.add_argument("--top", type=int, default=1, help="with --from: the K best distinct genotypes (default 1)")
    p.add_argument("--objective", default="valid_acc",
                   help="with --from: rank by this final metric (valid_acc, train_acc, nb201_valid, nb201_test)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one trial each (default 0)")
    p.add_argument("--epochs", type=int, help="default: the recipe's (600 DARTS spaces, 200 NB201)")
    p.add_argument("--dataset", help="default: the searched dataset (--from) or cifar10")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out", default="runs/retrain", help="output directory (retrain_summary.json, Ray results)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any RetrainConfig field, e.g. --set batch_size=64 --set drop_path_prob=0.3")
    add_resource_flags(p)
    add_flags(p)
    p.add_argument("--tracking-uri", dest="tracking_uri",
                   help="MLflow URI (default: the search's, else $MLFLOW_TRACKING_URI or ./mlflow.db; none: off)")
    p.set_defaults(func=cmd_retrain)
    return p


def _genotypes(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(space, genotype text, search meta or None) of ``--from`` (the K best) or of ``--genotype``."""
    from raynas.config import ConfigError
    from raynas.retrain import genotypes_from_search

    if args.source is not None:
        if args.space is not None:
            raise ConfigError("--space goes with --genotype; with --from each genotype keeps its search's space")
        return genotypes_from_search(args.source, args.top, args.objective)
    if args.space is None:
        raise ConfigError("--genotype needs --space (darts, s1, s2, s3, s4 or nb201)")
    return [(args.space, read_genotype_arg(args.genotype), None)]


def _tracking_uri(args: argparse.Namespace, search_meta: dict[str, Any] | None) -> str | None:
    """``--tracking-uri``, else the search's, else ``$MLFLOW_TRACKING_URI``, else the default store; ``none``: off.
    A store that cannot be reached is an error now, before Ray starts."""
    uri = args.tracking_uri or (search_meta or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        from raynas.tracking import default_tracking_uri
        uri = default_tracking_uri()
    if uri.lower() == "none":
        return None
    from raynas.tracking import check_reachable
    check_reachable(uri)
    return uri


def cmd_retrain(args: argparse.Namespace) -> int:
    from raynas.config import ConfigError, parse_set
    from raynas.retrain import SUMMARY_FILE, run_retrain

    overrides = parse_set(args.set)
    for key in ("dataset", "data_dir", "device"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    genotypes = _genotypes(args)
    cpus, gpus = cpus_gpus(args)
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"--cpus must be > 0 and --gpus >= 0, got {cpus} and {gpus}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if gpus > 0 and not args.address:  # on a cluster: the cluster's GPUs (check_cluster_gpus)
        import torch

        if gpus > torch.cuda.device_count():
            raise ConfigError(f"{gpus} GPUs per trial requested but {torch.cuda.device_count()} are visible")
    uri = _tracking_uri(args, genotypes[0][2])
    if args.address:
        from raynas.checks import devices_on_cluster
        from raynas.cluster import check_cluster_gpus

        devices_on_cluster()
        check_cluster_gpus(args.address, {str(overrides.get("device", "auto"))}, gpus)
    summary = run_retrain(genotypes, parse_seeds(args.seeds), args.out, args.epochs, overrides,
                          {"cpu": cpus, "gpu": gpus, "threads": args.threads}, address=args.address, tracking_uri=uri)
    print(f"\n{'space':<7}{'dataset':<15}{'seed':>5}  {'status':<10}{'ep':>5}{'test_acc':>10}{'params':>9}  genotype")
    for t in summary["trials"]:
        acc = "-" if t["test_acc"] is None else f"{t['test_acc']:.2f}"
        params = "-" if t["params_m"] is None else f"{t['params_m']:.2f}M"
        print(f"{t['space']:<7}{t['dataset']:<15}{t['seed']:>5}  {t['status']:<10}{t['epochs']:>5}{acc:>10}"
              f"{params:>9}  {t['genotype']}")
    for g in summary["genotypes"]:
        if g["test_acc_mean"] is not None:
            std = f" +- {g['test_acc_std']:.2f}" if g["test_acc_std"] is not None else ""
            print(f"{g['space']}/{g['dataset']}: test acc {g['test_acc_mean']:.2f}{std} over {g['completed']} "
                  f"seeds, {g['params_m']:.2f}M params: {g['genotype']}")
    print(f"summary: {Path(args.out) / SUMMARY_FILE}")
    return trials_exit_code(summary["trials"], all_completed=True)
