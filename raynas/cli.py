"""``raynas`` command line. Every bad input ends in one line on stderr and exit code 2, before Ray starts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input detected by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage block)
        raise UsageError(f"{self.prog}: {message}")


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="darts, darts2, ... (see `raynas methods`)")
    p.add_argument("--space", help="nb201, darts, s1, s2, s3, s4")
    p.add_argument("--dataset", help="digits, fashion-mnist, cifar10, cifar100, svhn, imagenet16-120")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    p.add_argument("--nb201-table", dest="nb201_table", help="compact NB201 CSV for per-epoch lookup")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--config", help="YAML file of config fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from raynas.config import _deep_merge, load_yaml, parse_set

    over: dict[str, Any] = load_yaml(args.config) if args.config else {}
    flags = {k: getattr(args, k) for k in ("method", "space", "dataset", "epochs", "seed", "batch_size",
                                             "data_dir", "download", "nb201_table", "device")}
    over = _deep_merge(over, {k: v for k, v in flags.items() if v is not None})
    return _deep_merge(over, parse_set(args.set))


def _check_resources(cpus: float, gpus: float) -> None:
    if gpus > 0:
        import torch
        if not torch.cuda.is_available():
            raise UsageError(f"{gpus} GPUs per trial requested but no GPU is visible here; use 0 or run on a GPU node")
        if gpus > torch.cuda.device_count():
            raise UsageError(f"{gpus} GPUs per trial requested but only {torch.cuda.device_count()} are visible")
    if cpus <= 0:
        raise UsageError(f"--cpus must be > 0, got {cpus}")


def _check_data(exp) -> None:
    from raynas.config import resolve
    from raynas.data import check_dataset
    from raynas.experiment import trial_overrides

    seen = set()
    for over in trial_overrides(exp):
        cfg = resolve(over)
        if (cfg.dataset, cfg.data_dir) not in seen:
            seen.add((cfg.dataset, cfg.data_dir))
            check_dataset(cfg.dataset, cfg.data_dir, cfg.download)


def cmd_search(args: argparse.Namespace) -> int:
    from raynas.experiment import load_experiment
    from raynas.runner import run_experiment

    cpus = args.cpus if args.cpus is not None else float(os.cpu_count() or 1)
    gpus = args.gpus if args.gpus is not None else 0.0
    _check_resources(cpus, gpus)
    from raynas.experiment import GRID_AXES

    overrides = _overrides(args)
    grid = {axis: [overrides.pop(axis)] for axis in GRID_AXES if axis in overrides}
    exp = load_experiment(None, {"fixed": overrides, "grid": grid, "name": args.name,
                                 "resources": {"cpu": cpus, "gpu": gpus}, "tracking_uri": args.tracking_uri})
    _check_data(exp)
    summary = run_experiment(exp, args.out, address=args.address)
    for t in summary["trials"]:
        print(f"{t['method']}/{t['space']}/{t['dataset']}/seed{t['seed']}: {t['status']} after {t['epochs']} "
              f"epochs, valid_acc={t['final']['valid_acc']}")
        print(f"genotype: {t['genotype']}")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return 0 if all(t["status"] == "completed" for t in summary["trials"]) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.config import parse_set
    from raynas.experiment import load_experiment
    from raynas.runner import run_experiment

    exp = load_experiment(args.experiment, parse_set(args.set))
    if args.tracking_uri:
        exp.tracking_uri = args.tracking_uri
    _check_resources(exp.resources.cpu, exp.resources.gpu if not args.address else 0.0)
    _check_data(exp)
    out = args.out or f"runs/{exp.name}"
    summary = run_experiment(exp, out, address=args.address, yaml_text=Path(args.experiment).read_text())
    print(f"summary: {os.path.join(out, 'summary.json')}")
    return 0 if all(t["status"] != "error" for t in summary["trials"]) else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from raynas.runner import resume_experiment

    summary = resume_experiment(args.dir, address=args.address)
    print(f"summary: {os.path.join(args.dir, 'summary.json')}")
    return 0 if all(t["status"] != "error" for t in summary["trials"]) else 1


def cmd_server(args: argparse.Namespace) -> int:
    import subprocess

    from raynas.tracking import server_command

    cmd = server_command(args.host, args.port, args.backend_store, args.artifacts)
    if args.allowed_hosts:
        cmd += ["--allowed-hosts", args.allowed_hosts]
    print(f"MLflow server at http://{args.host}:{args.port}  (store {args.backend_store}, artifacts {args.artifacts})",
          flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.tracking import sync

    root = Path(args.dir) / "mlflow_pending"
    if not root.is_dir():
        raise UsageError(f"{args.dir} has no mlflow_pending/ directory: nothing to sync (pass the --out of a run)")
    sent = remaining = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        counts = sync(d, args.tracking_uri)
        sent, remaining = sent + counts.get("sent", 0), remaining + counts.get("remaining", 0)
    print(f"sent {sent} operations; {remaining} still pending")
    return 0 if remaining == 0 else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from raynas.tracking import check_reachable, compare, default_tracking_uri

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    check_reachable(uri)
    from pathlib import Path

    out = Path(args.out or f"runs/compare/{args.experiment}")
    rows = compare(uri, args.experiment, args.objective, out_dir=out)
    if not rows:
        raise UsageError(f"no finished runs with metric {args.objective!r} in experiment {args.experiment!r} at {uri}")
    print((out / "compare.md").read_text())
    print(f"written: {out / 'compare.csv'}, {out / 'compare.md'}")
    return 0


def cmd_bench_nb201(args: argparse.Namespace) -> int:
    from raynas.benchmarks import nb201 as bench

    if args.action == "export":
        n = bench.export(args.source, args.dest)
        print(f"wrote {n} architectures to {args.dest}")
    else:
        print(json.dumps(bench.NB201Table.load(args.table).query(args.arch)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="raynas", description="Differentiable NAS as Ray Tune trials, tuned with Optuna, "
                                           "tracked in MLflow.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("search", help="run one architecture search as a Ray Tune trial")
    _add_search_flags(s)
    s.add_argument("--out", default="runs/search", help="output directory (summary.json, Ray results)")
    s.add_argument("--name", default="search", help="experiment name")
    s.add_argument("--cpus", type=float, help="CPUs per trial (default: all)")
    s.add_argument("--gpus", type=float, help="GPUs per trial, fractional allowed (default: 0)")
    s.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    s.add_argument("--tracking-uri", dest="tracking_uri",
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db; none: off)")
    s.set_defaults(func=cmd_search)

    r = sub.add_parser("run", help="run an experiment file (grid x Optuna) as Ray Tune trials")
    r.add_argument("experiment", help="experiment YAML (see experiments/)")
    r.add_argument("--out", help="output directory (default runs/<name>)")
    r.add_argument("--address", help="Ray cluster address, e.g. auto or HOST:PORT (default: local instance)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment field (tune.num_samples=4) or a search field (epochs=2)")
    r.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (none: off)")
    r.set_defaults(func=cmd_run)

    sv = sub.add_parser("server", help="start an MLflow tracking server (sqlite store, proxied artifacts)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for a cluster)")
    sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--backend-store", default="mlflow.db", help="sqlite file or database URL")
    sv.add_argument("--artifacts", default="mlartifacts", help="artifact directory the server proxies")
    sv.add_argument("--allowed-hosts", dest="allowed_hosts",
                    help="Host headers MLflow 3 accepts besides localhost and private IPs, e.g. HEAD_IP:5000")
    sv.set_defaults(func=cmd_server)

    sy = sub.add_parser("sync", help="send MLflow operations a run could not deliver (server was down)")
    sy.add_argument("dir", help="the --out directory of a run")
    sy.add_argument("--tracking-uri", dest="tracking_uri", help="deliver to this URI instead of the recorded one")
    sy.set_defaults(func=cmd_sync)

    cp = sub.add_parser("compare", help="method x space x dataset table of an MLflow experiment")
    cp.add_argument("--experiment", required=True)
    cp.add_argument("--tracking-uri", dest="tracking_uri")
    cp.add_argument("--objective", default="valid_acc")
    cp.add_argument("--out", default=None, help="directory for compare.csv / compare.md (default runs/compare/NAME)")
    cp.set_defaults(func=cmd_compare)

    rs = sub.add_parser("resume", help="finish an interrupted experiment (Tuner.restore)")
    rs.add_argument("dir", help="the --out directory of the interrupted run")
    rs.add_argument("--address", help="Ray cluster address")
    rs.set_defaults(func=cmd_resume)

    b = sub.add_parser("bench", help="benchmark tables")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    nb = bsub.add_parser("nb201", help="NAS-Bench-201 table")
    nsub = nb.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ex = nsub.add_parser("export", help="write the compact CSV from the official release files")
    ex.add_argument("--from", dest="source", required=True)
    ex.add_argument("--to", dest="dest", required=True)
    ex.set_defaults(func=cmd_bench_nb201)
    q = nsub.add_parser("query", help="print the table row of one genotype string as JSON")
    q.add_argument("arch")
    q.add_argument("--table", required=True)
    q.set_defaults(func=cmd_bench_nb201)

    from raynas.genotype_cmd import register as register_genotype
    from raynas.nar.cli import register as register_rank
    from raynas.retrain import register as register_retrain

    from raynas import report

    register_genotype(sub)
    register_retrain(sub)
    register_rank(sub)
    report.register(sub)

    m = sub.add_parser("methods", help="list search methods and spaces")
    m.set_defaults(func=cmd_methods)
    return p


def cmd_methods(args: argparse.Namespace) -> int:
    from search_spaces import SPACES
    from trials import METHODS

    print("methods:", ", ".join(METHODS))
    print("spaces:", ", ".join(SPACES))
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from raynas.benchmarks.nb201 import TableError
    from raynas.config import ConfigError
    from raynas.data import DataError
    from raynas.tracking import TrackingError
    from search_spaces.nb201 import GenotypeError

    return (UsageError, ConfigError, DataError, GenotypeError, TableError, TrackingError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    handler: Callable[[argparse.Namespace], int]
    try:
        args = build_parser().parse_args(argv)
        handler = args.func
        return handler(args)
    except Exception as e:
        if isinstance(e, _user_errors()):
            msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            print(f"raynas: error: {msg}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
