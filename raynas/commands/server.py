"""``raynas server``: an MLflow tracking server (sqlite store, proxied artifacts) in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

from raynas.commands.common import EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    sv = subparsers.add_parser("server", help="start an MLflow tracking server (sqlite store, proxied artifacts)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for a cluster)")
    sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--backend-store", default="mlflow.db", help="sqlite file or database URL")
    sv.add_argument("--artifacts", default="mlartifacts", help="artifact directory the server proxies")
    sv.add_argument("--allowed-hosts", dest="allowed_hosts",
                    help="Host headers MLflow 3 accepts besides localhost and private IPs, e.g. HEAD_IP:5000")
    sv.set_defaults(func=cmd_server)
    return sv


def cmd_server(args: argparse.Namespace) -> int:
    import subprocess

    from raynas.tracking import server_command

    cmd = server_command(args.host, args.port, args.backend_store, args.artifacts)
    if args.allowed_hosts:
        cmd += ["--allowed-hosts", args.allowed_hosts]
    print(f"MLflow server at http://{args.host}:{args.port}  (store {args.backend_store}, artifacts {args.artifacts})",
          flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return EXIT_OK
