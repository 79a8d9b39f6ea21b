"""Decode a request object against its kind's schema, as the API server's JSON decoder does (pure).

A real API server decodes JSON into Go structs: fields the type does not have
are dropped (and reported per ``fieldValidation``: ``Strict`` fails the request
with 400 ``strict decoding error: unknown field "spec.x"``, ``Warn`` — the
default — answers with a ``Warning`` header per field, ``Ignore`` says
nothing), and a value of the wrong JSON type fails with 400 ``json: cannot
unmarshal string into Go struct field PodSpec.spec.containers of type
[]v1.Container``.  This module walks an object against the upstream schema
(:mod:`.schemas`) and reproduces both, with the Go type names derived from
the definition names.  Duplicate JSON keys are not detected (the body is
parsed by ``json.loads`` first).
"""

from __future__ import annotations

from typing import Any

from . import schemas, writes
from .status import bad_request


class _TypeError(Exception):
    pass


def _short(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def _go_type(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        return _short(ref.rpartition("/")[2])
    kind = schema.get("type")
    if kind == "array":
        return "[]" + _go_type(schema.get("items") or {})
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "map[string]" + _go_type(extra)
        return "map[string]interface {}"
    if kind == "integer":
        return {"int32": "int32", "int64": "int64"}.get(schema.get("format", ""), "int")
    if kind == "number":
        return "float64"
    return {"boolean": "bool", "string": "string"}.get(str(kind), "interface {}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "value"


class _Walk:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def fail(self, value: Any, struct: str, path: str, schema: dict[str, Any]) -> None:
        got = _json_type(value)
        if got == "number" and not (isinstance(value, int) or float(value).is_integer()):
            got = f"number {value}"
        where = f"Go struct field {struct}.{path}" if struct else "Go value"
        raise _TypeError(f"json: cannot unmarshal {got} into {where} of type {_go_type(schema)}")

    def value(self, value: Any, schema: dict[str, Any], struct: str, path: str, shown: str) -> Any:
        if value is None:
            return None
        ref = schema.get("$ref")
        if ref:
            name = ref.rpartition("/")[2]
            target = schemas.definition(name)
            if target.get("type") == "object" and "properties" in target:
                if not isinstance(value, dict):
                    self.fail(value, struct, path, schema)
                return self.struct(value, target, name.rpartition(".")[2], path, shown)
            return self.value(value, target, struct, path, shown) if "$ref" not in target else value
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                self.fail(value, struct, path, schema)
            if "properties" in schema:
                return self.struct(value, schema, struct, path, shown)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return {k: self.value(v, extra, struct, path, f"{shown}.{k}") for k, v in value.items()}
            return value
        if kind == "array":
            if not isinstance(value, list):
                self.fail(value, struct, path, schema)
            items = schema.get("items") or {}
            return [self.value(v, items, struct, path, f"{shown}[{i}]") for i, v in enumerate(value)]
        if kind == "string":
            ok = isinstance(value, str) or (schema.get("format") == "int-or-string" and _json_type(value) == "number")
        elif kind == "integer":
            ok = _json_type(value) == "number" and (isinstance(value, int) or float(value).is_integer())
        elif kind == "number":
            ok = _json_type(value) == "number"
        elif kind == "boolean":
            ok = isinstance(value, bool)
        else:
            ok = True  # Quantity (string or number), untyped values
        if not ok:
            self.fail(value, struct, path, schema)
        return value

    def struct(self, value: dict[str, Any], schema: dict[str, Any], struct: str, path: str,
               shown: str) -> dict[str, Any]:
        props = schema["properties"]
        out = {}
        for key, sub in value.items():
            where = f"{shown}.{key}" if shown else key
            if key not in props:
                self.unknown.append(where)
                continue
            out[key] = self.value(sub, props[key], struct, f"{path}.{key}" if path else key, where)
        return out


def decode(obj: dict[str, Any], group: str, version: str, kind: str) -> dict[str, Any]:
    """``obj`` as the API server would store it: unknown fields dropped, types checked.

    Raises a 400 :class:`~.status.ApiError` for a type mismatch, and for unknown
    fields under ``fieldValidation=Strict``; under ``Warn`` the fields are added to
    the request's warnings.  Kinds without an upstream schema pass unchanged.
    """
    schema = schemas.by_gvk(group, version, kind)
    if schema is None:
        return obj
    walk = _Walk()
    prefix = f"{kind} in version \"{version}\" cannot be handled as a {kind}: "
    try:
        out = walk.struct(obj, schema, kind, "", "")
    except _TypeError as exc:
        raise bad_request(prefix + str(exc)) from None
    context = writes.current()
    if walk.unknown and context is not None:
        messages = [f'unknown field "{path}"' for path in walk.unknown]
        if context.directive == "Strict":
            raise bad_request(prefix + "strict decoding error: " + ", ".join(messages))
        if context.directive == "Warn":
            context.warnings.extend(messages)
    return out
