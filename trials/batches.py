"""The search loop's view of a dataset: uint8 tensors in memory, seeded batched augmentation.

Why not a ``DataLoader``: the datasets used for architecture search are small (CIFAR-10 is 150 MiB as
uint8), so the whole split lives in (GPU) memory and each batch is cropped, flipped and normalised in
one vectorised step.  Every random draw comes from a ``torch.Generator`` the caller owns, so a search
is bit-reproducible, and resumable from an epoch boundary by saving ``generator.get_state()``; there
are no worker processes and no per-step Python work per image.  Reading files into a :class:`Dataset`
is the application's job (``raynas.data``); nothing here touches the disk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

__all__ = ["BatchStream", "DataConfig", "DataError", "Dataset", "crop_flip", "cutout", "normalize", "split_indices",
           "train_subset"]


class DataError(ValueError):
    """A dataset cannot be found or read; the message says where we looked and which flag fixes it."""


@dataclass
class DataConfig:
    """What of the training set a run uses (``data.*`` of the search and retrain configs)."""
    train_subset: int | float | None = None  # per class: an integer count, or a fraction in (0, 1]; None: all
    subset_seed: int = 0                     # which images: the same subset for every run seed unless changed

    def check(self) -> None:
        from trials.config import need

        s = self.train_subset
        need(s is None or (isinstance(s, int) and s >= 1) or (isinstance(s, float) and 0.0 < s <= 1.0),
             f"data.train_subset must be an integer count per class >= 1 or a fraction in (0, 1], got {s!r}")


@dataclass
class Dataset:
    """One labelled train/test pair, uint8 NCHW in host memory (moved to a device by BatchStream)."""

    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    crop_padding: int  # zero padding of the random crop (0: no crop)
    flip: bool  # random horizontal flip is label-preserving for this dataset

    def __post_init__(self) -> None:
        # Fail at load time, not deep inside a trial, if a reader produced something malformed.
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name} {split}_x must be uint8 [N,C,H,W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name} {split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{self.name} {split} labels outside 0..{self.num_classes - 1}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} "
                f"!= test images {tuple(self.test_x.shape[1:])}"
            )
        if not len(self.mean) == len(self.std) == self.train_x.shape[1]:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.train_x.shape[1]})")

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Side of the (square) images."""
        return int(self.train_x.shape[2])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"classes={self.num_classes}, crop_padding={self.crop_padding}, flip={self.flip})"
        )


