"""A disk that fills up while Ray trials run: each trial stops once (retrying cannot free space), the
experiment is interrupted the way Ctrl+C interrupts it (its state saved, every trial resumable), and the
driver ends with one line naming the full path.

Without this, a checkpoint that did not fit failed the trial, Tune retried it ``max_failures`` times (a
traceback each), half-copied checkpoint files stayed beside the good ones and the run ended in a traceback.
The trial side is in ``raynas.trainable.RunTrainable`` (``save``: the failed checkpoint is removed and the
trial reports status ``disk_full``); the driver side is :class:`DiskFullWatch`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback

from raynas.outdir import FULL, OutputError

STATUS = "disk_full"


def is_full(e: BaseException) -> bool:
    """An ``OSError`` meaning the disk, a quota or ``RLIMIT_FSIZE`` is full (pyarrow's copies included:
    they raise ``OSError`` with the errno of the failed write)."""
    return isinstance(e, OSError) and e.errno in FULL


def full_reason(e: OSError, where: str | Path) -> str:
    """``PATH: is full (No space left on device)``: the path written, with the plain reason."""
    return f"{e.filename or where}: is full ({os.strerror(e.errno) if e.errno else e})"


#: the first full-disk line of each output directory's run in this driver (a restored Tuner unpickles its
#: own copy of the callback, so the driver reads the line here rather than from the instance it made)
_REASONS: dict[str, str] = {}


class _DropFullDisk(logging.Filter):
    """Ray's log records of a full disk (its own retries of state snapshots, the interrupt notice) are
    noise once raynas reports the full disk in one line."""

    def __init__(self, out: str):
        super().__init__()
        self.out = out

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if (exc is not None and is_full(exc)) or "No space left on device" in text or "Disk quota exceeded" in text:
            return False
        return not (self.out in _REASONS and ("Stop signal received" in text or "has been interrupted" in text
                                              or "Trials did not complete" in text))


class DiskFullWatch(Callback):
    """A Tune callback: the first trial result with status ``disk_full`` interrupts the experiment with
    Tune's own resumable stop (SIGUSR1, which ``tune.run`` handles like Ctrl+C); :func:`raise_if_full`
    then ends the driver with that trial's one line."""

    def __init__(self, out: str | Path):
        self.out = str(out)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("status") != STATUS or self.out in _REASONS:
            return
        _REASONS[self.out] = result.get("error") or f"{self.out}: is full"
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler (it runs in the main thread)
            os.kill(os.getpid(), signal.SIGUSR1)


@contextmanager
def quiet(out: str | Path) -> Iterator[None]:
    """While the block (``tuner.fit()``) runs, Ray's full-disk log records and tracebacks are dropped."""
    _REASONS.pop(str(out), None)
    handlers = [h for name in ("", "ray", "ray.tune") for h in logging.getLogger(name).handlers]
    drop = _DropFullDisk(str(out))
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)


def raise_if_full(out: str | Path) -> None:
    """One line if a trial of this run found the disk full (the summary is not written)."""
    reason = _REASONS.pop(str(out), None)
    if reason is not None:
        raise OutputError(f"{reason}; the run stopped with nothing half-written kept: free space, then "
                          f"`raynas resume {out}`")



def watched(out: str | Path, fit: Callable[[], Any]) -> Any:
    """``fit()`` (a Tuner's, whose run config has a :class:`DiskFullWatch`) with Ray's full-disk noise
    dropped; a trial that found the disk full then stops the run with one line."""
    with quiet(out):
        grid = fit()
    raise_if_full(out)
    return grid
