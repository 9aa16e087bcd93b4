"""scikit-learn's bundled 8x8 digits: no files, no download; the smallest dataset for smoke runs."""

from __future__ import annotations

import numpy as np
import torch

from raynas.data.specs import make_dataset
from trials.batches import Dataset


def load() -> Dataset:
    """scikit-learn's bundled 8x8 digits: a fixed seed-0 permutation, first 80% train, rest test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(np.asarray(bunch.images, np.float64) * (255 / 16)).astype(np.uint8)[:, None]
    y = np.asarray(bunch.target, np.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).numpy()
    n_train = round(0.8 * len(y))
    tr, te = perm[:n_train], perm[n_train:]
    pix = x[tr].astype(np.float64) / 255
    return make_dataset("digits", x[tr], y[tr], x[te], y[te], mean=(float(pix.mean()),), std=(float(pix.std()),))
