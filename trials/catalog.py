"""The method modules of this package: their names, read from source without importing them, and their loading.

``raynas methods`` and the CLI's name checks need the names, not the methods: importing the method
modules imports torch (seconds). The names come from the ``@register_method("name")`` decorators
themselves, so the registry (``trials.registry``) stays their one source; a test holds the two equal.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
#: the paper methods first, in the order ``raynas methods`` has always listed them; then any other module
FIRST = ("darts", "pcdarts", "drnas", "rfdarts", "alphadarts")


def module_names() -> list[str]:
    """Every module of ``trials/``, in the order ``trials`` imports (and so registers) them."""
    others = sorted({m.name for m in pkgutil.iter_modules([str(PACKAGE)])} - set(FIRST))
    return [*FIRST, *others]


def _registered(path: Path) -> list[str]:
    """The names in ``@register_method("...")`` decorators of one module, in source order."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "register_method"
                        and dec.args and isinstance(dec.args[0], ast.Constant)):
                    names.append((node.lineno, dec.args[0].value))
    return [name for _, name in sorted(names)]


def method_names() -> list[str]:
    """The registered method names, in registry order, without importing torch."""
    return [name for module in module_names() for name in _registered(PACKAGE / f"{module}.py")]


_loaded = False


def load_methods() -> None:
    """Import every module of the package once, so that each registers its method and pieces (every registry
    lookup calls this: after the first time it returns at once)."""
    global _loaded
    if _loaded:
        return
    for module in module_names():
        importlib.import_module(f"trials.{module}")
    _loaded = True
