"""Typed configs from YAML and ``--set key=value``: the machinery every config of raynas shares.

A config is a dataclass; ``build(cls, mapping)`` checks each value against the field's type hint and
raises one ``ConfigError`` line naming the key (with "did you mean" for unknown keys). Nothing here
knows about searches, methods or datasets: the search config (``trials.search_config``), retraining,
NAR and experiment files all use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message is one line saying what to fix."""


def need(cond: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``cond``: the one-line range checks of every config."""
    if not cond:
        raise ConfigError(msg)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, merging nested mappings key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1}`` -> ``{"optim": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is a value, not a section")
        node[leaf] = value
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "epochs=3"]`` -> nested dict; values are parsed as YAML scalars."""
    flat = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            flat[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({e.__class__.__name__})") from None
    return unflatten(flat)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line errors for a missing or malformed file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file (expected YAML)") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a type hint, with a one-line error naming ``key``."""
    tp = {dict: dict[str, Any], list: list[Any]}.get(tp, tp)  # bare ``dict``/``list`` hints: any items
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        # the value's own type first: 1.0 under ``int | float`` stays the fraction 1.0, not the count 1
        for a in sorted(args, key=lambda a: a is not type(value)):
            if a is type(None):
                continue
            try:
                return convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 and 1.0e30 as strings
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, value_tp = typing.get_args(tp) or (Any, Any)
        return {k: convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``; unknown keys get a "did you mean", a key the
    class lists in ``REMOVED`` (old key -> what replaces it) one line naming its replacement."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    removed = getattr(cls, "REMOVED", {})
    for key in data:
        if key in removed:
            raise ConfigError(f"config key {prefix}{key} was removed; use {prefix}{removed[key]}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; valid: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {k: convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)
