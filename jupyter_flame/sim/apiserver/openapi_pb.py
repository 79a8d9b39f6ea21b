"""Encode an OpenAPI v2 document as the protobuf a real API server serves (pure).

``/openapi/v2`` in protobuf is gnostic's ``openapi.v2.Document`` message
(github.com/google/gnostic-models, ``openapiv2/OpenAPIv2.proto``); client-go
asks for it in that form only.  We write the subset of the message a
Kubernetes document uses: info, paths with operations and parameters, and
definitions with every schema keyword the upstream definitions carry.  Vendor
extensions (``x-kubernetes-*``) travel as ``NamedAny`` with their value as
YAML text, as gnostic stores them (JSON is valid YAML).

No protobuf library is needed for this: the wire format is a handful of
varints and length-delimited fields, and a generated module would pull in the
whole gnostic schema for one response.
"""

from __future__ import annotations

import json
import struct
from typing import Any

CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
#: What clients send in ``Accept`` (older spelling, still the one client-go uses).
CONTENT_TYPE_DEPRECATED = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _str(num: int, value: str) -> bytes:
    return _len(num, value.encode()) if value else b""


def _bool(num: int, value: bool) -> bytes:
    return _varint(num << 3) + b"\x01" if value else b""


def _int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value) if value else b""


def _double(num: int, value: float) -> bytes:
    return _varint(num << 3 | 1) + struct.pack("<d", value)


def _any(value: Any) -> bytes:
    """``Any{yaml}``: a value as YAML text (field 2)."""
    return _str(2, json.dumps(value, separators=(",", ":")))


def _extensions(num: int, node: dict[str, Any]) -> bytes:
    return b"".join(_len(num, _str(1, key) + _len(2, _any(value)))
                    for key, value in node.items() if key.startswith("x-"))


def schema(node: dict[str, Any]) -> bytes:
    """``openapi.v2.Schema``."""
    out = [_str(1, node.get("$ref", "")), _str(2, node.get("format", "")), _str(3, node.get("title", "")),
           _str(4, node.get("description", ""))]
    if "default" in node:
        out.append(_len(5, _any(node["default"])))
    for key, num in (("maximum", 7), ("minimum", 9)):
        if key in node:
            out.append(_double(num, float(node[key])))
    for key, num in (("maxLength", 11), ("minLength", 12), ("maxItems", 14), ("minItems", 15),
                     ("maxProperties", 17), ("minProperties", 18)):
        out.append(_int(num, int(node.get(key, 0))))
    out.append(_str(13, node.get("pattern", "")))
    out.append(_bool(16, bool(node.get("uniqueItems"))))
    out.extend(_str(19, name) for name in node.get("required", ()))
    out.extend(_len(20, _any(value)) for value in node.get("enum", ()))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(_len(21, _len(1, schema(extra))))
    elif isinstance(extra, bool):
        out.append(_len(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00")))
    types = node.get("type")
    if types:
        out.append(_len(22, b"".join(_str(1, t) for t in ([types] if isinstance(types, str) else types))))
    if isinstance(node.get("items"), dict):
        out.append(_len(23, _len(1, schema(node["items"]))))
    out.extend(_len(24, schema(sub)) for sub in node.get("allOf", ()))
    props = node.get("properties")
    if props:
        out.append(_len(25, b"".join(_len(1, _str(1, name) + _len(2, schema(sub)))
                                     for name, sub in props.items())))
    out.append(_bool(27, bool(node.get("readOnly"))))
    out.append(_extensions(31, node))
    return b"".join(out)


def _parameter(param: dict[str, Any]) -> bytes:
    """``ParametersItem{Parameter}`` for a body, query or path parameter."""
    where = param["in"]
    if where == "body":
        body = (_str(1, param.get("description", "")) + _str(2, param["name"]) + _str(3, "body")
                + _bool(4, bool(param.get("required"))) + _len(5, schema(param.get("schema", {}))))
        return _len(1, _len(1, body))
    if where == "path":
        sub = (_bool(1, True) + _str(2, "path") + _str(3, param.get("description", "")) + _str(4, param["name"])
               + _str(5, param.get("type", "string")) + _bool(19, bool(param.get("uniqueItems"))))
        non_body = _len(4, sub)
    else:
        sub = (_bool(1, bool(param.get("required"))) + _str(2, "query") + _str(3, param.get("description", ""))
               + _str(4, param["name"]) + _str(6, param.get("type", "string"))
               + _bool(20, bool(param.get("uniqueItems"))))
        non_body = _len(3, sub)
    return _len(1, _len(2, non_body))


def _operation(op: dict[str, Any]) -> bytes:
    out = [b"".join(_str(1, tag) for tag in op.get("tags", ())), _str(3, op.get("description", "")),
           _str(5, op.get("operationId", ""))]
    out.extend(_str(6, p) for p in op.get("produces", ()))
    out.extend(_str(7, c) for c in op.get("consumes", ()))
    out.extend(_len(8, _parameter(p)) for p in op.get("parameters", ()))
    codes = b""
    for code, response in op.get("responses", {}).items():
        body = _str(1, response.get("description", ""))
        if "schema" in response:
            body += _len(2, _len(1, schema(response["schema"])))
        codes += _len(1, _str(1, code) + _len(2, _len(1, body)))
    out.append(_len(9, codes))
    out.extend(_str(10, s) for s in op.get("schemes", ()))
    out.append(_extensions(13, op))
    return b"".join(out)


_VERBS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def document(doc: dict[str, Any]) -> bytes:
    """``openapi.v2.Document`` for a swagger 2.0 document in JSON form."""
    info = doc.get("info", {})
    out = [_str(1, doc.get("swagger", "2.0")),
           _len(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))]
    paths = b""
    for path, item in doc.get("paths", {}).items():
        body = b"".join(_len(num, _operation(item[verb])) for verb, num in _VERBS.items() if verb in item)
        body += b"".join(_len(9, _parameter(p)) for p in item.get("parameters", ()))
        paths += _len(2, _str(1, path) + _len(2, body))
    out.append(_len(8, paths))
    out.append(_len(9, b"".join(_len(1, _str(1, name) + _len(2, schema(s)))
                                for name, s in doc.get("definitions", {}).items())))
    return b"".join(out)
