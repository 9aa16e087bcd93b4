"""``raynas resume``: finish an interrupted experiment (``Tuner.restore``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raynas.console import add_flags
from raynas.commands.common import trials_exit_code


def register(subparsers: Any) -> argparse.ArgumentParser:
    rs = subparsers.add_parser("resume", help="finish an interrupted experiment (Tuner.restore)")
    rs.add_argument("dir", help="the --out directory of the interrupted run")
    rs.add_argument("--address", help="Ray cluster address")
    add_flags(rs)
    rs.set_defaults(func=cmd_resume)
    return rs


def cmd_resume(args: argparse.Namespace) -> int:
    from raynas.runner import resume_experiment

    summary = resume_experiment(args.dir, address=args.address)
    print(f"summary: {os.path.join(args.dir, 'summary.json')}")
    return trials_exit_code(summary["trials"])
