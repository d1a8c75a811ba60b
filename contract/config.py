"""Typed configs: dataclasses filled from a YAML file, then from `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclass."""


def _to_bool(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true/false, got {value!r}")


def _to_number(tp: type):
    def convert(value, key: str):
        if isinstance(value, bool):  # YAML's true is an int to Python; never a number here
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value) if tp is float else int(str(value), 0)
        except ValueError:
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None

    return convert


def _to_str(value, key: str) -> str:
    if isinstance(value, dict | list):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return str(value)


# Scalar type -> converter(value, key); each names the key in its ConfigError.
_SCALARS = {bool: _to_bool, int: _to_number(int), float: _to_number(float), str: _to_str}


def _convert(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        (inner, *_) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, inner, key)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_convert(v, item_tp, key) for v in value]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    convert = _SCALARS.get(tp)
    return convert(value, key) if convert else value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key: {prefix}{unknown[0]} (known: {sorted(names)})")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
    data[leaf] = value


def load_config(cls, path: str | Path | None = None, overrides: typing.Sequence[str] = ()):
    """Build `cls` from defaults < YAML file < `a.b=value` overrides; unknown keys are errors."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" line {where.line + 1}" if where else ""
            raise ConfigError(f"config file {path}{line} is not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top")
        data = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(value) if value else "")
    return _build(cls, data)


def from_dict(cls, data: dict):
    """Rebuild a config saved with to_dict (e.g. the one inside a checkpoint)."""
    return _build(cls, data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
