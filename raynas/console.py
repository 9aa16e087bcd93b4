"""What a run prints while it runs: one live line per trial, a line per finished epoch, no Ray noise.

Three levels, chosen on the command line and kept in ``$RAYNAS_CONSOLE`` so that every part of the
driver sees the same one:

- ``normal`` (default): ``ConsoleReporter``, a Tune ``ProgressReporter`` that replaces Ray's periodic
  status tables. On a terminal it redraws one line per running trial (epoch, step/steps, it/s, ETA,
  train/valid accuracy, the NB-201 accuracy of the current genotype with a table) every couple of
  seconds under the permanent lines (one per finished epoch, one per finished trial); in a pipe or a
  log file it appends, the live lines at most every ``$RAYNAS_PROGRESS_S`` seconds (default 30).
  A seed group's trial (``raynas.seeds``) gets one live line per seed, tagged ``[seed 2/3 search]`` or
  ``[seed 2/3 proxy]``; on a terminal live lines are cut to its width, so the redraw stays in place.
  Ray's INFO logs, the token-authentication warning, MLflow's INFO logs and the trials' "checkpoint
  created" lines are silenced.
- ``verbose`` (``-v``): Ray's own output: its status tables (``CLIReporter``) and every log line.
- ``quiet`` (``--quiet``): no progress at all; warnings, errors and the final summary only.

Progress goes to stderr; stdout keeps the final summary (and ``--json``), which is printed last.
Commands without trials that take a while (``raynas report``) show their stages the same way with
``StageProgress``: one line redrawn in place on a terminal, a few appended lines in a pipe.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

LEVELS = ("quiet", "normal", "verbose")
ENV = "RAYNAS_CONSOLE"
INTERVAL_ENV = "RAYNAS_PROGRESS_S"

#: loggers silenced at ``normal``: the driver's (token authentication, MLflow's schema set-up, Tune's
#: TensorBoard logger warning at every epoch of a seed group that its per-seed list is no scalar) and the
#: trial workers' (one "Checkpoint successfully created" line per epoch)
DRIVER_LOGGERS = ("ray._private.authentication.authentication_token_setup", "mlflow", "alembic",
                  "ray.tune.logger.tensorboardx")
WORKER_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage",
                  "ray.tune.trainable.trainable")


def level() -> str:
    value = os.environ.get(ENV, "normal")
    return value if value in LEVELS else "normal"


def configure(verbose: bool = False, quiet: bool = False) -> str:
    """Set the level from ``-v`` / ``--quiet`` (for this process and the Ray workers it starts) and quiet
    the driver's loggers accordingly; returns the level."""
    value = "verbose" if verbose else "quiet" if quiet else "normal"
    interval_env()  # a bad $RAYNAS_PROGRESS_S is a one-line error before anything starts
    os.environ[ENV] = value
    if value != "verbose":
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported, here and in trials
        for name in DRIVER_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR if name.startswith("ray") else logging.WARNING)
    return value


def add_flags(p: Any) -> None:
    """``-v`` and ``--quiet`` on a subcommand that runs trials."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="Ray's own output: status tables and all logs")
    g.add_argument("--quiet", action="store_true", help="no progress lines: warnings, errors and the summary")


def ray_logging_level() -> int:
    """``ray.init(logging_level=...)``: INFO only at ``verbose``."""
    return logging.INFO if level() == "verbose" else logging.WARNING


def quiet_worker_logs() -> None:
    """In a trial worker below ``verbose``: no per-checkpoint INFO lines."""
    if level() != "verbose":
        for name in WORKER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def wants_board() -> bool:
    """Whether the driver should start a progress board: only the normal console reads one."""
    return level() == "normal"


#: seconds between a trial's in-epoch reports to the board, unless ``$RAYNAS_PROGRESS_S`` asks for more often;
#: never more often than ``MIN_POST_S`` (each report is a call to the board's actor)
POST_EVERY_S, MIN_POST_S = 2.0, 0.2


def post_every() -> float:
    """How often a trial posts its in-epoch progress: every ``POST_EVERY_S``, or twice per console interval
    when ``$RAYNAS_PROGRESS_S`` is shorter, so that every live line the console prints has a fresh report."""
    env = interval_env()
    return max(MIN_POST_S, min(POST_EVERY_S, env / 2)) if env is not None else POST_EVERY_S


def interval_env() -> float | None:
    """``$RAYNAS_PROGRESS_S`` as seconds (None: unset); anything but a number >= 0 is a ``ConfigError``."""
    env = os.environ.get(INTERVAL_ENV)
    if not env:
        return None
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from trials.config import ConfigError

        raise ConfigError(f"${INTERVAL_ENV}={env!r}: give the seconds between two progress lines, a number >= 0")
    return value


def worker_settings(board: str | None) -> dict[str, Any]:
    """What the trials need to know of the console (passed with ``tune.with_parameters``)."""
    return {"board": board if level() == "normal" else None, "level": level(), "every": post_every()}


# ------------------------------------------------------------------------------------------ formatting
@dataclass(frozen=True)
class Column:
    key: str                       # result / progress key
    label: str
    fmt: str = "{:.1f}%"


@dataclass(frozen=True)
class Kind:
    """What a kind of trial shows: its label's config keys and its metric columns."""
    label: tuple[str, ...]
    columns: tuple[Column, ...]
    epoch_time: str = "epoch_time"


