"""Methods by name, the way timm looks up models: each method module registers what it brings.

A method module registers up to three things, with decorators, in its own file:
- ``@register_method("pcdarts")`` on ``defaults(space)``: the paper's protocol as config values (a preset);
- ``@register_section("pc")`` on a config dataclass: the method's own block of the search config, with
  ``check(cfg)`` for its ranges and, optionally, ``supernet_options()`` for structural choices;
- ``@register_piece(order, when=...)`` on a small ``Darts`` subclass: the hooks it overrides, switched on
  by config. ``trials.darts.build_method`` composes the active pieces (outermost = lowest order) over ``Darts``, so
  combinations no paper published (DrNAS + MIM, PC-DARTS + random features) run from config alone.
Adding a method is one new module under ``trials/`` (imported by ``trials.load_methods``) plus its test.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from trials.config import ConfigError

Preset = Callable[[str], dict[str, Any]]

_METHODS: dict[str, Preset] = {}
SECTIONS: dict[str, type] = {}


@dataclass(frozen=True)
class Piece:
    order: int                        # lower = outer (earlier in the MRO)
    cls: type
    when: Callable[[Any], bool]       # switched on by the resolved config
    relaxation: str | None = None     # a value of ``relaxation`` this piece implements (how alpha -> weights)


_PIECES: list[Piece] = []


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[Any], Any]:
    def add(obj: Any) -> Any:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = obj
        return obj
    return add


def register_method(name: str) -> Callable[[Preset], Preset]:
    return _register(_METHODS, "method", name)


def register_section(name: str) -> Callable[[type], type]:
    return _register(SECTIONS, "config section", name)


def register_piece(order: int, when: Callable[[Any], bool] | None = None,
                   relaxation: str | None = None) -> Callable[[type], type]:
    """``when(cfg)`` switches the piece on; a ``relaxation`` piece is on when ``cfg.relaxation`` names it."""
    def add(cls: type) -> type:
        test = when if when is not None else (lambda cfg: cfg.relaxation == relaxation)
        _PIECES.append(Piece(order, cls, test, relaxation))
        _PIECES.sort(key=lambda p: p.order)
        return cls
    return add


def _load() -> None:
    """Lookups see every method of the package, however the caller came to import this module."""
    from trials.catalog import load_methods

    load_methods()


def list_methods() -> list[str]:
    _load()
    return list(_METHODS)


def method(name: str) -> Preset:
    """The preset of method ``name``; unknown names get a one-line error with the closest match."""
    _load()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, _METHODS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown method {name!r}{hint}; valid: {', '.join(_METHODS)}")
    return _METHODS[name]


def relaxations() -> list[str]:
    """Values ``relaxation`` may take: DARTS' softmax and every registered alternative."""
    _load()
    return ["softmax", *(p.relaxation for p in _PIECES if p.relaxation)]


def all_pieces() -> list[type]:
    """Every registered piece, outermost first (what any config may switch on)."""
    _load()
    return [p.cls for p in _PIECES]


def pieces(cfg: Any) -> list[type]:
    """The pieces a resolved config switches on, outermost first."""
    _load()
    return [p.cls for p in _PIECES if p.when(cfg)]

