"""One override grammar for every config: ``KEY=VALUE`` with a dotted KEY (``optim.lr=2e-4``).

The pydantic model of a config is the only source of the names, types and defaults: a key is
checked against the model's fields (an unknown key names the closest valid ones), the value
is read as YAML (``3``, ``0.5``, ``true``, ``null``, ``[0.25, 0.5]``, a plain string), set
into the nested settings, and the whole config is validated again (a bad value names the key
and the type it expects). ``negforge generate --set``, ``negforge train --set`` and the stage
settings of ``negforge run --set STAGE.KEY=VALUE`` all go through this module; the commands'
named flags are aliases that produce the same :class:`Assignment`.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from negforge.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Assignment:
    """One setting: a dotted ``key``, its ``value`` and how it was written (for messages)."""

    key: str
    value: Any
    source: str


def parse_assignment(text: str, option: str = "--set") -> Assignment:
    """``"a.b=c"`` -> ``Assignment("a.b", <c read as YAML>, "--set a.b=c")``."""
    source = f"{option} {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"{source}: expected KEY=VALUE with a dotted KEY, e.g. optim.lr=2e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ConfigError(f"{source}: the value is not YAML ({problem})") from exc
    return Assignment(key=key, value=value, source=source)


def _optional_args(annotation: Any) -> list[Any]:
    """The members of a union annotation without ``None`` (``[annotation]`` otherwise)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a nested section (``ModelSettings`` of ``model: ModelSettings``)."""
    for arg in _optional_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf setting of ``model`` as ``{dotted name: FieldInfo}`` (sections walked)."""
    leaves: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        nested = section_model(info.annotation)
        if nested is not None:
            leaves.update(leaf_fields(nested, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = info
    return leaves


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        nested = section_model(info.annotation)
        if nested is not None:
            keys.extend(_all_keys(nested, f"{prefix}{name}."))
    return keys


def closest_keys(model: type[BaseModel], key: str, n: int = 3) -> list[str]:
    """The valid dotted keys of ``model`` closest to ``key`` (by spelling, then by last part)."""
    keys = _all_keys(model)
    found = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    last = key.rsplit(".", 1)[-1]
    by_leaf = [k for k in keys if difflib.get_close_matches(last, [k.rsplit(".", 1)[-1]],
                                                            cutoff=0.75)]  # fmt: skip
    return list(dict.fromkeys([*found, *by_leaf]))[:n]


def check_key(model: type[BaseModel], key: str, source: str | None = None) -> FieldInfo:
    """The field ``key`` names in ``model`` (a leaf or a section); a clear error otherwise."""
    current: type[BaseModel] | None = model
    info: FieldInfo | None = None
    for depth, part in enumerate(key.split(".")):
        fields = current.model_fields if current is not None else {}
        if part not in fields:
            parent = ".".join(key.split(".")[:depth])
            where = f" ({parent} has no setting '{part}')" if parent and current else ""
            close = closest_keys(model, key)
            hint = f"; closest: {', '.join(close)}" if close else ""
            prefix = f"{source}: " if source else ""
            raise ConfigError(f"{prefix}unknown key '{key}'{where}{hint}")
        info = fields[part]
        current = section_model(info.annotation)
    assert info is not None
    return info


def set_path(target: dict[str, Any], key: str, value: Any) -> None:
    """``target["a"]["b"] = value`` for ``key == "a.b"`` (creating the levels)."""
    *parents, leaf = key.split(".")
    for part in parents:
        level = target.get(part)
        if not isinstance(level, dict):
            level = target[part] = {}
        target = level
    target[leaf] = value


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``update`` (neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _split_list(info: FieldInfo, value: Any) -> Any:
    """Text for a list / tuple setting given as ``a,b,c`` -> a list (each item read as YAML)."""
    kinds = {typing.get_origin(a) for a in _optional_args(info.annotation)}
    if isinstance(value, str) and kinds & {list, tuple}:
        return [yaml.safe_load(item) for item in value.split(",") if item.strip()]
    return value


def checked(model: type[BaseModel], assignments: Iterable[Assignment]) -> dict[str, Any]:
    """``{dotted key: value}`` of the assignments, every key checked against ``model`` (later
    assignments win; a list setting given as ``a,b`` becomes a list)."""
    return {item.key: _split_list(check_key(model, item.key, item.source), item.value)
            for item in assignments}  # fmt: skip


def apply(
    model: type[BaseModel], data: Mapping[str, Any], assignments: Iterable[Assignment]
) -> dict[str, Any]:
    """``data`` (nested settings) with every assignment checked against ``model`` and set."""
    result = copy.deepcopy(dict(data))
    for key, value in checked(model, assignments).items():
        set_path(result, key, value)
    return result


def type_name(annotation: Any) -> str:
    """The type a setting expects, in words (``integer``, ``one of drop|random``, ...)."""
    args = _optional_args(annotation)
    optional = type(None) in typing.get_args(annotation)
    names = []
    for arg in args:
        origin = typing.get_origin(arg)
        if origin is typing.Literal:
            names.append("one of " + "|".join(str(a) for a in typing.get_args(arg)))
        elif isinstance(arg, type) and issubclass(arg, Enum):
            names.append("one of " + "|".join(str(m.value) for m in arg))
        elif origin in (list, tuple):
            inner = [a for a in typing.get_args(arg) if a is not Ellipsis]
            names.append(f"a list of {type_name(inner[0]) if inner else 'values'}")
        elif arg is bool:
            names.append("true or false")
        elif arg is int:
            names.append("an integer")
        elif arg is float:
            names.append("a number")
        elif arg is str:
            names.append("text")
        elif arg is Path:
            names.append("a path")
        elif isinstance(arg, type) and issubclass(arg, BaseModel):
            names.append(f"a mapping of {arg.__name__} settings")
        else:
            names.append(getattr(arg, "__name__", str(arg)))
    return " or ".join([*names, "null"] if optional else names)


def _field_at(model: type[BaseModel], loc: tuple[Any, ...]) -> FieldInfo | None:
    current: type[BaseModel] | None = model
    info = None
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return info if isinstance(part, int) else None
        info = current.model_fields[part]
        current = section_model(info.annotation)
    return info


def describe_error(
    model: type[BaseModel], exc: ValidationError, sources: Mapping[str, str] | None = None
) -> str:
    """One line for a validation error: the key, what was given, what it expects."""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "settings"
    given = sources or {}
    source = next((given[k] for k in sorted(given, key=len, reverse=True)
                   if key == k or key.startswith(k + ".")), None)  # fmt: skip
    info = _field_at(model, loc)
    if first["type"] == "extra_forbidden":
        close = closest_keys(model, key)
        hint = f"; closest: {', '.join(close)}" if close else ""
        message = f"unknown key '{key}'{hint}"
    else:
        expected = f" (expected {type_name(info.annotation)})" if info is not None else ""
        message = f"invalid value for {key}: {first['msg']}{expected}"
    return f"{source}: {message}" if source else message


def validate(
    model: type[ModelT], data: Mapping[str, Any], sources: Mapping[str, str] | None = None
) -> ModelT:
    """``model`` validated from ``data``; a :class:`ConfigError` naming key and type if bad."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_error(model, exc, sources)) from exc


def build(
    model: type[ModelT], assignments: Iterable[Assignment], base: Mapping[str, Any] | None = None
) -> ModelT:
    """``model`` from ``base`` settings with ``assignments`` applied (checked, then validated)."""
    listed = list(assignments)
    data = apply(model, base or {}, listed)
    return validate(model, data, {item.key: item.source for item in listed})
