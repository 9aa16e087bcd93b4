"""Search methods and the one loop they run on (``trials.bilevel``), looked up by name.

A method name is a preset of config fields (the paper's protocol, ``defaults(space)`` in its module);
the method object is composed from the pieces those fields switch on (``trials.registry``). Every module
here registers itself when imported, so adding a method is one new file here. The modules (and torch)
load on first use of one of the names below (PEP 562) or of a registry lookup, so that a torch-free
submodule (``trials.catalog``: the method names for ``raynas methods``) imports in milliseconds.
``SearchConfig`` is composed once all method blocks are registered.
"""

from __future__ import annotations

from typing import Any

from trials import catalog

#: what ``trials.NAME`` finds once every method module is loaded
NAMES = frozenset({"SearchConfig", "METHODS", "build_method", "pieces", "list_methods", "method", "resolve",
                   "from_dict"})


load_methods = catalog.load_methods


def __getattr__(name: str) -> Any:
    if name not in NAMES:
        raise AttributeError(f"module 'trials' has no attribute {name!r}")
    load_methods()
    from trials import darts, registry, search_config

    values = {"SearchConfig": search_config.search_config_class(), "METHODS": registry.list_methods(),
              "build_method": darts.build_method, "pieces": registry.pieces,
              "list_methods": registry.list_methods, "method": registry.method,
              "resolve": search_config.resolve, "from_dict": search_config.from_dict}
    globals().update(values)  # later lookups are plain attributes
    return values[name]
