"""Loading a config: YAML, `--set key=value` overrides, type coercion and validation.
`load_config(Cls, path, ["a.b=3"])` reads YAML, applies the overrides, builds the tree of dataclasses
with type checks and runs each one's `validate()`; every error is one line that names the key and
says what to change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from seller_dist.errors import ConfigError

T = TypeVar("T")


# what a key of each scalar type takes, in the words of its error
EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` (as YAML parsed it) as the type hint `tp`, or a one-line ConfigError naming `key`.
    Strict where YAML is: "3" is no integer and 1 no bool; an integer takes 3.0 and a number takes
    an integer or YAML 1.1's "1e-5" string."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                with contextlib.suppress(ConfigError):
                    return coerce(value, arg, key)
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): coerce(v, args[1] if args else Any, f"{key}.{k}") for k, v in value.items()}
    if tp not in EXPECTED:  # Any
        return value
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        with contextlib.suppress(ValueError):
            return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    bool_mismatch = isinstance(value, bool) != (tp is bool)  # true is no number, 1 no bool
    if bool_mismatch or not isinstance(value, (int, float) if tp is float else tp):
        raise ConfigError(f"{key}: expected {EXPECTED[tp]}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=1)
            hint = f"; did you mean '{(prefix + '.' if prefix else '') + close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint} (valid keys here: {sorted(fields)})")
        kwargs[k] = coerce(v, hints[k], key)
    for name, f in fields.items():
        if name not in kwargs and f.default is f.default_factory is dataclasses.MISSING:  # no default
            raise ConfigError(f"{prefix or cls.__name__}: missing required key '{name}'")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for ov in overrides:
        path, value = parse_override(ov)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{ov}': '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate_tree(cfg: Any, prefix: str = "") -> None:
    """Call `validate()` on every dataclass in the tree, children first."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate_tree(v, f"{prefix}{f.name}.")
    if hasattr(cfg, "validate"):
        cfg.validate()


def from_dict(cls: type[T], data: dict[str, Any], overrides: list[str] | None = None, key: str = "") -> T:
    """`cls` built from `data` with the `--set` overrides applied, type-checked and validated; `key`
    names where `data` sits in a larger config (e.g. "source_options"), for the error messages."""
    data = apply_overrides(dict(data or {}), overrides or [])
    cfg = _build(cls, data, key)
    validate_tree(cfg)
    return cfg


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """`cls` from the YAML file at `path` (None: the defaults) with the `--set` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return from_dict(cls, data, overrides)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
