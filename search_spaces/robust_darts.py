"""RobustDARTS spaces S1-S4 (Zela et al., ICLR 2020; automl/RobustDARTS ``src/spaces.py``) as data.

Each space only restricts the candidate ops per edge; everything else is the DARTS supernet, so a
space is a ``{"normal": [14 op tuples], "reduce": [...]}`` table handed to :class:`DartsSupernet`.
Rows follow the DARTS edge order 0->2, 1->2, 0->3, 1->3, 2->3, 0->4, ...
"""

from __future__ import annotations

from typing import Any

from search_spaces.darts import DartsSupernet, Genotype
from search_spaces.darts import parse_genotype as _parse

_SKIP_DIL3 = ("skip_connect", "dil_conv_3x3")
_SKIP_DIL5 = ("skip_connect", "dil_conv_5x5")
_SKIP_SEP3 = ("skip_connect", "sep_conv_3x3")
_MAX_SKIP = ("max_pool_3x3", "skip_connect")
_MAX_AVG = ("max_pool_3x3", "avg_pool_3x3")
_DIL3_DIL5 = ("dil_conv_3x3", "dil_conv_5x5")

SPACES: dict[str, dict[str, list[tuple[str, ...]]]] = {
    # S1: two ops per edge, the ones the RobustDARTS authors found strongest per edge
    "s1": {
        "normal": [_SKIP_DIL3, _SKIP_DIL5, _SKIP_DIL5, _SKIP_SEP3, _SKIP_DIL3, _MAX_SKIP, _SKIP_SEP3,
                   _SKIP_SEP3, _SKIP_DIL3, _SKIP_SEP3, _MAX_SKIP, _SKIP_DIL3, _DIL3_DIL5, _DIL3_DIL5],
        "reduce": [_MAX_AVG, ("max_pool_3x3", "dil_conv_3x3"), _MAX_AVG, _MAX_AVG, _SKIP_DIL5, _MAX_AVG,
                   ("max_pool_3x3", "sep_conv_3x3"), _SKIP_DIL3, _SKIP_DIL5, _MAX_AVG, _MAX_AVG,
                   _SKIP_DIL5, _SKIP_DIL5, _SKIP_DIL5],
    },
    "s2": {cell: [_SKIP_SEP3] * 14 for cell in ("normal", "reduce")},
    "s3": {cell: [("none", "skip_connect", "sep_conv_3x3")] * 14 for cell in ("normal", "reduce")},
    "s4": {cell: [("noise", "sep_conv_3x3")] * 14 for cell in ("normal", "reduce")},
}


def _space(name: str) -> dict[str, list[tuple[str, ...]]]:
    if name.lower() not in SPACES:
        raise KeyError(f"unknown RobustDARTS space {name!r}; valid: {', '.join(SPACES)}")
    return SPACES[name.lower()]


def make_supernet(name: str, **kw: Any) -> DartsSupernet:
    """The DARTS supernet restricted to space ``name`` (``s1``..``s4``); ``kw`` as for DartsSupernet."""
    net = DartsSupernet(edge_ops=_space(name), **kw)
    net.space = name.lower()
    return net


def parse_genotype(name: str, text: str | dict) -> Genotype:
    """Parse a genotype and check every op against the candidates of its edge in space ``name``."""
    return _parse(text, ops=_space(name))
