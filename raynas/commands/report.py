"""``raynas report``: a study report (md, self-contained html) over experiment directories, attached to MLflow."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from raynas.commands.common import EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``raynas report`` to the CLI's subparsers."""
    p = subparsers.add_parser("report", help="study report (md, self-contained html) over experiment directories")
    p.add_argument("sources", nargs="+", metavar="DIR_OR_EXPERIMENT",
                   help="experiment output dirs (with summary.json), experiment YAMLs or names under runs/; "
                        "raynas retrain output dirs join their test accuracy to the trials")
    p.add_argument("--format", default="md,html", help="comma-separated: md, html (default both)")
    p.add_argument("--out", help="report directory (default: FIRST_DIR/report)")
    p.add_argument("--collapse-rule", dest="collapse_rule", default="skip_count>=4",
                   help="e.g. skip_count>=4, param_free_count>5 (normal cell on DARTS-family spaces)")
    p.add_argument("--objective", help="metric to compare (default: nb201 test acc, else the experiment's)")
    p.add_argument("--tracking-uri", dest="tracking_uri",
                   help="attach the report to the experiment's MLflow parent run (default, as the runner: the "
                        "experiment's tracking_uri, $MLFLOW_TRACKING_URI, ./mlflow.db when it exists)")
    p.add_argument("--quiet", action="store_true", help="no progress lines: the files written and errors only")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from raynas.console import StageProgress, level
    from raynas.report import attach_to_mlflow, build_report, resolve_source, tracking_target

    dirs = [resolve_source(s) for s in args.sources]
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    out = Path(args.out) if args.out else dirs[0] / "report"
    quiet = args.quiet or level() == "quiet"
    progress = StageProgress("report", quiet=quiet)  # stdout: stderr is for the one error line
    t0 = time.monotonic()
    if not quiet:
        print(f"report: reading {len(dirs)} experiment director{'y' if len(dirs) == 1 else 'ies'}, writing "
              f"{', '.join(formats)} and plots to {out} ...", flush=True)
    try:
        report = build_report(dirs, out, formats, args.collapse_rule, args.objective, progress)
    finally:
        progress.close()
    print(f"report: {len(report['trials'])} trials, {len(report.get('plots', {}))} plots in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    for kind, path in report["files"].items():
        print(f"{kind}: {path}")
    targets = []
    for d in dirs:
        if not (d / "summary.json").is_file():  # a retrain directory: its runs are not the report's home
            continue
        uri, name = tracking_target(d, args.tracking_uri)
        if uri and (uri, name) not in targets:
            targets.append((uri, name))
    for i, (uri, name) in enumerate(targets, 1):
        progress("attaching to MLflow", i, len(targets), name)
        try:
            run_id = attach_to_mlflow(out, uri, name)
        finally:
            progress.close()
        if run_id:
            print(f"attached to MLflow run {run_id} ({name})")
    return EXIT_OK
