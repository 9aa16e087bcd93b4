"""``raynas methods``: the search methods and spaces this install knows."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.commands.common import EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    m = subparsers.add_parser("methods", help="list search methods and spaces")
    m.set_defaults(func=cmd_methods)
    return m


def cmd_methods(args: argparse.Namespace) -> int:
    from search_spaces import SPACE_NAMES
    from trials.catalog import method_names

    print("methods:", ", ".join(method_names()))  # read from the method modules' source: no torch
    print("spaces:", ", ".join(SPACE_NAMES))
    return EXIT_OK
