"""An experiment's output directory (``--out``): refused when it holds another experiment, locked for the
life of one run, and written atomically.

Results are lost two ways without this: a second experiment started on the same ``--out`` replaces the
first one's ``summary.json``/``experiment.json`` (and ``resume`` then points at the new one), and two runs
started at once on one ``--out`` both write it. ``check_output`` refuses the first before anything is
created; ``claim`` takes an exclusive ``flock`` (released by the kernel when the process dies, so a killed
run never leaves a stale lock) for the second. Files that ``resume`` and ``retrain`` trust are written
to a temporary file and renamed, so a full disk never leaves one half-written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_FILE = ".raynas.lock"
STATE_FILE = "experiment.json"
SUMMARY_FILE = "summary.json"
#: a searcher comparison's record (``raynas run`` of a study file, ``raynas bench nb201 simulate --out``)
BENCH_FILE = "bench.json"
#: a retrain study's record (``raynas run`` of a study file with a ``retrain:`` block)
RETRAIN_STUDY_FILE = "retrain_study.json"
#: what a run writes into ``--out``; ``--force`` removes exactly these before the new run starts
OWNED = (STATE_FILE, SUMMARY_FILE, BENCH_FILE, RETRAIN_STUDY_FILE, "ray_results", "mlflow_pending", "optuna.db")
#: a run needs room for checkpoints and results: refuse an --out with less free (env RAYNAS_MIN_FREE_MB)
MIN_FREE_MB = 64
#: errors that mean the disk (or a quota, or RLIMIT_FSIZE) is full rather than a bug
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class OutputError(Exception):
    """The output directory cannot be used as asked; the message is one line naming it and what to do."""


def disk_error(e: OSError, fallback: str | Path) -> OutputError:
    """An ``OSError`` from a write as one line naming the file (``fallback`` when the error names none)."""
    where = e.filename or fallback
    what = "is full" if e.errno in FULL else "cannot be written"
    return OutputError(f"{where}: {what} ({e.strerror or e.__class__.__name__}); free space or pass another --out")


def write_atomic(path: str | Path, text: str) -> None:
    """``path`` holds ``text`` in full or is left as it was: write a sibling temp file, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from None


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def read_json(path: str | Path, what: str = "file") -> Any:
    """A JSON file the user hands back (``summary.json``, ``experiment.json``): one line if it is cut or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputError(f"{path}: {what} is truncated or not JSON ({e.__class__.__name__}); "
                          "restore it or start a new run") from None
    except IsADirectoryError:
        raise OutputError(f"{path}: {what} is a directory") from None


def identity(experiment: dict[str, Any]) -> Any:
    """An experiment's settings as ``experiment.json`` stores them (JSON round trip: tuples become lists)."""
    return json.loads(json.dumps(experiment, default=str))


def check_output(out: str | Path, experiment: dict[str, Any] | None = None, *, force: bool = False) -> None:
    """Refuse, before anything is created, an ``--out`` that is a file, cannot be created, or holds a
    different experiment (or the results of a run that left no ``experiment.json``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a directory; pass a directory")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: {parent or out} is not a writable directory")
    need_mb = float(os.environ.get("RAYNAS_MIN_FREE_MB", MIN_FREE_MB))
    free_mb = shutil.disk_usage(parent).free / 2 ** 20
    if free_mb < need_mb:
        raise OutputError(f"--out {out}: its filesystem is full ({free_mb:.1f} MiB free, a run needs "
                          f"{need_mb:g}); free space or pass another --out")
    if force or not out.is_dir():
        return
    state, summary = out / STATE_FILE, out / SUMMARY_FILE
    if state.is_file():
        old = read_json(state, STATE_FILE)
        old_exp = old.get("experiment") if isinstance(old, dict) else None
        if experiment is None or not isinstance(old_exp, dict) or old_exp != identity(experiment):
            name = old_exp.get("name") if isinstance(old_exp, dict) else "?"
            raise OutputError(f"--out {out} holds another experiment ({name!r}); pass a new --out, "
                              f"`raynas resume {out}` to finish it, or --force to replace it")
    elif summary.exists() or any((out / f).exists() for f in (BENCH_FILE, RETRAIN_STUDY_FILE)) \
            or _holds_results(out / "ray_results"):
        raise OutputError(f"--out {out} holds the results of another run; pass a new --out or --force to replace them")


def _holds_results(ray_results: Path) -> bool:
    """Ray's results directory with anything in it (the cluster check's empty directory is not a run's)."""
    return ray_results.is_dir() and any(not p.name.startswith(".raynas-shared-") for p in ray_results.iterdir())


def clear_owned(out: Path) -> None:
    """``--force``: remove what an earlier run wrote into ``out`` (only the names a run writes)."""
    for name in OWNED:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


@contextmanager
def claimed(out: str | Path, experiment: dict[str, Any] | None = None, *, force: bool = False) -> Iterator[Path]:
    """``check_output``, then ``claim`` and the check again under the lock (a run on ``out`` may have just
    ended), then ``--force``'s clearing: the whole protocol of a command that writes into ``--out``."""
    check_output(out, experiment, force=force)
    with claim(out) as path:
        check_output(out, experiment, force=force)
        if force:
            clear_owned(path)
        yield path


@contextmanager
def claim(out: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``out`` (created if missing) while the block runs; a second run on the
    same ``out`` is refused with one line instead of writing beside the first."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / LOCK_FILE, "a+")
    except OSError as e:
        raise disk_error(e, out) from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise OutputError(f"--out {out} is in use by another raynas run (pid {pid}); wait for it to end "
                              "or pass another --out") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError as e:
            raise disk_error(e, out / LOCK_FILE) from None
        try:
            yield out
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()
