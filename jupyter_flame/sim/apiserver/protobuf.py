"""Decode the few protobuf request bodies kubectl sends (pure).

client-go's typed clients post ``application/vnd.kubernetes.protobuf`` for
``SelfSubjectAccessReview`` (``kubectl auth can-i``), ``SelfSubjectReview``
(``kubectl auth whoami``), ``TokenRequest`` (``kubectl create token``) and
the ``kubectl create namespace|secret|configmap|serviceaccount`` generators.
The body is the ``k8s\\0`` magic and a ``runtime.Unknown`` envelope whose
``raw`` field holds the object.  We decode just the fields those kinds use
into the JSON shape; responses stay JSON (the clients accept it).
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """A body that is not a protobuf encoding we understand."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Split a message into (field number, value) pairs (varint or bytes)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((num, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((num, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _strings(data: bytes, names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, value in fields(data):
        if num in names and isinstance(value, bytes):
            out[names[num]] = value.decode()
    return out


_RESOURCE_ATTRS = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
_NON_RESOURCE_ATTRS = {1: "path", 2: "verb"}
_BOUND_REF = {1: "kind", 2: "apiVersion", 3: "name", 4: "uid"}


def _access_review(raw: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for num, value in fields(raw):
        if num == 2 and isinstance(value, bytes):
            for snum, svalue in fields(value):
                if snum == 1 and isinstance(svalue, bytes):
                    spec["resourceAttributes"] = _strings(svalue, _RESOURCE_ATTRS)
                elif snum == 2 and isinstance(svalue, bytes):
                    spec["nonResourceAttributes"] = _strings(svalue, _NON_RESOURCE_ATTRS)
    return {"spec": spec}


def _token_request(raw: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for num, value in fields(raw):
        if num == 2 and isinstance(value, bytes):
            for snum, svalue in fields(value):
                if snum == 1 and isinstance(svalue, bytes):
                    spec.setdefault("audiences", []).append(svalue.decode())
                elif snum == 4 and isinstance(svalue, int):
                    spec["expirationSeconds"] = svalue
                elif snum == 3 and isinstance(svalue, bytes):
                    spec["boundObjectRef"] = _strings(svalue, _BOUND_REF)
    return {"spec": spec}


def _map(entries: list[bytes], as_base64: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        kv = dict(fields(entry))
        key, value = kv.get(1, b""), kv.get(2, b"")
        if isinstance(key, bytes) and isinstance(value, bytes):
            out[key.decode()] = base64.b64encode(value).decode() if as_base64 else value.decode()
    return out


def _repeated(data: bytes, num: int) -> list[bytes]:
    return [v for n, v in fields(data) if n == num and isinstance(v, bytes)]


_OWNER_REF = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = _strings(data, {1: "name", 2: "generateName", 3: "namespace"})
    for num, key in ((11, "labels"), (12, "annotations")):
        entries = _repeated(data, num)
        if entries:
            meta[key] = _map(entries)
    finalizers = [v.decode() for v in _repeated(data, 14)]
    if finalizers:
        meta["finalizers"] = finalizers
    refs = []
    for raw in _repeated(data, 13):
        ref: dict[str, Any] = _strings(raw, _OWNER_REF)
        for num, value in fields(raw):
            if num in (6, 7) and isinstance(value, int):
                ref["controller" if num == 6 else "blockOwnerDeletion"] = bool(value)
        refs.append(ref)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def _with_meta(raw: bytes) -> dict[str, Any]:
    metas = _repeated(raw, 1)
    return {"metadata": _object_meta(metas[0]) if metas else {}}


def _secret(raw: bytes) -> dict[str, Any]:
    obj = _with_meta(raw)
    data = _map(_repeated(raw, 2), as_base64=True)
    string_data = _map(_repeated(raw, 4))
    if data:
        obj["data"] = data
    if string_data:
        obj["stringData"] = string_data
    obj.update(_strings(raw, {3: "type"}))
    return obj


def _config_map(raw: bytes) -> dict[str, Any]:
    obj = _with_meta(raw)
    data = _map(_repeated(raw, 2))
    binary = _map(_repeated(raw, 3), as_base64=True)
    if data:
        obj["data"] = data
    if binary:
        obj["binaryData"] = binary
    return obj


def _service_account(raw: bytes) -> dict[str, Any]:
    obj = _with_meta(raw)
    pulls = [_strings(v, {1: "name"}) for v in _repeated(raw, 3)]
    if pulls:
        obj["imagePullSecrets"] = pulls
    for num, value in fields(raw):
        if num == 4 and isinstance(value, int):
            obj["automountServiceAccountToken"] = bool(value)
    return obj


_DECODERS = {
    "SelfSubjectAccessReview": _access_review,
    "TokenRequest": _token_request,
    "SelfSubjectReview": lambda raw: {},
    "SelfSubjectRulesReview": lambda raw: {"spec": {
        "namespace": next((_strings(v, {1: "namespace"}).get("namespace", "")
                           for n, v in fields(raw) if n == 2 and isinstance(v, bytes)), "")}},
    "Namespace": _with_meta,
    "Secret": _secret,
    "ConfigMap": _config_map,
    "ServiceAccount": _service_account,
}


def decode(body: bytes) -> dict[str, Any]:
    """Decode a protobuf-encoded request body into its JSON shape."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic")
    api_version = kind = ""
    raw = b""
    for num, value in fields(body[len(MAGIC):]):
        if num == 1 and isinstance(value, bytes):
            meta = _strings(value, {1: "apiVersion", 2: "kind"})
            api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
        elif num == 2 and isinstance(value, bytes):
            raw = value
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported; send JSON")
    obj = decoder(raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
