"""What every search supernet offers a method: the typed protocol the hooks rely on.

A supernet holds the searched weights and the op alphas; the method decides how alpha becomes edge
weights and passes them to ``forward``. Methods that need more than that get explicit places instead of
side channels: ``arch_extra`` for architecture parameters beyond alpha (PC-DARTS' edge-normalisation
beta), ``aux`` for modules that train with the weights but are not part of the searched network
(alphaDARTS' MIM decoder), and ``forward(..., return_features=True)`` for the last cell's features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn


@runtime_checkable
class Supernet(Protocol):
    space: str
    alphas: nn.ParameterDict        # one (edges x ops) tensor per cell type
    arch_extra: nn.ParameterDict    # a method's further architecture parameters (trained with alpha)
    aux: nn.ModuleDict              # a method's auxiliary modules (trained with the weights)
    targets: dict[str, list[int]]   # per cell type: the node each edge feeds

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor], return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def edge_ops(self) -> dict[str, list[tuple[str, ...]]]: ...

    def edge_names(self) -> dict[str, list[str]]: ...

    def mixed_ops(self) -> Iterator[tuple[str, int, nn.Module]]: ...

    def derive(self, weights: dict[str, torch.Tensor]) -> Any: ...


def method_slots(net: nn.Module) -> None:
    """Give ``net`` its (empty) ``arch_extra`` and ``aux``; called last in a supernet's ``__init__`` so
    their parameters come after the supernet's own in ``parameters()`` and in the state dict."""
    net.arch_extra = nn.ParameterDict()
    net.aux = nn.ModuleDict()


def auxiliary_modules(net: nn.Module) -> set[int]:
    """``id`` of every module under ``net.aux`` (what "the searched network" excludes)."""
    return {id(m) for m in net.aux.modules()}
