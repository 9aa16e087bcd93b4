"""``raynas bench nb201 export|query``: the compact NAS-Bench-201 table (no Ray, no torch at parse time)."""

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
    return b


def cmd_bench_nb201(args: argparse.Namespace) -> int:
    from raynas.tables import nb201 as bench

    if args.action == "export":
        n = bench.export(args.source, args.dest)
        print(f"wrote {n} architectures to {args.dest}")
    else:
        print(json.dumps(bench.NB201Table.load(args.table).query(args.arch)))
    return EXIT_OK
