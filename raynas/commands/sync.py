"""``raynas sync``: deliver the MLflow operations a run journalled while the server was down."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.commands.common import EXIT_FAILED, EXIT_OK, UsageError


def register(subparsers: Any) -> argparse.ArgumentParser:
    sy = subparsers.add_parser("sync", help="send MLflow operations a run could not deliver (server was down)")
    sy.add_argument("dir", help="the --out directory of a run")
    sy.add_argument("--tracking-uri", dest="tracking_uri", help="deliver to this URI instead of the recorded one")
    sy.set_defaults(func=cmd_sync)
    return sy


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
    return EXIT_OK if remaining == 0 else EXIT_FAILED