SEARCH = Kind(("method", "space", "dataset", "seed"),
              (Column("train_acc", "train"), Column("valid_acc", "valid"), Column("skip_count", "skips", "{:d}"),
               Column("nb201_test", "nb201"), Column("proxy_test_acc", "proxy test"), Column("proxy_acc", "proxy")))
RETRAIN = Kind(("space", "dataset", "seed"), (Column("train_acc", "train"), Column("test_acc", "test")))
NAR = Kind(("bench", "dataset", "seed"),
           (Column("loss", "loss", "{:.3f}"), Column("tier_acc", "tier", "{:.3f}"),
            Column("val_tier_acc", "val tier", "{:.3f}"), Column("val_kendall_tau", "val tau", "{:.3f}")),
           epoch_time="time_s")


def clock(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``."""
    s = max(int(round(seconds)), 0)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def trial_label(kind: Kind, trial_id: str, config: dict[str, Any]) -> str:
    """``00003 darts/nb201/cifar10/s0``: the trial id's counter and the kind's config keys (a retraining's
    space sits in its ``arch`` grid value)."""
    arch = config.get("arch") if isinstance(config.get("arch"), dict) else {}
    config = {**arch, **config}
    parts = [f"s{config[k]}" if k == "seed" else str(config[k]) for k in kind.label if k in config]
    return f"{trial_id[-5:]} {'/'.join(parts)}"


def part_label(label: str, info: dict[str, Any] | None) -> str:
    """The label of one part of a trial (a seed of a seed group): ``00003 darts/nb201/digits/s3  [seed 2/3
    proxy]``, from the report's ``part`` and ``phase``; the trial's own label for a report without a part."""
    if not info or not info.get("part"):
        return label
    tag = " ".join(str(info[k]) for k in ("part", "phase") if info.get(k))
    return f"{label}  [{tag}]"


def _metrics(kind: Kind, values: dict[str, Any]) -> str:
    out = []
    for c in kind.columns:
        v = values.get(c.key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(f"{c.label} {c.fmt.format(int(v) if c.fmt == '{:d}' else v)}")
    return "  ".join(out)


def epoch_line(kind: Kind, label: str, result: dict[str, Any]) -> str:
    """The permanent line of a finished epoch."""
    total = result.get("total_epochs")
    epoch = f"epoch {result.get('epoch', result.get('training_iteration'))}" + (f"/{total}" if total else "")
    took = result.get(kind.epoch_time)
    took = f"  {took:.1f} s" if isinstance(took, (int, float)) else ""
    return f"{label}  {epoch}{took}  {_metrics(kind, result)}".rstrip()


def live_line(kind: Kind, label: str, info: dict[str, Any] | None, last: dict[str, Any], now: float) -> str:
    """The redrawn line of a running trial: the progress report ``info`` over the last epoch's ``last``."""
    if not info or info.get("epoch", 0) <= last.get("epoch", 0):
        done, total = last.get("epoch"), last.get("total_epochs")
        if not done:
            return f"{label}  starting"
        return f"{label}  epoch {done}/{total} done, finishing" if done == total else \
            f"{label}  epoch {done} done, next starting"
    epoch, epochs, step, steps = info["epoch"], info["epochs"], info["step"], info["steps"]
    rate = info.get("rate")
    parts = [f"epoch {epoch}/{epochs}", f"step {step}/{steps}"]
    if rate:
        per_epoch = last.get(kind.epoch_time) or steps / rate
        eta = (steps - step) / rate + (epochs - epoch) * per_epoch - max(now - info["time"], 0.0)
        parts += [f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it", f"ETA {clock(max(eta, 0.0))}"]
    values = {**last, **{k: v for k, v in info.items() if k not in ("epoch", "step")}}
    return f"{label}  {'  '.join(parts)}  {_metrics(kind, values)}".rstrip()


# ------------------------------------------------------------------------------------------- reporter
def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to ($COLUMNS, else 200 when it cannot be asked)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns if columns > 0 else shutil.get_terminal_size((200, 24)).columns  # a pty may say 0

def _reporter_base() -> type:
    from ray.tune import ProgressReporter

    return ProgressReporter


def make_reporter(kind: Kind, board: Any = None, stream: TextIO | None = None,
                  cli_reporter: Callable[[], Any] | None = None) -> tuple[Any, int]:
    """The Tune ``progress_reporter`` and ``verbose`` for the current level: ``ConsoleReporter`` (normal),
    ``cli_reporter()`` (Ray's tables, verbose) or none (quiet)."""
    lvl = level()
    if lvl == "verbose" and cli_reporter is not None:
        return cli_reporter(), 1
    if lvl == "quiet":
        return None, 0
    return reporter_class()(kind, board, stream), 1


_CLASS: type | None = None


def reporter_class() -> type:
    """``ConsoleReporter``, built on first use so that importing this module needs no Ray."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class()
    return _CLASS


def _make_class() -> type:
    from raynas.progress import read_board, trial_reports

    class ConsoleReporter(_reporter_base()):  # type: ignore[misc]
        """A Tune reporter of permanent epoch/trial lines and, on a terminal, a redrawn block of live lines;
        ``board`` is the progress board's name (``raynas.progress``)."""

        def __init__(self, kind: Kind, board: Any = None, stream: TextIO | None = None,
                     interval: float | None = None, tty: bool | None = None):
            self.kind, self.board = kind, board
            self._stream = stream  # None: sys.stderr when writing (the Tuner pickles its reporter)
            self.tty = self.stream.isatty() if tty is None else tty
            env = interval_env()
            self.interval = interval if interval is not None else env if env is not None else (
                2.0 if self.tty else 30.0)
            self.epochs_seen: dict[str, int] = {}
            self.ended: set[str] = set()
            self.drawn = 0            # live lines on screen (terminal)
            self.last_live = 0.0
            self.start = time.time()
            self.counts = ""
            self.printed: dict[str, tuple[int, int]] = {}  # pipe: (epoch, step) last printed per trial

        @property
        def stream(self) -> TextIO:
            return self._stream or sys.stderr

        def setup(self, start_time: float | None = None, *args: Any, **kwargs: Any) -> None:
            self.start = start_time or time.time()

        def _label(self, trial: Any) -> str:
            return trial_label(self.kind, trial.trial_id, trial.config)

        def _events(self, trials: list[Any]) -> list[str]:
            lines = []
            for t in trials:
                result = t.last_result or {}
                it = result.get("training_iteration") or 0
                if it > self.epochs_seen.get(t.trial_id, 0) and "epoch" in result:
                    self.epochs_seen[t.trial_id] = it
                    lines.append(epoch_line(self.kind, self._label(t), result))
                if t.status in ("TERMINATED", "ERROR") and t.trial_id not in self.ended:
                    self.ended.add(t.trial_id)
                    lines.append(self._end_line(t, result))
            return lines

        def _end_line(self, trial: Any, result: dict[str, Any]) -> str:
            status = "error" if trial.status == "ERROR" else result.get("status", "stopped")
            if status == "running":
                status = "stopped"
            took = result.get("time_total_s")
            took = f" in {clock(took)}" if isinstance(took, (int, float)) else ""
            return f"{self._label(trial)}  {status} after {result.get('epoch', 0)} epochs{took}"

        def _counts(self, trials: list[Any]) -> str:
            n = {s: sum(t.status == s for t in trials) for s in ("RUNNING", "PENDING", "PAUSED")}
            done = len(trials) - sum(n.values())
            return (f"trials: {n['RUNNING']} running, {n['PENDING'] + n['PAUSED']} pending, {done} done"
                    f"  ({clock(time.time() - self.start)} elapsed)")

        def should_report(self, trials: list[Any], done: bool = False) -> bool:
            if done or time.monotonic() - self.last_live >= self.interval:
                return True
            return any((t.last_result or {}).get("training_iteration", 0) > self.epochs_seen.get(t.trial_id, 0)
                       or (t.status in ("TERMINATED", "ERROR") and t.trial_id not in self.ended) for t in trials)

        def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
            out = self._erase()
            out += "".join(f"{line}\n" for line in self._events(trials))
            running = [t for t in trials if t.status == "RUNNING"]
            live_due = time.monotonic() - self.last_live >= self.interval
            if not done and (self.tty or live_due):
                board = read_board(self.board) if running else {}
                now, live = time.time(), []
                for t in running:
                    last = t.last_result or {}
                    for key, info in trial_reports(board, t.trial_id):  # a line per seed of a seed group
                        if not self.tty:  # a pipe gets a line only when it moved on
                            mark = (info or {}).get("epoch", 0), (info or {}).get("step", 0)
                            if not info or info["epoch"] <= last.get("epoch", 0) or self.printed.get(key) == mark:
                                continue
                            self.printed[key] = mark
                        live.append(live_line(self.kind, part_label(self._label(t), info), info, last, now))
                counts = self._counts(trials)
                if self.tty:
                    width = _columns(self.stream) - 1  # a wrapped line would not be erased by the redraw
                    live = [line[:width] for line in live] + [counts]
                    self.drawn = len(live)
                elif counts.split("(")[0] != self.counts:
                    live.append(counts)
                self.counts = counts.split("(")[0]
                out += "".join(f"{line}\n" for line in live)
                if live_due:
                    self.last_live = time.monotonic()
            if out:
                self.stream.write(out)
                self.stream.flush()

        def _erase(self) -> str:
            if not self.tty or not self.drawn:
                return ""
            n, self.drawn = self.drawn, 0
            return f"\x1b[{n}F\x1b[J"  # cursor up n lines to column 0, clear to the end of the screen

    return ConsoleReporter


# -------------------------------------------------------------------------------------------- stages
class StageProgress:
    """``report: figures 2/3 (accuracy distribution)``: the item a command is at, called before each item.

    On a terminal one line, redrawn in place and erased by ``close()`` (before the command's own lines);
    in a pipe or a log file a line at each stage's first and last item and, between, at most one every
    ``$RAYNAS_PROGRESS_S`` seconds (default 30), as the trial console appends; nothing when ``quiet``."""

    def __init__(self, prefix: str, stream: TextIO | None = None, *, quiet: bool = False,
                 tty: bool | None = None, interval: float | None = None):
        self.prefix, self.quiet, self._stream = prefix, quiet, stream
        self.tty = self.stream.isatty() if tty is None else tty
        env = interval_env()
        self.interval = interval if interval is not None else env if env is not None else 30.0
        self.stage, self.last, self.drawn = "", 0.0, False

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def __call__(self, stage: str, item: int, total: int, what: str = "") -> None:
        """At item ``item`` (1-based) of ``total`` of ``stage``, named ``what``."""
        if self.quiet:
            return
        line = f"{self.prefix}: {stage} {item}/{total}" + (f" ({what})" if what else "")
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r\x1b[K{line[:_columns(self.stream) - 1]}")
            self.drawn = True
        elif stage != self.stage or item == total or now - self.last >= self.interval:
            self.stream.write(line + "\n")
            self.last = now
        self.stage = stage
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def __getattr__(name: str) -> Any:  # ``raynas.console.ConsoleReporter``, built on first use
    if name == "ConsoleReporter":
        return reporter_class()
    raise AttributeError(name)
