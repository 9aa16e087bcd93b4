"""``raynas compare``: the method x space x dataset table of an MLflow experiment."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raynas.commands.common import EXIT_OK, UsageError


def register(subparsers: Any) -> argparse.ArgumentParser:
    cp = subparsers.add_parser("compare", help="method x space x dataset table of an MLflow experiment")
    cp.add_argument("--experiment", required=True)
    cp.add_argument("--tracking-uri", dest="tracking_uri")
    cp.add_argument("--objective", default="valid_acc")
    cp.add_argument("--out", default=None, help="directory for compare.csv / compare.md (default runs/compare/NAME)")
    cp.set_defaults(func=cmd_compare)
    return cp


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raynas.tracking import check_reachable, compare, default_tracking_uri

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    db = uri[len("sqlite:///"):].split("?", 1)[0] if uri.lower().startswith("sqlite:///") else None
    if db and not Path(db).is_file():  # MLflow would create an empty store just to find nothing in it
        raise UsageError(f"no tracking store at {db}; pass --tracking-uri of the runs (e.g. http://HOST:5000)")
    check_reachable(uri)
    out = Path(args.out or f"runs/compare/{args.experiment}")
    rows = compare(uri, args.experiment, args.objective, out_dir=out)
    if not rows:
        raise UsageError(f"no finished runs with metric {args.objective!r} in experiment {args.experiment!r} at {uri}")
    print((out / "compare.md").read_text())
    print(f"written: {out / 'compare.csv'}, {out / 'compare.md'}")
    return EXIT_OK
