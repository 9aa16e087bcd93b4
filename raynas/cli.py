"""``raynas`` command line: the parser of every subcommand (``raynas.commands``) and ``main``.

Every bad input ends in one line on stderr and exit code 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys

from raynas.commands import COMMANDS
from raynas.commands.common import EXIT_USAGE, Parser, error_line, user_errors


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="raynas", description="Differentiable NAS as Ray Tune trials, tuned with Optuna, "
                                          "tracked in MLflow.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines around a one-line error
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "quiet"):  # a command with progress lines: (-v /) --quiet (raynas.console)
            from raynas.console import configure

            configure(getattr(args, "verbose", False), args.quiet)
        return args.func(args)
    except Exception as e:
        if isinstance(e, user_errors()):
            print(error_line(e), file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
