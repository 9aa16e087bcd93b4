"""Search methods, looked up by name.

A method name is a preset of config fields (the paper's protocol, ``defaults(space)`` in its
module); the method object is composed from the pieces those fields switch on, each a small
subclass of ``trials.darts.Darts`` overriding one or two hooks. So combinations no paper published
(DrNAS + MIM, RF-DARTS + MIM, PC-DARTS + random features, ...) run from config alone.
"""

from __future__ import annotations

from typing import Any, Callable

from raynas.config import SearchConfig
from trials import alphadarts, darts, drnas, pcdarts, rfdarts

METHODS: dict[str, Callable[[str], dict[str, Any]]] = {
    "darts": darts.defaults,
    "darts2": darts.defaults_second_order,
    "pcdarts": pcdarts.defaults,
    "drnas": drnas.defaults,
    "rfdarts": rfdarts.defaults,
    "rfpcdarts": rfdarts.defaults_pcdarts,
    "alphadarts": alphadarts.defaults,
}


def method_defaults(method: str, space: str) -> dict[str, Any]:
    return METHODS[method](space) if method in METHODS else {}


def pieces(cfg: SearchConfig) -> list[type[darts.Darts]]:
    """The pieces a resolved config switches on, outermost first."""
    chosen: list[type[darts.Darts]] = []
    if cfg.mim.enabled:
        chosen.append(alphadarts.MaskedImageModelling)
    if cfg.rf.enabled:
        chosen.append(rfdarts.RandomFeatures)
    if cfg.drnas.progressive:
        chosen.append(drnas.Progressive)
    if cfg.pc.edge_norm:  # outside the relaxation: it scales whatever weights the relaxation gives
        chosen.append(pcdarts.EdgeNormalisation)
    if cfg.relaxation == "dirichlet":
        chosen.append(drnas.Dirichlet)
    if cfg.arch.order == 2:
        chosen.append(darts.SecondOrder)
    return chosen


def build_method(cfg: SearchConfig) -> darts.Darts:
    chosen = pieces(cfg)
    if not chosen:
        return darts.Darts(cfg)
    cls = type("+".join(p.__name__ for p in chosen), (*chosen, darts.Darts), {})
    return cls(cfg)