def split_indices(n: int, portion: float, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DARTS' ``train_portion`` split of the train set: (weights indices, architecture indices).

    With ``seed=None`` it is the reference's split, ``indices[:floor(portion*n)]`` and the rest in index
    order (DARTS shuffles only inside each half, as BatchStream does); with an int seed the halves come
    from a seeded permutation instead, for data whose index order is not random.
    """
    if not 0 < portion < 1:
        raise ValueError(f"portion must be in (0, 1), got {portion}")
    split = math.floor(portion * n)
    if split == 0 or split == n:
        raise ValueError(f"portion {portion} of {n} samples leaves one side empty")
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:split].clone(), order[split:].clone()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B,C,H,W] -> ``(x/255 - mean) / std`` per channel in torch's default dtype (float32 unless
    a caller chose float64, as the cross-machine golden test does); what BatchStream yields."""
    m = torch.tensor(mean, dtype=torch.get_default_dtype(), device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.get_default_dtype(), device=x.device).view(1, -1, 1, 1)
    return _normalize(x, m, s)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x.to(mean.dtype).div_(255).sub_(mean).div_(std)


def crop_flip(
    x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Random-crop-with-zero-padding and horizontal flip of a whole batch, without a per-image loop.

    Sample ``i`` is the window at rows ``dy[i]..dy[i]+H`` and columns ``dx[i]..dx[i]+W`` of the
    zero-padded image (offsets in ``0..2*padding``), mirrored if ``flip[i]``: exactly torchvision's
    ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` per sample.  Two ``gather`` calls on
    broadcast index views, so no index tensor of the batch's size is materialised.
    """
    b, c, h, w = x.shape
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.to(x.device).view(b, 1) + ar_h  # [B, H]
    cols = ar_w.expand(b, w) if flip is None else torch.where(flip.to(x.device).view(b, 1), ar_w.flip(0), ar_w)
    cols = dx.to(x.device).view(b, 1) + cols  # [B, W]
    x = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, x.shape[3]))
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


class BatchStream:
    """Batches of one index subset, augmented and normalised on ``device``.

    The subset's images are copied to ``device`` once.  ``epoch(generator)`` draws all of the epoch's
    randomness (permutation, crop offsets, flips) up front, in that order, so the generator's state
    after the call does not depend on how many batches are consumed: save ``generator.get_state()``
    at an epoch boundary to resume bit-exactly.  Draws happen on the generator's device; use a CPU
    generator to get the same batches on CPU and GPU.
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        indices: torch.Tensor | Sequence[int] | None,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int,
        flip: bool,
        augment: bool,
        device: torch.device | str = "cpu",
        drop_last: bool = True,
    ) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise ValueError(f"x_uint8 must be uint8 [N,C,H,W], got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if batch_size < 1 or crop_padding < 0:
            raise ValueError(f"need batch_size >= 1 and crop_padding >= 0, got {batch_size}, {crop_padding}")
        self.device = torch.device(device)
        idx = torch.arange(len(x_uint8)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        idx = idx.to(x_uint8.device)
        self.x = x_uint8[idx].to(self.device)
        self.y = y[idx.to(y.device)].to(self.device, torch.long)
        self.n = len(idx)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.crop_padding, self.flip, self.augment = crop_padding, flip, augment
        self.mean, self.std = tuple(mean), tuple(std)
        c = self.x.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean/std need {c} values, got {len(self.mean)} and {len(self.std)}")
        dtype = torch.get_default_dtype()  # float32 unless a caller chose float64 (numerical checks)
        self._mean = torch.tensor(self.mean, dtype=dtype, device=self.device).view(1, c, 1, 1)
        self._std = torch.tensor(self.std, dtype=dtype, device=self.device).view(1, c, 1, 1)
        if len(self) == 0:
            raise ValueError(f"{self.n} samples make no batch of {batch_size} with drop_last=True")

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: ``(x [B,C,H,W] normalised in the default dtype, y int64 [B])`` on ``device``.

        With ``generator=None`` the subset is read in order without augmentation (evaluation); that
        needs ``augment=False``.
        """
        dy = dx = flips = None
        if generator is None:
            if self.augment:
                raise ValueError("an augmenting BatchStream needs a generator")
            return self._batches(torch.arange(self.n, device=self.device), dy, dx, flips)
        gen = {"generator": generator, "device": generator.device}
        order = torch.randperm(self.n, **gen).to(self.device)
        if self.augment and self.crop_padding > 0:
            dy, dx = torch.randint(0, 2 * self.crop_padding + 1, (2, self.n), **gen).to(self.device)
        if self.augment and self.flip:
            flips = torch.randint(0, 2, (self.n,), **gen).bool().to(self.device)
        return self._batches(order, dy, dx, flips)

    def _batches(
        self,
        order: torch.Tensor,
        dy: torch.Tensor | None,
        dx: torch.Tensor | None,
        flips: torch.Tensor | None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl]
            x = self.x[idx]
            if dy is not None or flips is not None:
                b = len(idx)
                zeros = torch.zeros(b, dtype=torch.long, device=self.device)
                x = crop_flip(
                    x,
                    self.crop_padding,
                    zeros if dy is None else dy[sl],
                    zeros if dx is None else dx[sl],
                    None if flips is None else flips[sl],
                )
            yield _normalize(x, self._mean, self._std), self.y[idx]


def cutout(x: torch.Tensor, length: int, generator: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """DARTS ``utils.Cutout`` on a whole batch: per image, zero the ``length`` square (clipped at the
    border) centred on a uniformly drawn pixel. Applied after normalisation, as in the reference.
    ``prob < 1``: each image is cut with that probability (RobustDARTS' ``Cutout(length, prob)``)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator, device=generator.device).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    half = length // 2
    in_y = (rows >= (cy - half)[:, None]) & (rows < (cy + half)[:, None])  # [B, H]
    in_x = (cols >= (cx - half)[:, None]) & (cols < (cx + half)[:, None])  # [B, W]
    cut = in_y[:, :, None] & in_x[:, None, :]
    if prob < 1.0:
        chosen = torch.rand(b, generator=generator, device=generator.device).to(x.device) < prob
        cut = cut & chosen[:, None, None]
    return x * (~cut)[:, None].to(x.dtype)



def train_subset(data: "Dataset", cfg: DataConfig) -> "Dataset":
    """``data`` with a class-balanced subset of its training images (test split untouched), for smoke runs
    on real data: per class ``train_subset`` images (all of a smaller class) or that fraction of them
    (at least one), drawn by ``subset_seed``; the images keep their order in the training set."""
    if cfg.train_subset is None:
        return data
    g = torch.Generator().manual_seed(cfg.subset_seed)
    keep = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.train_y == c).flatten()
        if not len(idx):
            continue
        k = (min(cfg.train_subset, len(idx)) if isinstance(cfg.train_subset, int)
             else max(1, round(cfg.train_subset * len(idx))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    order = torch.cat(keep).sort().values
    return replace(data, train_x=data.train_x[order], train_y=data.train_y[order])
