"""Plain data (parsed YAML, dotted overrides) to typed config dataclasses, and back.

A typo in a config key must not silently fall back to a default, so unknown keys are
errors that name every one of them (with the closest known key). Values are checked
against the field's annotation: `int`, `float`, `str`, `bool`, `Literal[...]`, optional,
tuples, lists and mappings of those, and nested dataclasses. Mappings given over a base
config merge into its mapping; everything else replaces.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Mapping, Union

from model_code.errors import ConfigError

__all__ = ["check", "from_dict", "set_dotted", "to_dict"]


def check(ok: bool, field: str, message: str) -> None:
    """Raise `ConfigError` naming `field` (a dotted key) unless `ok`."""
    if not ok:
        raise ConfigError(message, field=field)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """`data["a"]["b"] = value` for `key` "a.b", creating the mappings on the way."""
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{'.'.join(parents[:i + 1])}' is not a section", field=key)
        node = child
    node[last] = value


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: Any, prefix: str = "", base: Any = None) -> Any:
    """An instance of dataclass `cls` from `data`; missing keys come from `base` or defaults.

    Raises `ConfigError` naming the dotted key (`prefix.key`) of the first wrong value, or
    every unknown key at once.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a section of keys, got {data!r}", field=prefix or None)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(_join(prefix, k)) for k in unknown)}"
            + _suggestions(unknown, fields, prefix) + f"; known: {', '.join(fields)}",
            field=_join(prefix, str(unknown[0])),
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        field = _join(prefix, name)
        current = getattr(base, name) if base is not None else None
        values[name] = _convert(hints[name], value, field, current)
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _suggestions(unknown: list, fields: Mapping[str, Any], prefix: str) -> str:
    close = {k: difflib.get_close_matches(str(k), list(fields), n=1) for k in unknown}
    hints = [f"'{_join(prefix, m[0])}'" for m in close.values() if m]
    return f" (did you mean {' or '.join(hints)}?)" if hints else ""


def _convert(tp: Any, value: Any, field: str, current: Any = None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, field, current)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(errors[0] if len(options) == 1 else f"none of {_name(tp)} fits {value!r}", field=field)
    if value is None:
        raise ConfigError(f"must be set ({_name(tp)}), got null", field=field)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, field, current if dataclasses.is_dataclass(current) else None)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"must be one of {', '.join(repr(a) for a in args)}; got {value!r}", field=field)
        return value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list ({_name(tp)}), got {value!r}", field=field)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"expected {len(args)} values ({_name(tp)}), got {value!r}", field=field)
            items = [_convert(a, v, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping ({_name(tp)}), got {value!r}", field=field)
        key_tp, value_tp = args if args else (Any, Any)
        merged = dict(current) if isinstance(current, Mapping) else {}
        for k, v in value.items():
            if key_tp is int and isinstance(k, str) and k.strip().lstrip("-").isdigit():
                k = int(k)  # dotted overrides give keys as text ("loss.level_weights.500")
            merged[_convert(key_tp, k, f"{field}.{k}")] = _convert(value_tp, v, f"{field}.{k}")
        return merged
    return _scalar(tp, value, field)


def _scalar(tp: Any, value: Any, field: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"expected {_name(tp)}, got {value!r}", field=field)


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")
