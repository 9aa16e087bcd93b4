"""Intra-epoch progress from trials to the driver, through one small Ray actor (the board).

Tune hears from a class trainable once per ``step()`` (one epoch), which can be minutes; inside the epoch
the run calls its ``progress`` sink (``trials.epochs.EpochRun.tick``) every couple of seconds. The sink
sends the numbers, fire-and-forget, to a named ``ProgressBoard`` actor that the driver starts next to the
Tuner; the console reporter (``raynas.console``) reads the board when it redraws. An actor, not files,
so that trials on other nodes of a cluster are seen too. A lost board only costs the live lines.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

class _Board:
    """The latest progress dict per trial id (``put``), read whole by the driver (``snapshot``)."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}

    def put(self, trial_id: str, info: dict[str, Any]) -> None:
        self.state[trial_id] = info

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.state


_HANDLES: dict[str, Any] = {}  # board name -> actor handle, in this process (never pickled)


def board_name(key: str) -> str:
    """The board's actor name for an output directory: the same after a restore (Tune pickles the reporter,
    which holds only this name), distinct for distinct directories."""
    return f"raynas-progress-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def start_board(key: str, wanted: bool = True) -> str | None:
    """Start the board of this driver (Ray must be up) and return its name, or None unless ``wanted``
    (``raynas.console.wants_board``: nothing reads it when quiet or verbose)."""
    import ray

    if not wanted:
        return None
    name = board_name(key)
    # the handle is kept: an actor whose handles are all gone is stopped by Ray
    _HANDLES[name] = ray.remote(num_cpus=0, max_restarts=0)(_Board).options(name=name, get_if_exists=True).remote()
    return name


def _handle(name: str) -> Any:
    import ray

    if name not in _HANDLES:
        _HANDLES[name] = ray.get_actor(name)
    return _HANDLES[name]


def read_board(name: str | None, timeout_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """The board's state, or ``{}`` when there is none or it does not answer in time (the console then
    shows finished epochs only)."""
    import ray

    if name is None:
        return {}
    try:
        return ray.get(_handle(name).snapshot.remote(), timeout=timeout_s)
    except Exception:
        _HANDLES.pop(name, None)
        return {}


def stop_board(name: str | None) -> None:
    import ray

    if name is not None:
        try:
            ray.kill(_handle(name))
        except Exception:
            pass
        _HANDLES.pop(name, None)


def fit(tuner: Any, board: str | None) -> Any:
    """``tuner.fit()``, then the board stops and the progress lines are flushed: the summary comes last."""
    import sys

    try:
        return tuner.fit()
    finally:
        stop_board(board)
        sys.stderr.flush()


class TrialSink:
    """The ``progress`` sink of one trial's run: adds the trial id and sends to the board by name."""

    def __init__(self, board: str, trial_id: str, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.board, self.trial_id, self.handle = board, trial_id, None
        self.transform = transform or (lambda info: info)
        self.failed_at = -60.0

    def __call__(self, info: dict[str, Any]) -> None:
        import ray

        if self.handle is None:
            if time.monotonic() - self.failed_at < 30:
                return
            try:
                self.handle = ray.get_actor(self.board)
            except Exception:  # no board (driver without one, or it is gone): try again later
                self.failed_at = time.monotonic()
                return
        self.handle.put.remote(self.trial_id, self.transform(info))
