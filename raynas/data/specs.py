"""Per-dataset constants (classes, normalisation, augmentation) and the constructor every reader uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from trials.batches import Dataset

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "imagenet16-120", "fashion-mnist", "digits")

#: How to fix a missing dataset, for the readers' error messages.
FIX_HINT = "pass --data-dir DIR pointing at it, or --download"


class Spec(NamedTuple):
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool


def _div255(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(v / 255 for v in values)


# Normalisation constants and augmentation are those of the papers' code:
# CIFAR-10: DARTS utils.py (CIFAR_MEAN/STD); CIFAR-100, ImageNet16-120: NAS-Bench-201 / xautodl
# get_datasets (RandomCrop(32, 4) / RandomCrop(16, 2) + RandomHorizontalFlip).  SVHN: digits are not
# mirror-symmetric, but RobustDARTS (the reference code that searches on SVHN) flips them too
# (src/utils.py _data_transforms_svhn), so flip.  Fashion-MNIST: flipping clothes left/right keeps the
# class (a mirrored shoe is still a shoe), so flip=True with a 2-pixel crop for 28x28.  sklearn digits (8x8):
# no crop, no flip; its mean/std are computed from its train split at load time.
SPECS: dict[str, Spec] = {
    "cifar10": Spec(10, (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768), 4, True),
    "cifar100": Spec(100, _div255((129.3, 124.1, 112.4)), _div255((68.2, 65.4, 70.4)), 4, True),
    "svhn": Spec(10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, True),
    "imagenet16-120": Spec(120, _div255((122.68, 116.66, 104.01)), _div255((63.22, 61.26, 65.09)), 2, True),
    "fashion-mnist": Spec(10, (0.2860,), (0.3530,), 2, True),
    "digits": Spec(10, (0.0,), (1.0,), 0, False),  # mean/std replaced at load time
}


def make_dataset(
    name: str, train_x: np.ndarray, train_y: Any, test_x: np.ndarray, test_y: Any, **override: Any
) -> Dataset:
    """A :class:`Dataset` of ``name``'s spec (``override`` replaces fields, e.g. digits' mean/std)."""
    spec = SPECS[name]._replace(**override)

    def tx(a: np.ndarray) -> torch.Tensor:
        # Own, writable, contiguous memory: np.frombuffer / np.load views are read-only.
        return torch.from_numpy(np.require(a, requirements=["C", "W", "O"]))

    return Dataset(
        name,
        tx(train_x),
        tx(np.asarray(train_y, np.int64)),
        tx(test_x),
        tx(np.asarray(test_y, np.int64)),
        *spec,
    )


class Source(NamedTuple):
    """Where a dataset was found: which reader to use, and its directory (None for digits)."""

    kind: str  # "cifar-python" | "image-folder" | "svhn" | "imagenet16" | "idx" | "sklearn"
    path: Path | None
