"""DARTS-space evaluation networks (train a genotype from scratch), as quark0/darts ``cnn/model.py``.

``DartsNetwork`` is ``NetworkCIFAR`` (20 cells, C=36 on CIFAR-10) and ``NetworkImageNet`` the mobile
setting (14 cells, C=48, 224x224 input). RobustDARTS S1-S4 genotypes use the same cell; only the op
names differ, and every one of them is in the one ``OPS`` registry. Cell ops use affine BN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.darts import Genotype
from search_spaces.mixed import drop_path
from search_spaces.ops import FactorizedReduce, ReLUConvBN, build_op


class EvalCell(nn.Module):
    """One discrete cell: node ``i`` sums two ops of earlier states; output concatenates ``concat``."""

    def __init__(self, genotype: Genotype, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        entries = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = [j for _, j in entries]
        self.ops = nn.ModuleList(build_op(name, C, C, 2 if reduction and j < 2 else 1, affine=True)
                                 for name, j in entries)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.ops) // 2):
            s = 0
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, drop_prob)
                s = s + h
            states.append(s)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """ReLU, 5x5 avg-pool, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, [BN,] ReLU, Linear.

    The reference pools with stride 3 (CIFAR, 8x8 in) or 2 (ImageNet, 7x7 in) to exactly 2x2; an
    adaptive pool to 2x2 afterwards is a no-op there and lets other resolutions (digits, 16x16) work.
    """

    def __init__(self, C: int, num_classes: int, stride: int, last_bn: bool):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Sequential(nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(128, 768, 2, bias=False), *([nn.BatchNorm2d(768)] if last_bn else []),
                                   nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, self.stride, count_include_pad=False)
        x = self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 2)))
        return self.classifier(x.flatten(1))


class AuxiliaryHeadCIFAR(AuxiliaryHead):
    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, stride=3, last_bn=True)


class AuxiliaryHeadImageNet(AuxiliaryHead):
    """Without the BN after the 768-channel conv, as the reference ("consistent with the paper")."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, stride=2, last_bn=False)


class _EvalNet(nn.Module):
    """Cells with reductions at ``layers//3`` and ``2*layers//3`` and the auxiliary head after the second."""

    def _make_cells(self, genotype: Genotype, C_pp: int, C_p: int, C: int, layers: int,
                    reduction_prev: bool) -> tuple[int, int]:
        self.aux_index = 2 * layers // 3
        self.cells, C_aux = nn.ModuleList(), C_p
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C *= 2 if reduction else 1
            cell = EvalCell(genotype, C_pp, C_p, C, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C
            if i == self.aux_index:
                C_aux = C_p
        return C_p, C_aux

    def _cells(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class DartsNetwork(_EvalNet):
    """``NetworkCIFAR``: stem conv 3x3 to 3C + BN, ``layers`` cells, global pool, linear.

    ``forward`` returns ``(logits, logits_aux)``; ``logits_aux`` is None in eval mode or without the
    head. Set ``drop_path_prob`` each epoch (the papers ramp it linearly from 0).
    """

    def __init__(self, genotype: Genotype, C: int = 36, layers: int = 20, num_classes: int = 10,
                 auxiliary: bool = True, in_channels: int = 3, stem_multiplier: int = 3):
        super().__init__()
        if layers < 3:
            raise ValueError(f"a DARTS network needs >= 3 cells (two are reductions), got {layers}")
        self.genotype, self.drop_path_prob = genotype, 0.0
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        C_prev, C_aux = self._make_cells(genotype, C_stem, C_stem, C, layers, reduction_prev=False)
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.stem(x)
        out, logits_aux = self._cells(s, s)
        return self.classifier(out.mean(dim=(2, 3))), logits_aux


NetworkCIFAR = DartsNetwork  # the reference's name


class NetworkImageNet(_EvalNet):
    """The mobile setting: three stride-2 3x3 convs (224 -> 28; the first cell's s0 is at 56, hence
    ``reduction_prev=True``), 14 cells at C=48, global pool (the reference's AvgPool(7) at 224)."""

    def __init__(self, genotype: Genotype, C: int = 48, layers: int = 14, num_classes: int = 1000,
                 auxiliary: bool = True, in_channels: int = 3):
        super().__init__()
        self.genotype, self.drop_path_prob = genotype, 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(C))
        C_prev, C_aux = self._make_cells(genotype, C, C, C, layers, reduction_prev=True)
        self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = self.stem0(x)
        out, logits_aux = self._cells(s0, self.stem1(s0))
        return self.classifier(out.mean(dim=(2, 3))), logits_aux


def count_params(model: nn.Module) -> int:
    """Weights as the papers count them: the auxiliary head is excluded (DARTS ``count_parameters_in_MB``)."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates per image of every Conv2d and Linear in one eval-mode forward, in MACs.

    The papers' "FLOPs" are multiply-adds; BN, pooling, activations, additions and biases are not
    counted here. Counted by forward hooks on a batch of one (``input_shape`` is ``(C, H, W)``): a conv
    costs ``out.numel() * in_channels / groups * kh * kw``, a linear ``in * out`` per row, the numbers
    ``torch.utils.flop_counter.FlopCounterMode`` gives (halved) in a fraction of its time. DARTS_V2 gives
    528M on CIFAR-10 and 530M on ImageNet mobile, where the DARTS paper prints 574M: the same gap others
    found counting conv and fc layers (quark0/darts issue 46), so the paper's tool counted something more.
    """
    total = 0

    def conv(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: nn.Linear, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal total
        total += inp[0].numel() // m.in_features * m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total
