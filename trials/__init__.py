"""Search methods and the one loop they run on (``trials.bilevel``), looked up by name.

A method name is a preset of config fields (the paper's protocol, ``defaults(space)`` in its module);
the method object is composed from the pieces those fields switch on (``trials.registry``). Importing
this package imports every module in it, so each method module registers itself: adding a method is
one new file here. ``SearchConfig`` is composed once all method blocks are registered.
"""

from __future__ import annotations

import importlib
import pkgutil

from trials import darts, registry, search_config

# The paper methods first, in the order `raynas methods` has always listed them; then any other module.
_FIRST = ["darts", "pcdarts", "drnas", "rfdarts", "alphadarts"]
for _module in _FIRST + sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_FIRST)):
    importlib.import_module(f"{__name__}.{_module}")

SearchConfig = search_config.search_config_class()
METHODS = registry.list_methods()
build_method, pieces = darts.build_method, registry.pieces
list_methods, method = registry.list_methods, registry.method
resolve, from_dict = search_config.resolve, search_config.from_dict
