"""Frozen-dataclass configs saved as JSON: `from_dict` rebuilds exactly and refuses unknown keys."""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ._fileio import atomic_write_text
from .errors import InputError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a (nested) dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict, *, source: str | os.PathLike | None = None) -> T:
    """Build dataclass `cls` from `data`. Unknown keys are an error; missing keys take defaults."""
    if not isinstance(data, dict):
        raise InputError(source, f"config for {cls.__name__} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(source, f"unknown key(s) in {cls.__name__} config: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, f"{cls.__name__}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(source, f"invalid {cls.__name__} config: {e}") from None


def _coerce(tp: Any, value: Any, source, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(source, f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source, where) for v in value)
        if len(args) != len(value):
            raise InputError(source, f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, source, where) for a, v in zip(args, value))
    # `Optional[X]` has origin typing.Union; `X | None` (PEP 604) has origin types.UnionType.
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(args[0], value, source, where) if len(args) == 1 else value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise InputError(source, f"{where} must be {tp.__name__}, got {value!r}")
    return value


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(p, f"not valid JSON ({e})") from None
    return from_dict(cls, data, source=p)
