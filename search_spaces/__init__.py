"""Search spaces: NAS-Bench-201, the DARTS CNN space, RobustDARTS S1-S4, NAS-Bench-101.

The names (``build_supernet``, ``parse_genotype``, ``SPACES``, ...) are those of :mod:`search_spaces.registry`,
loaded on first use (PEP 562) so that a torch-free submodule such as :mod:`search_spaces.nb201_genotype`
imports without torch.
"""

from __future__ import annotations

from typing import Any

#: the spaces by name, in the order ``raynas methods`` lists them (``SPACES`` maps them to supernet builders)
SPACE_NAMES = ("nb201", "darts", "s1", "s2", "s3", "s4")

#: what ``search_spaces.NAME`` finds in the registry; any other name is a submodule (``from search_spaces
#: import darts`` imports it as usual)
REGISTRY_NAMES = frozenset({"SPACES", "GenotypeError", "build_supernet", "parse_genotype", "genotype_stats",
                            "genotype_str", "genotype_json", "cell_graphs", "degenerate_reason", "accelerate",
                            "recompute_off", "set_recompute"})


def __getattr__(name: str) -> Any:
    if name not in REGISTRY_NAMES:
        raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("search_spaces.registry"), name)
