"""``raynas genotype``: parameters, FLOPs, a drawing and the NB201 row of one genotype, without training.

The numbers come from ``raynas.genotype_info.describe``; this module reads the flags and prints them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from raynas.commands.common import EXIT_OK, read_genotype_arg
from raynas.genotype_info import SHAPES, SPACES, describe


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``raynas genotype`` to the CLI's subparsers."""
    p = subparsers.add_parser("genotype", help="parameters, FLOPs and a cell drawing of one genotype",
                              description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, choices=SPACES)
    p.add_argument("--genotype", required=True, metavar="TEXT|FILE",
                   help="DARTS Genotype(...) text or JSON, an NB201 |op~0|+... string, or a file holding one")
    p.add_argument("--dataset", default="cifar10", choices=list(SHAPES),
                   help="input resolution and classes; imagenet = the 224x224 mobile network (default cifar10)")
    p.add_argument("--layers", type=int, help="cells (DARTS: 20, ImageNet 14) or NB201 cells per stage (5)")
    p.add_argument("--channels", type=int, help="initial channels C (DARTS: 36, ImageNet 48, NB201 16)")
    p.add_argument("--auxiliary", action="store_true", help="build the auxiliary head too (params reported apart)")
    p.add_argument("--plot", metavar="OUT.png|OUT.svg", help="draw the cell(s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nb201-table", dest="nb201_table", metavar="PATH", help="NB201 CSV: add the benchmark row")
    p.set_defaults(func=cmd_genotype)
    return p


def cmd_genotype(args: argparse.Namespace) -> int:
    info = describe(args.space, read_genotype_arg(args.genotype), args.dataset, args.layers, args.channels,
                    args.auxiliary, args.plot, args.nb201_table)
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    depth = f"N={info['layers']} cells per stage" if args.space == "nb201" else f"{info['layers']} cells"
    c, r, _ = info["input"]
    print(f"genotype: {info['genotype']}")
    print(f"network:  {info['network']}, {depth}, C={info['channels']}; input {r}x{r}x{c}, "
          f"{info['num_classes']} classes ({info['dataset']})")
    aux = f" ({info['params_with_aux_m']:.3f}M with the auxiliary head)" if "params_with_aux_m" in info else ""
    print(f"params:   {info['params_m']:.3f}M ({info['params']:,}; auxiliary head excluded){aux}")
    print(f"FLOPs:    {info['flops_m']:.1f}M per image (multiply-accumulates of Conv2d and Linear)")
    print(f"skips:    {info['skip_count']}; parameter-free ops: {info['param_free_count']}")
    if info["degenerate_reason"]:
        print(f"warning:  degenerate cell ({info['degenerate_reason']})")
    if "plot" in info:
        print(f"plot:     {info['plot']}")
    if "nb201" in info:
        print(f"nb201:    {json.dumps(info['nb201'])}")
    return EXIT_OK
