"""Shared pieces of the benchmark scripts: CIFAR-shaped random data, device sync, peak memory, versions."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from trials.batches import Dataset  # noqa: E402


def cifar_shaped(n: int, seed: int = 0, num_classes: int = 10) -> Dataset:
    """``n`` random 32x32x3 uint8 images: timings depend on shapes only, not on pixel values."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return Dataset("cifar10", images, labels, images[:8], labels[:8], num_classes, (0.49, 0.48, 0.45),
                   (0.25, 0.24, 0.26), 4, True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float:
    """GPU: max allocated by this process; CPU: its RSS high-water mark.

    On Linux this is ``VmHWM`` of the running program: ``ru_maxrss`` survives ``fork``+``exec``, so a
    child started by a large parent would report the parent's peak instead of its own.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {torch.get_num_threads()} torch threads, {dev}; python "
            f"{platform.python_version()}, torch {torch.__version__}")
