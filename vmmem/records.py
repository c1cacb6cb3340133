"""Records defined once, as dataclasses: written to JSON, read back, and described by a schema.

A record is a dataclass whose fields carry their type hints and, in
``field(metadata=doc(...))``, what the JSON Schema says of them: a description, the schema
version that added the field (older files lack it, so it is not required), a schema that
overrides the one the type hint gives (an enum, a bound), or that the field is left out of the
JSON. ``to_json``,
``from_json`` and ``json_schema`` all read that one definition, so the file, the reader and the
schema cannot drift apart.

Types understood: int, float, bool, str, None, ``X | None``, list[X], tuple[X, ...],
dict[str, X], Literal[...], Any, and nested records. This module imports nothing of vmmem: any
layer may use it.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["RecordError", "doc", "from_json", "json_schema", "to_json"]

T = TypeVar("T")


class RecordError(ValueError):
    """A JSON value does not fit the record it is read into; ``path`` says where ($.a[0].b)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def doc(
    text: str = "", *, since: int = 1, schema: dict[str, Any] | None = None, json: bool = True
) -> dict[str, Any]:
    """A field's metadata, for ``dataclasses.field(metadata=doc(...))``: ``text`` its
    description; ``since`` the schema version that added it (later than 1: not required, as
    older files lack it, so it needs a default); ``schema`` merged over the schema of its type
    (replacing it if it names a type); ``json=False`` leaves it out of the file."""
    meta: dict[str, Any] = {"doc": text, "since": since, "json": json}
    if schema is not None:
        meta["schema"] = schema
    return meta


def _json_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("json", True)]


def to_json(value: Any) -> Any:
    """Plain JSON values (dict, list, str, numbers, bool, None) from a record, recursively, in
    field order. A nested record whose class has ``to_dict`` (one that adds derived keys) is
    written by it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _nested(getattr(value, f.name)) for f in _json_fields(type(value))}
    return _nested(value)


def _nested(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_dict", None)
        return own() if own is not None else to_json(value)
    if isinstance(value, (list, tuple)):
        return [_nested(x) for x in value]
    if isinstance(value, Mapping):
        return {str(k): _nested(v) for k, v in value.items()}
    return value


_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _hints_cache:
        _hints_cache[cls] = get_type_hints(cls)
    return _hints_cache[cls]


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def from_json(tp: type[T], data: Any, path: str = "$") -> T:
    """A record (or any supported type) from its JSON. Keys the record does not know are
    ignored (a newer or older file); a missing key takes the field's default, and is an error
    (naming the path) only when the field has none."""
    return typing.cast(T, _read(tp, data, path))


def _read(tp: Any, data: Any, path: str) -> Any:
    if tp is Any:
        return data
    if tp is type(None) or tp is None:
        if data is not None:
            raise RecordError(path, f"expected null, got {type(data).__name__}")
        return None
    if _is_union(tp):
        options = get_args(tp)
        if data is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _read(option, data, path)
            except RecordError as e:
                problems.append(e)
        raise problems[0] if problems else RecordError(path, "no type fits")
    origin = get_origin(tp)
    if origin is Literal:
        if data not in get_args(tp):
            raise RecordError(path, f"expected one of {list(get_args(tp))}, got {data!r}")
        return data
    if origin in (list, tuple):
        if not isinstance(data, list):
            raise RecordError(path, f"expected an array, got {type(data).__name__}")
        item = get_args(tp)[0]
        items = [_read(item, x, f"{path}[{i}]") for i, x in enumerate(data)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(data, dict):
            raise RecordError(path, f"expected an object, got {type(data).__name__}")
        value = get_args(tp)[1]
        return {k: _read(value, v, f"{path}.{k}") for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise RecordError(path, f"expected an object, got {type(data).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in _json_fields(tp):
            if not f.init:
                continue
            if f.name in data:
                kwargs[f.name] = _read(hints[f.name], data[f.name], f"{path}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(path, f"missing {f.name!r}")
        return tp(**kwargs)
    if tp is bool:
        if not isinstance(data, bool):
            raise RecordError(path, f"expected a boolean, got {data!r}")
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise RecordError(path, f"expected an integer, got {data!r}")
        return data
    if tp is float:
        if not isinstance(data, (int, float)) or isinstance(data, bool):
            raise RecordError(path, f"expected a number, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise RecordError(path, f"expected a string, got {data!r}")
        return data
    if tp is dict or tp is list:
        if not isinstance(data, tp):
            raise RecordError(path, f"expected {'an object' if tp is dict else 'an array'}")
        return data
    raise TypeError(f"{path}: cannot read type {tp!r}")


def json_schema(tp: Any, names: Mapping[type, str], defs: dict[str, Any] | None = None) -> Any:
    """The JSON Schema (2020-12) of a type. A record named in ``names`` is written once into
    ``defs`` under that name and referred to by ``$ref``; other records are written in place.
    An object's description is its class docstring; a field's, its ``doc``, with the version
    that added it."""
    defs = {} if defs is None else defs
    if tp is Any:
        return {}
    if _is_union(tp):
        options = [o for o in get_args(tp) if o is not type(None)]
        nullable = len(options) < len(get_args(tp))
        if len(options) == 1:
            inner = json_schema(options[0], names, defs)
            if not nullable:
                return inner
            if set(inner) <= {"type", "minimum", "maximum"} and isinstance(inner["type"], str):
                return {**inner, "type": [inner["type"], "null"]}
            return {"oneOf": [{"type": "null"}, inner]}
        choices = [json_schema(o, names, defs) for o in options]
        return {"oneOf": ([{"type": "null"}] if nullable else []) + choices}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (list, tuple):
        return {"type": "array", "items": json_schema(get_args(tp)[0], names, defs)}
    if origin is dict:
        return {
            "type": "object",
            "additionalProperties": json_schema(get_args(tp)[1], names, defs),
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = names.get(tp)
        if name is None:
            return _object(tp, names, defs)
        if name not in defs:
            defs[name] = {}  # a placeholder first: a record may refer to itself
            defs[name] = _object(tp, names, defs)
        return {"$ref": f"#/$defs/{name}"}
    simple: dict[Any, dict[str, Any]] = {
        bool: {"type": "boolean"},
        int: {"type": "integer", "minimum": 0},
        float: {"type": "number"},
        str: {"type": "string"},
        dict: {"type": "object"},
        list: {"type": "array"},
    }
    if tp in simple:
        return dict(simple[tp])
    raise TypeError(f"no JSON schema for {tp!r}")


def _object(cls: type, names: Mapping[type, str], defs: dict[str, Any]) -> dict[str, Any]:
    hints = _hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in _json_fields(cls):
        schema = json_schema(hints[f.name], names, defs)
        given = f.metadata.get("schema", {})
        schema = dict(given) if "type" in given else {**schema, **given}
        since = f.metadata.get("since", 1)
        text = f.metadata.get("doc", "")
        if since > 1:
            text = (text + " " if text else "") + f"(Since version {since}.)"
        else:
            required.append(f.name)
        if text:
            schema["description"] = text
        props[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props, "required": sorted(required)}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):  # not the generated one
        out["description"] = " ".join(inspect.cleandoc(cls.__doc__).split())
    return out
