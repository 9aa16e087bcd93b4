"""RF-DARTS / RF-PCDARTS (Zhang et al., CVPR 2023): search with random features.

Every convolution keeps its random initialisation (``requires_grad=False``, never updated); the
supernet's BatchNorms become affine and only their gamma/beta train (with their own weight decay,
``rf.bn_weight_decay``), plus the classifier if ``rf.train_classifier``. Alpha (and PC-DARTS' beta)
train as in the base method. The paper's code is not public: the choices are config fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataclasses import dataclass

import torch.nn as nn

from search_spaces.supernet import auxiliary_modules
from trials.config import need
from trials.darts import Darts
from trials.pcdarts import defaults as pcdarts_defaults
from trials.registry import register_method, register_piece, register_section

if TYPE_CHECKING:
    from trials.step import SearchRun


def _searched(net: nn.Module):
    """Modules of the supernet proper (auxiliary ones, e.g. a MIM decoder, are not random features)."""
    aux = auxiliary_modules(net)
    return (m for m in net.modules() if id(m) not in aux)


@register_section("rf")
@dataclass
class RandomFeaturesConfig:
    """RF-DARTS: convolutions keep their random init; only BN (+ optionally the classifier) trains."""
    enabled: bool = False
    train_classifier: bool = False
    bn_weight_decay: float = 0.0

    def check(self, cfg: Any) -> None:
        need(self.bn_weight_decay >= 0, f"rf.bn_weight_decay must be >= 0, got {self.bn_weight_decay}")


@register_piece(20, when=lambda cfg: cfg.rf.enabled)
class RandomFeatures(Darts):
    def supernet_options(self) -> dict[str, Any]:
        return {**super().supernet_options(), "affine": True}

    def prepare(self, search: SearchRun) -> None:
        super().prepare(search)
        for m in _searched(search.net):
            if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and not self.cfg.rf.train_classifier):
                m.requires_grad_(False)

    def weight_param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        bn = {id(p) for m in _searched(net) if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
        params = self.weight_parameters(net)
        groups = [{"params": [p for p in params if id(p) in bn], "weight_decay": self.cfg.rf.bn_weight_decay}]
        rest = [p for p in params if id(p) not in bn]
        return groups + ([{"params": rest}] if rest else [])


@register_method("rfdarts")
def defaults(space: str) -> dict[str, Any]:
    """RF-DARTS: DARTS' protocol with random features."""
    return {"rf": {"enabled": True}}


@register_method("rfpcdarts")
def defaults_pcdarts(space: str) -> dict[str, Any]:
    """RF-PCDARTS: PC-DARTS' protocol with random features."""
    return {**pcdarts_defaults(space), "rf": {"enabled": True}}
