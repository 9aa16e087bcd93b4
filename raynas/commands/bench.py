"""``raynas bench nb201 export|query|simulate``: the compact NAS-Bench-201 table, and searchers compared on it
in simulated time (no Ray, no torch at parse time)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raynas.commands.common import EXIT_OK, Parser


def register(subparsers: Any) -> argparse.ArgumentParser:
    b = subparsers.add_parser("bench", help="benchmark tables")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=Parser)
    nb = bsub.add_parser("nb201", help="NAS-Bench-201 table")
    nsub = nb.add_subparsers(dest="action", required=True, parser_class=Parser)
    ex = nsub.add_parser("export", help="write the compact CSV from the official release files")
    ex.add_argument("--from", dest="source", required=True)
    ex.add_argument("--to", dest="dest", required=True)
    ex.set_defaults(func=cmd_bench_nb201)
    q = nsub.add_parser("query", help="print the table row of one genotype string as JSON")
    q.add_argument("arch")
    q.add_argument("--table", required=True)
    q.set_defaults(func=cmd_bench_nb201)
    s = nsub.add_parser("simulate", help="compare searchers (random, rea, tpe, nar) on the table in simulated time")
    s.add_argument("study", nargs="?", help="study YAML (bench:, scheduler:, tune: blocks); flags override it")
    s.add_argument("--searcher", help="random | rea | tpe | nar, or a comma-separated list of them")
    s.add_argument("--scheduler",
                   help="fifo (default) | asha (stops cells at 12 epochs) | hyperband (ASHA and full-length brackets)")
    s.add_argument("--reduction-factor", dest="reduction_factor", type=float, help="ASHA's and Hyperband's (default 3)")
    s.add_argument("--budget", type=int, help="queries (cells evaluated) per run")
    s.add_argument("--time-budget", dest="time_budget", type=float, help="simulated seconds per run")
    s.add_argument("--seeds", help="e.g. 0-19 or 0,1,2 (default 0)")
    s.add_argument("--table", help="the NB201 CSV (raynas bench nb201 export)")
    s.add_argument("--dataset", help="cifar10 (default) | cifar100 | imagenet16")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any study field, e.g. bench.options.nar.refit_every=50")
    s.add_argument("--backend", default="sim", help="sim (default, in-process) | tune (real Ray Tune trials)")
    s.add_argument("--workers", type=int, default=1, help="simulator processes (default 1)")
    s.add_argument("--json", help="write every query of every run and the table as JSON")
    s.add_argument("--plot", help="write the anytime curves as PNG")
    s.add_argument("--markdown", help="write the table as Markdown")
    s.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (none: off)")
    s.set_defaults(func=cmd_bench_simulate)
    return b


def cmd_bench_nb201(args: argparse.Namespace) -> int:
    from raynas.tables import nb201 as bench

    if args.action == "export":
        n = bench.export(args.source, args.dest)
        print(f"wrote {n} architectures to {args.dest}")
    else:
        print(json.dumps(bench.NB201Table.load(args.table).query(args.arch)))
    return EXIT_OK


def parse_seed_ranges(text: str) -> list[int]:
    """``0-19``, ``0,3,5-7``: distinct non-negative integers, in the order given."""
    from raynas.config import ConfigError

    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds expects integers and ranges like 0-19 or 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def study_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as a nested study dict (only those given), ``--set`` first so flags win."""
    from raynas.config import deep_merge, parse_set

    bench: dict[str, Any] = {}
    if args.searcher:
        bench["searchers"] = [n.strip() for n in args.searcher.split(",") if n.strip()]
    for key in ("budget", "time_budget", "table", "dataset"):
        if getattr(args, key) is not None:
            bench[key] = getattr(args, key)
    if args.seeds:
        bench["seeds"] = parse_seed_ranges(args.seeds)
    if args.budget is not None and args.time_budget is None:
        bench["time_budget"] = 0.0
    if args.time_budget is not None and args.budget is None:
        bench["budget"] = 0
    if bench.get("budget"):
        bench["budgets"] = [b for b in (50, 100, 300, 1000) if b < bench["budget"]] + [bench["budget"]]
    over: dict[str, Any] = {"bench": bench}
    if args.scheduler or args.reduction_factor:
        over["scheduler"] = {k: v for k, v in (("type", args.scheduler), ("reduction_factor", args.reduction_factor))
                             if v is not None}
    if args.tracking_uri:
        over["tracking_uri"] = args.tracking_uri
    return deep_merge(parse_set(args.set), over)


def run_and_report(study: Any, backend: str, workers: int = 1, out: str | None = None, json_path: str | None = None,
                   plot_path: str | None = None, md_path: str | None = None, yaml_text: str | None = None) -> int:
    """Run a study, print its table and costs, write the files asked for, log it to MLflow."""
    import os

    from raynas.commands.common import UsageError
    from raynas.searchers.study import run_study, write_outputs

    if backend not in ("sim", "tune"):
        raise UsageError(f"--backend must be sim or tune, got {backend!r}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    result = run_study(study, backend, workers, out)
    print(write_outputs(result, json_path, plot_path, md_path))
    opt = result["optimum"]
    print(f"best-validation cell of the table: test {opt['test_acc']:.2f} "
          f"(the table's best test accuracy: {opt['best_test_acc']:.2f})")
    for name in study.bench.searchers:
        runs = [d for d in result["runs"] if d["searcher"] == name]
        cost = f"{name}: {sum(d['wall_s'] for d in runs):.1f} s wall"
        if "cpu_s" in runs[0]:
            cost += f", {sum(d['cpu_s'] for d in runs):.1f} s CPU"
        if "refit_cpu_s" in runs[0]:
            cost += (f" ({sum(d['refits'] for d in runs)} ranker refits, "
                     f"{sum(d['refit_cpu_s'] for d in runs):.1f} s CPU)")
        print(cost)
    print(f"total: {result['wall_s']:.1f} s wall, {len(result['runs'])} runs")
    uri = study.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        from raynas.tracking import default_tracking_uri

        uri = default_tracking_uri()
    if uri.lower() != "none":
        from raynas.searchers.tracking import log_study

        files = tuple(p for p in (plot_path, md_path, json_path) if p)
        parent = log_study(uri, result, yaml_text, files)
        print(f"MLflow: experiment {study.name}, parent run {parent} ({uri})")
    return EXIT_OK


def cmd_bench_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.searchers.study import load_study

    study = load_study(args.study, study_overrides(args))
    return run_and_report(study, args.backend, args.workers, None, args.json, args.plot, args.markdown,
                          Path(args.study).read_text() if args.study else None)
