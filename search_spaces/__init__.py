"""Search spaces, looked up by name: supernets for search, genotype parsing for everything after."""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from search_spaces import darts, nb201, robust_darts


def _nb201(C: int, layers: int, num_classes: int, in_channels: int, track: bool) -> nn.Module:
    return nb201.NB201Supernet(C=C, N=layers, num_classes=num_classes, in_channels=in_channels,
                               track_running_stats=track)


def _darts(C: int, layers: int, num_classes: int, in_channels: int, track: bool) -> nn.Module:
    return darts.DartsSupernet(C=C, layers=layers, num_classes=num_classes, in_channels=in_channels,
                               track_running_stats=track)


def _robust(name: str) -> Callable[..., nn.Module]:
    def build(C: int, layers: int, num_classes: int, in_channels: int, track: bool) -> nn.Module:
        return robust_darts.make_supernet(name, C=C, layers=layers, num_classes=num_classes,
                                          in_channels=in_channels, track_running_stats=track)
    return build


SPACES: dict[str, Callable[..., nn.Module]] = {
    "nb201": _nb201,
    "darts": _darts,
    **{s: _robust(s) for s in ("s1", "s2", "s3", "s4")},
}

GenotypeError = nb201.GenotypeError


def build_supernet(space: str, *, C: int, layers: int, num_classes: int, in_channels: int = 3,
                   track_running_stats: bool = True) -> nn.Module:
    if space not in SPACES:
        raise KeyError(f"unknown space {space!r}; valid: {', '.join(SPACES)}")
    return SPACES[space](C, layers, num_classes, in_channels, track_running_stats)


def parse_genotype(space: str, text: str) -> Any:
    """Parse a genotype of ``space`` (NB201 string; DARTS text or JSON), validated against its ops."""
    if space == "nb201":
        return nb201.parse_genotype(text)
    if space == "darts":
        return darts.parse_genotype(text)
    if space in robust_darts.SPACES:
        return robust_darts.parse_genotype(space, text)
    raise KeyError(f"unknown space {space!r}; valid: {', '.join(SPACES)}")


def genotype_stats(space: str, genotype: Any) -> dict[str, int]:
    """Collapse signals of a genotype: skip-connect and parameter-free op counts."""
    return nb201.genotype_stats(genotype) if space == "nb201" else darts.genotype_stats(genotype)


def genotype_str(space: str, genotype: Any) -> str:
    return nb201.format_genotype(genotype) if space == "nb201" else darts.format_genotype(genotype)
