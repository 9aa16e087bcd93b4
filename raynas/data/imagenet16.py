"""ImageNet16-120: the 16x16 Downsampled ImageNet pickles, restricted to NAS-Bench-201's 120 classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raynas.data.cifar import read_batch
from raynas.data.specs import Source, make_dataset
from trials.batches import DataError, Dataset

_IN16_TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))


def locate(root: Path, download: bool) -> Source:
    cands = (root, root / "ImageNet16", root / "imagenet16")
    d = next((c for c in cands if (c / "val_data").is_file() or (c / "train_data_batch_1").is_file()), None)
    if d is None:
        hint = "--download cannot fetch it (image-net.org needs a login)" if download else "there is no --download"
        raise DataError(
            f"imagenet16-120 not found under {root} (looked for train_data_batch_1..10 and val_data, "
            f"also in ImageNet16/); pass --data-dir DIR pointing at the 16x16 Downsampled ImageNet "
            f"from image-net.org ({hint})"
        )
    missing = [f for f in [*_IN16_TRAIN, "val_data"] if not (d / f).is_file()]
    if missing:
        raise DataError(f"imagenet16-120: {d} lacks {', '.join(missing)}; pass --data-dir DIR with the full set")
    return Source("imagenet16", d)


def read(name: str, d: Path) -> Dataset:
    """Downsampled ImageNet 16x16 pickles; keep classes 1..120 as 0..119, as xautodl's ImageNet16 does."""

    def read_files(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:  # filter per file: the full training set is 1 GiB, the 120 classes a tenth of it
            x, y = read_batch(d / f, "imagenet16-120", "labels", 16)
            keep = (y >= 1) & (y <= 120)
            xs.append(x[keep])
            ys.append(y[keep] - 1)
        return np.concatenate(xs), np.concatenate(ys)

    return make_dataset("imagenet16-120", *read_files(list(_IN16_TRAIN)), *read_files(["val_data"]))
