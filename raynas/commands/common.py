"""What every ``raynas`` subcommand shares: the parser class, exit codes, and which errors are the user's.

Every bad input ends in one line on stderr and exit code 2, before Ray starts: argparse's own errors go
through ``Parser.error`` as a ``UsageError``, and ``main`` maps every error of ``user_errors()`` to that line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input detected by the CLI itself."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit 2 (argparse alone prints the usage block)."""

    def error(self, message: str) -> None:
        raise UsageError(f"{self.prog}: {message}")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (exit 2, one line), imported only when an error is raised."""
    from raynas.tables.nb201 import TableError
    from raynas.config import ConfigError
    from raynas.data import DataError
    from raynas.outdir import OutputError
    from raynas.tracking import TrackingError
    from search_spaces.nb201 import GenotypeError

    return (UsageError, ConfigError, DataError, GenotypeError, OutputError, TableError, TrackingError,
            FileNotFoundError)


def error_line(e: BaseException) -> str:
    """The one stderr line of a user error."""
    msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    return f"raynas: error: {msg}"


def add_force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace the results of another experiment already in --out (default: refuse)")


def trials_exit_code(trials: list[dict[str, Any]], *, all_completed: bool = False) -> int:
    """``EXIT_OK`` when no trial errored (``all_completed``: when every trial completed), else ``EXIT_FAILED``."""
    ok = all(t["status"] == "completed" if all_completed else t["status"] != "error" for t in trials)
    return EXIT_OK if ok else EXIT_FAILED


def add_resource_flags(p: argparse.ArgumentParser) -> None:
    """``--cpus``, ``--gpus`` per trial and the Ray ``--address`` (read back with ``cpus_gpus``)."""
    p.add_argument("--cpus", type=float, help="CPUs per trial (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per trial (default: its whole CPUs, so 1)")
    p.add_argument("--gpus", type=float, help="GPUs per trial, fractional allowed (default: 0)")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")


def cpus_gpus(args: argparse.Namespace) -> tuple[float, float]:
    """``--cpus`` (default 1: one torch thread per trial, see ``raynas.threads``) and ``--gpus`` (default 0)."""
    cpus = args.cpus if args.cpus is not None else 1.0
    return cpus, args.gpus if args.gpus is not None else 0.0


def read_genotype_arg(value: str) -> str:
    """``--genotype`` is the text itself or a file holding it."""
    try:
        if Path(value).is_file():
            return Path(value).read_text().strip()
    except UnicodeDecodeError:
        raise UsageError(f"--genotype {value}: not a UTF-8 text file (pass a genotype or a file holding one)") from None
    except OSError:  # e.g. genotype text longer than a file name may be
        pass
    return value.strip()


def check_resources(cpus: float, gpus: float, address: str | None = None, threads: int | None = None) -> None:
    """Refuse a trial size this machine cannot give, before Ray starts (on a cluster, ``address``, Ray
    decides about CPUs)."""
    if gpus > 0 and address is None:  # on a cluster: the cluster's GPUs (check_cluster_devices)
        import torch
        if not torch.cuda.is_available():
            raise UsageError(f"{gpus} GPUs per trial requested but no GPU is visible here; use 0 or run on a GPU node")
        if gpus > torch.cuda.device_count():
            raise UsageError(f"{gpus} GPUs per trial requested but only {torch.cuda.device_count()} are visible")
    if cpus <= 0:
        raise UsageError(f"--cpus must be > 0, got {cpus}")
    if address is None and cpus > (os.cpu_count() or 1):
        raise UsageError(f"--cpus {cpus} per trial (resources.cpu) but this machine has {os.cpu_count()}; a trial "
                         "would wait forever (pass --address for a cluster)")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")


def on_cluster(address: str | None) -> None:
    """Before the experiment is read: with ``--address``, ``cuda`` devices are checked on the cluster."""
    if address:
        from raynas.checks import devices_on_cluster
        devices_on_cluster()


def check_cluster_devices(address: str | None, exp: Any) -> None:
    """With ``--address``: the cluster has the GPUs the trials' ``cuda`` devices ask for (one line if not)."""
    if not address:
        return
    from raynas.cluster import check_cluster_gpus
    from raynas.config import resolve
    from raynas.experiment import trial_overrides

    check_cluster_gpus(address, {resolve(o).device for o in trial_overrides(exp)}, exp.resources.gpu)


def check_data(exp: Any) -> None:
    """Every dataset of the experiment's trials is there (or may be downloaded), before Ray starts."""
    from raynas.config import resolve
    from raynas.data import check_dataset
    from raynas.experiment import trial_overrides

    seen, tables = set(), set()
    for over in trial_overrides(exp):
        cfg = resolve(over)
        if (cfg.dataset, cfg.data_dir) not in seen:
            seen.add((cfg.dataset, cfg.data_dir))
            check_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        if cfg.nb201_table and cfg.nb201_table not in tables:  # read once here, not in every trial
            from raynas.tables.nb201 import NB201Table
            tables.add(cfg.nb201_table)
            NB201Table.load(cfg.nb201_table)


def parse_seeds(text: str, *, malformed: str = "--seeds expects comma-separated integers like 0,1,2, got {!r}",
                repeated: str = "--seeds needs distinct integers, got {!r}") -> list[int]:
    """``--seeds 0,1,2`` as distinct integers; the two messages (formatted with ``text``) are each command's own."""
    from raynas.config import ConfigError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(malformed.format(text)) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(repeated.format(text))
    return seeds
