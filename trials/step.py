"""What a method's hooks see of the search: a small step context, not the whole loop.

Step hooks (``loss``, ``arch_step``) get a ``Step``: the supernet's forward, the module itself (where
auxiliary modules such as the MIM decoder live) and the two optimisers. DARTS' second order runs the
same hooks on ``step.with_params(virtual)``, whose forward uses the virtual weights (``torch.func``).
Lifecycle hooks (``prepare``, ``on_epoch_start``, ``load_state_dict``) get the run as a ``SearchRun``:
they may reshape the supernet and rebuild its optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn
from torch.func import functional_call

Forward = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Step:
    forward: Forward                 # logits of a batch under given edge weights
    supernet: nn.Module
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer

    def with_params(self, params: dict[str, torch.Tensor]) -> Step:
        """This step with some of the supernet's parameters and buffers replaced (others are the module's)."""
        net = self.supernet
        return replace(self, forward=lambda x, w: functional_call(net, params, (x, w)))


class SearchRun(Protocol):
    """The parts of a search (``trials.bilevel.Search``) that its lifecycle hooks, the Hessian probe and
    the CUDA-graph step use (typed here so that none of them imports the loop)."""
    cfg: Any
    method: Any
    net: nn.Module
    data: Any
    device: torch.device
    epoch: int
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    a_stream: Any

    def rebuild_weight_optimizer(self, moved: list[tuple[nn.Parameter, nn.Parameter, Any]]) -> None: ...

    def step_context(self) -> Step: ...

    def generator(self, stream: int) -> torch.Generator: ...

    def to_input(self, x: torch.Tensor) -> torch.Tensor: ...

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
