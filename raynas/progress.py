"""Intra-epoch progress from trials to the driver, through one small Ray actor (the board).

Tune hears from a class trainable once per ``step()`` (one epoch), which can be minutes; inside the epoch
the run calls its ``progress`` sink (``trials.epochs.EpochRun.tick``) every couple of seconds. The sink
sends the numbers, fire-and-forget, to a named ``ProgressBoard`` actor that the driver starts next to the
Tuner; the console reporter (``raynas.console``) reads the board when it redraws. An actor, not files,
so that trials on other nodes of a cluster are seen too. A lost board only costs the live lines.
A trial that runs in parts (a seed group's seeds, ``raynas.seeds``) reports each part under its own
key (``part_key``), and the console draws a line per part.
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


def part_key(trial_id: str, part: int) -> str:
    """The board key of part ``part`` (0-based) of a trial: each seed of a seed group reports on its own."""
    return f"{trial_id}/{part}"


def trial_reports(board: dict[str, dict[str, Any]], trial_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    """``(key, report)`` of a trial's live lines: one per part in part order once a part has reported,
    else the trial's own (``None`` before its first report)."""
    prefix = f"{trial_id}/"
    parts = sorted((k for k in board if k.startswith(prefix) and k[len(prefix):].isdigit()),
                   key=lambda k: int(k[len(prefix):]))
    return [(k, board[k]) for k in parts] or [(trial_id, board.get(trial_id))]


_OWNED: dict[str, Any] = {}    # boards this driver started: the handle keeps the actor alive until stop_board
_HANDLES: dict[str, Any] = {}  # board name -> looked-up actor handle, in this process (never pickled)


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
    _OWNED[name] = ray.remote(num_cpus=0, max_restarts=0)(_Board).options(name=name, get_if_exists=True).remote()
    return name


def _handle(name: str) -> Any:
    import ray

    if name in _OWNED:
        return _OWNED[name]
    if name not in _HANDLES:
        _HANDLES[name] = ray.get_actor(name)
    return _HANDLES[name]


def read_board(name: str | None, timeout_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """The board's state, or ``{}`` when there is none or it does not answer in time (the console then
    shows finished epochs only). A slow answer (a board still starting, a busy machine) keeps the handle:
    dropping the driver's own would stop the board for the rest of the run."""
    import ray

    if name is None:
        return {}
    try:
        return ray.get(_handle(name).snapshot.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        return {}
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
        _OWNED.pop(name, None)
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
    """The ``progress`` sink of one trial's run: adds the trial id (or a part's ``part_key``) and sends to
    the board by name."""

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
