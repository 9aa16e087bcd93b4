"""``raynas server``: an MLflow tracking server (sqlite store, proxied artifacts) in the foreground.

The server runs in its own process group, and SIGTERM, SIGINT or SIGHUP to ``raynas server`` stops that
whole group and every process under it (MLflow starts uvicorn workers and job consumers): nothing is
left holding the port or the database after ``raynas server`` exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from raynas.commands.common import EXIT_OK, UsageError


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


def check_server_args(host: str, port: int, backend_store: str) -> None:
    """Refuse, before MLflow creates its database, a port out of range or taken, and a store it cannot write."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except socket.gaierror:
        raise UsageError(f"--host {host!r} is not an address of this machine") from None
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    if "://" not in backend_store:
        parent = Path(backend_store).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(f"--backend-store {backend_store}: {parent} is not a writable directory")


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc), including those that left its process group; none
    where there is no /proc (macOS: the process group alone is stopped)."""
    children: dict[int, list[int]] = {}
    if not Path("/proc").is_dir():
        return []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop_group(proc: Any, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group and every descendant; SIGKILL what is left after ``grace_s``."""
    pids = [proc.pid, *descendants(proc.pid)]

    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    send(signal.SIGTERM)
    end = time.time() + grace_s
    while time.time() < end and (proc.poll() is None or any(_alive(p) for p in pids[1:])):
        time.sleep(0.1)
    send(signal.SIGKILL)
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmd_server(args: argparse.Namespace) -> int:
    import subprocess

    from raynas.tracking import server_command

    check_server_args(args.host, args.port, args.backend_store)
    cmd = server_command(args.host, args.port, args.backend_store, args.artifacts)
    if args.allowed_hosts:
        cmd += ["--allowed-hosts", args.allowed_hosts]
    print(f"MLflow server at http://{args.host}:{args.port}  (store {args.backend_store}, artifacts {args.artifacts})",
          flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_group(proc)
        return EXIT_OK
