"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections + edge normalisation.

Partial channels are a supernet option (``pc.k``: only the first C/K channels enter an edge's ops,
the rest bypass them, max-pooled on reduction edges, then a channel shuffle; see
``search_spaces.mixed.MixedOp``). Edge normalisation is the piece here: a second architecture
vector beta per cell type, softmaxed over each node's incoming edges, scales every edge's output,
bypassed channels included (the reference's ``sum_j weights2[j] * MixedOp_j(h_j)``). Its factor on
the ops' part is folded into the op weights (``sum_o beta_e w_eo o(x) = beta_e sum_o w_eo o(x)``),
which is also the product derivation ranks edges by; the bypassed channels get it as the
supernet's edge scale (``edge_scale_key``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataclasses import dataclass

import torch
import torch.nn as nn

from search_spaces.mixed import edge_scale_key
from trials.config import need
from trials.darts import Darts
from trials.registry import register_method, register_piece, register_section

if TYPE_CHECKING:
    from trials.step import SearchRun


@register_section("pc")
@dataclass
class PartialChannelConfig:
    """PC-DARTS: 1/k of the channels enter the ops; edge normalisation beta over a node's inputs."""
    k: int = 1
    edge_norm: bool = False

    def check(self, cfg: Any) -> None:
        need(self.k >= 1, f"pc.k must be >= 1, got {self.k}")
        need(cfg.model.C % self.k == 0, f"pc.k={self.k} must divide model.C={cfg.model.C}")

    def supernet_options(self) -> dict[str, Any]:
        return {"partial_k": self.k}


def edge_normalisation(beta: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """``softmax(beta over the edges entering the same node)``, one factor per edge.

    Indexed with Python ints only: no index tensor crosses to the device and nothing waits on the host,
    so the step can be recorded in a CUDA graph.
    """
    norm: list[torch.Tensor] = [beta[0]] * len(targets)
    for node in sorted(set(targets)):
        rows = [i for i, t in enumerate(targets) if t == node]
        soft = torch.softmax(torch.stack([beta[i] for i in rows]), dim=0)
        for j, i in enumerate(rows):
            norm[i] = soft[j]
    return torch.stack(norm)


@register_piece(40, when=lambda cfg: cfg.pc.edge_norm)  # outside the relaxation: it scales whatever weights it gives
class EdgeNormalisation(Darts):
    def prepare(self, search: SearchRun) -> None:
        super().prepare(search)
        net = search.net
        for cell in net.edge_ops():  # beta ~ 1e-3 * randn, one per edge, like the reference
            net.arch_extra[f"beta_{cell}"] = nn.Parameter(1e-3 * torch.randn(len(net.edge_ops()[cell]),
                                                                               device=net.alphas[cell].device))

    def _normalise(self, net: nn.Module, weights: dict[str, torch.Tensor], detach: bool,
                   scales: bool) -> dict[str, torch.Tensor]:
        out = {}
        for cell, w in weights.items():
            beta = net.arch_extra[f"beta_{cell}"]
            norm = edge_normalisation(beta.detach() if detach else beta, net.targets[cell])
            out[cell] = w * norm[:, None]
            if scales:
                out[edge_scale_key(cell)] = norm
        return out

    def edge_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        return self._normalise(net, super().edge_weights(net), detach=False, scales=True)

    def genotype_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        return self._normalise(net, super().genotype_weights(net), detach=True, scales=False)

    def eval_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        return self._normalise(net, super().genotype_weights(net), detach=True, scales=True)


@register_method("pcdarts")
def defaults(space: str) -> dict[str, Any]:
    """CIFAR protocol of the PC-DARTS code (train_search.py): K=4, batch 256, SGD 0.1 -> 0 with
    wd 3e-4 and no Nesterov, arch Adam 6e-4, arch updates from epoch 15, arch step first. NB201 has
    no official PC-DARTS: the same settings, none of the NB201 DARTS script's."""
    return {"pc": {"k": 4, "edge_norm": True}, "batch_size": 256,
            "optim": {"lr": 0.1, "lr_min": 0.0, "weight_decay": 3e-4, "nesterov": False},
            "arch": {"lr": 6e-4, "warmup_epochs": 15, "step_order": "arch_weight"}}
