"""What a method's hooks see of the search: a small step context, not the whole loop.

Step hooks (``loss``, ``arch_step``) get a ``Step``: the supernet's forward (logits, or logits and the
last features), the module itself (whose ``aux`` holds auxiliary modules such as the MIM decoder) and
the two optimisers. DARTS' second order runs the same hooks on ``step.with_params(virtual)``, whose
forward uses the virtual weights (``torch.func``).
Lifecycle hooks (``prepare``, ``on_epoch_start``, ``load_state_dict``) get the run as a ``SearchRun``:
they may reshape the supernet and rebuild its optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn
from torch.func import functional_call

Forward = Callable[..., Any]  # (x, weights, return_features=False) -> logits | (logits, features)


@dataclass(frozen=True)
class Step:
    call: Forward                    # the supernet's forward (or a functional call of it)
    supernet: nn.Module
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of a batch under the given edge weights."""
        return self.call(x, weights)

    def forward_features(self, x: torch.Tensor, weights: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the last cell's features (what an auxiliary head such as the MIM decoder reads)."""
        return self.call(x, weights, return_features=True)

    def tap_features(self) -> tuple[Step, list[torch.Tensor]]:
        """This step, with every forward also appending its features to the returned list: a piece can
        run the inner hooks unchanged and read the features of the forward they made."""
        seen: list[torch.Tensor] = []

        def call(x: torch.Tensor, weights: dict[str, torch.Tensor], return_features: bool = False) -> Any:
            logits, features = self.call(x, weights, return_features=True)
            seen.append(features)
            return (logits, features) if return_features else logits
        return replace(self, call=call), seen

    def with_params(self, params: dict[str, torch.Tensor]) -> Step:
        """This step with some of the supernet's parameters and buffers replaced (others are the module's)."""
        net = self.supernet
        return replace(self, call=lambda x, w, return_features=False: functional_call(
            net, params, (x, w), {"return_features": return_features}))


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
