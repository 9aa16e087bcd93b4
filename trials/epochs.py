"""The epoch-run skeleton shared by the search, retraining and NAR training.

A run holds all its state, advances one epoch per ``run_epoch()`` and is checkpointed between epochs;
the Tune trainable (``raynas.trainable``) drives any run through this protocol alone. ``EpochRun``
writes the common parts once: named random streams, the global RNG state in checkpoints, save/load,
the thread set-up and the divergence error.
"""

from __future__ import annotations

import io
import os
import random
import time
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trials.checkpoint import load_state


class Stream(IntEnum):
    """The random streams of a search epoch. Each draws from its own generator seeded by (seed, epoch,
    stream) alone, so an epoch's randomness does not depend on the epochs before it: resuming is exact."""
    WEIGHT_BATCHES = 0   # order and augmentation of the batches the weights train on
    ARCH_BATCHES = 1     # order and augmentation of the alpha split
    EVAL_BATCHES = 2     # order of the evaluation batches
    CUTOUT = 3           # search-time cutout squares
    HESSIAN = 4          # the batches of the Hessian probe
    HESSIAN_FORWARD = 5  # the stochastic parts of its forwards (Dirichlet samples, drop-path)


class RetrainStream(IntEnum):
    """The random streams of a retraining epoch (same seeding as ``Stream``)."""
    TRAIN_BATCHES = 0    # order, crop and flip of the training batches
    CUTOUT = 1           # cutout squares
    DROP_PATH = 3        # drop-path masks (and S4's noise op), through torch's global generator


class NARStream(IntEnum):
    """The random streams of a NAR training epoch."""
    TRAIN_BATCHES = 0    # order of the training architectures


_ORIGINAL = 4  # streams below keep the seeds of the first formula, so recorded results reproduce


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed per (seed, epoch, stream), distinct for distinct triples. Streams 0-3 keep the original
    ``(seed * 1_000_003 + epoch) * 4 + stream``; later streams live above 2**63, a range the first never
    reaches (torch takes seeds below 2**64)."""
    base = seed * 1_000_003 + epoch
    if stream < _ORIGINAL:
        return base * _ORIGINAL + stream
    return (1 << 63) + base * 16 + stream


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --set device=cpu")
    return torch.device(name)


def set_threads_from_env(threads: int | None = None) -> None:
    """Inside a Ray worker: ``threads`` torch threads when given (the driver's choice, recorded with the
    run), else as many as CPUs the trial was given (``OMP_NUM_THREADS``). Results depend on it: a fixed
    seed reproduces on a fixed device, thread count and library versions."""
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


#: receives a run's intra-epoch progress (a plain dict); set by whoever drives the run (the Tune trainable)
ProgressSink = Callable[[dict[str, Any]], None]


class Diverged(RuntimeError):
    """A loss or a parameter became NaN or infinite in (0-based) ``epoch``."""

    def __init__(self, epoch: int, message: str):
        super().__init__(message)
        self.epoch = epoch


def rng_state() -> dict[str, Any]:
    """The global torch / CUDA / NumPy / Python RNG states, as tensors and plain containers only
    (checkpoints are read with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def write_state(state: Any, path: str | Path) -> None:
    """A checkpoint whole or not at all: serialised in memory (torch's own file writer turns a full disk
    into a bare ``RuntimeError``), written to a temporary sibling and renamed; a failed write raises the
    ``OSError`` (``ENOSPC``, ...) naming ``path`` and leaves no partial file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_whole(buf.getbuffer(), path)


def write_bytes_whole(data: bytes | memoryview, path: str | Path) -> None:
    """``data`` to ``path`` whole or not at all (temporary sibling, fsync, rename); a failed write raises the
    ``OSError`` naming ``path`` and leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        e.filename = e.filename or str(path)
        raise


class EpochRun:
    """Base of every run: ``epoch`` epochs done of ``epochs``, ``history`` their metrics.

    Subclasses implement ``run_epoch`` and the two state methods; ``seed`` and ``device`` name the
    run's seed and device.
    """

    seed: int
    epochs: int
    device: torch.device

    #: seconds between two progress reports inside an epoch (each may cost a device sync)
    progress_every: float = 2.0

    def __init__(self) -> None:
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.progress: ProgressSink | None = None
        self._last_tick = self._first_step = 0.0

    def tick(self, step: int, steps: int, metrics: Callable[[], dict[str, Any]], *, force: bool = False) -> None:
        """Report ``step`` of ``steps`` in the running epoch to ``progress``, at most every ``progress_every``
        seconds (``force``: now); ``metrics()`` (running accuracy, ...) is called only when a report goes out."""
        if self.progress is None:
            return
        now = time.monotonic()
        if step == 1:  # the rate counts from the end of the first step (warm-up, graph capture excluded)
            self._first_step = now
        if not force and step != steps and now - self._last_tick < self.progress_every:
            return
        self._last_tick = now
        rate = (step - 1) / (now - self._first_step) if step > 1 and now > self._first_step else None
        self.progress({"epoch": self.epoch + 1, "epochs": self.epochs, "step": step, "steps": steps,
                       "rate": rate, "time": time.time(), **metrics()})

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def run_epoch(self) -> dict[str, Any]:
        raise NotImplementedError

    def generator(self, stream: int) -> torch.Generator:
        """This epoch's generator of ``stream`` on the run's device."""
        return torch.Generator(device=self.device).manual_seed(stream_seed(self.seed, self.epoch, stream))

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        write_state(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_state(path, self.device))

    def run(self) -> list[dict[str, Any]]:
        """All remaining epochs in this process (no Ray): the Tune trainable runs the same epochs."""
        while not self.done:
            self.run_epoch()
        return self.history
