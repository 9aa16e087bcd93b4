"""``raynas sync``: deliver the MLflow operations a run journalled while the server was down."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raynas.commands.common import EXIT_FAILED, EXIT_OK, UsageError


def register(subparsers: Any) -> argparse.ArgumentParser:
    sy = subparsers.add_parser("sync", help="send MLflow operations a run could not deliver (server was down)")
    sy.add_argument("dir", help="the --out directory of a run")
    sy.add_argument("--tracking-uri", dest="tracking_uri", help="deliver to this URI instead of the recorded one")
    sy.set_defaults(func=cmd_sync)
    return sy


def cmd_sync(args: argparse.Namespace) -> int:
    from raynas.tracking import sync

    root = Path(args.dir) / "mlflow_pending"
    if not root.is_dir():
        raise UsageError(f"{args.dir} has no mlflow_pending/ directory: nothing to sync (pass the --out of a run)")
    sent = remaining = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        counts = sync(d, args.tracking_uri)
        sent, remaining = sent + counts.get("sent", 0), remaining + counts.get("remaining", 0)
    _update_summary(Path(args.dir), remaining)
    print(f"sent {sent} operations; {remaining} still pending")
    return EXIT_OK if remaining == 0 else EXIT_FAILED


def _update_summary(out: Path, remaining: int) -> None:
    """``summary.json`` says how many operations are still pending: after a sync, the new count."""
    from raynas.outdir import SUMMARY_FILE, read_json, write_json

    path = out / SUMMARY_FILE
    if not path.is_file():
        return
    summary = read_json(path, SUMMARY_FILE)
    if isinstance(summary, dict) and isinstance(summary.get("tracking"), dict):
        summary["tracking"]["pending"] = remaining
        write_json(path, summary)
