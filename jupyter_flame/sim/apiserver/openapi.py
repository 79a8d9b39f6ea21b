"""``/openapi/v2`` and ``/openapi/v3``: the documents and the negotiation of a real API server.

Both versions carry the upstream definitions of every kind served (from
:mod:`.schemas`), the resource paths with ``x-kubernetes-group-version-kind``,
``x-kubernetes-action`` and the ``dryRun``/``fieldManager``/``fieldValidation``
query parameters (kubectl reads ``fieldValidation`` as "the server validates
fields" and then skips client-side validation; it falls back to the v2
document for kinds no path serves, such as ``kind: List``).

Negotiation follows kube-openapi's handlers: v2 in JSON or gnostic protobuf
(``...spec.v2@v1.0+protobuf`` accepted, answered as ``...spec.v2.v1.0+protobuf``),
``ETag`` of the JSON bytes, ``Vary: Accept``, 304 on ``If-None-Match``, 406
for anything else; v3 documents in JSON behind ``?hash=`` URLs that redirect
(301) when stale and are immutable when current.  v3 in protobuf is not
offered (client-go asks for JSON): such a request gets 406.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from . import openapi_pb, schemas
from .resources import GROUP_VERSIONS, RESOURCES, Resource

_QUERY = ("dryRun", "fieldManager", "fieldValidation")
_GVK = "x-kubernetes-group-version-kind"


def _prefix(gv: str) -> str:
    return f"api/{gv}" if "/" not in gv else f"apis/{gv}"


def _kinds(resources: list[Resource]) -> list[tuple[str, str, str]]:
    out = []
    for r in resources:
        out.append((r.group, r.version, r.kind))
        if r.stored:
            out.append((r.group, r.version, r.kind + "List"))
        out.extend((r.group, r.version, kind) for kind, _ in r.subresources.values())
    return out


def _roots(resources: list[Resource]) -> list[str]:
    meta = [("", "v1", kind) for kind in schemas.META_KINDS]
    return schemas.names_for(_kinds(resources) + meta)


def _kind_ref(r: Resource, kind: str, prefix: str) -> dict[str, Any]:
    names = schemas.names_for([(r.group, r.version, kind)])
    return {"$ref": prefix + names[0]} if names else {"type": "object"}


def _paths(gv: str, resources: list[Resource], v3: bool) -> dict[str, Any]:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    paths: dict[str, Any] = {}

    def op(r: Resource, action: str, verb: str, body_kind: str | None, out_kind: str) -> dict[str, Any]:
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        params: list[dict[str, Any]] = []
        for name in _QUERY if verb in ("post", "put", "patch") else ():
            params.append({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                          if v3 else {"name": name, "in": "query", "type": "string", "uniqueItems": True})
        out: dict[str, Any] = {
            "operationId": f"{action}{r.kind}", "x-kubernetes-action": action, _GVK: gvk,
            "tags": [gv.replace("/", "_").replace(".", "")], "parameters": params,
        }
        ref = _kind_ref(r, out_kind, prefix)
        if v3:
            out["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
            if body_kind is not None:
                types = ["application/json"] + (
                    ["application/json-patch+json", "application/merge-patch+json",
                     "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
                    if verb == "patch" else [])
                body = {"type": "object"} if verb == "patch" else _kind_ref(r, body_kind, prefix)
                out["requestBody"] = {"content": {t: {"schema": body} for t in types}, "required": True}
        else:
            out["consumes"] = ["*/*"]
            out["produces"] = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
            out["schemes"] = ["https"]
            out["responses"] = {"200": {"description": "OK", "schema": ref}}
            if body_kind is not None:
                body = {"type": "object"} if verb == "patch" else _kind_ref(r, body_kind, prefix)
                params.append({"name": "body", "in": "body", "required": True, "schema": body})
        return out

    for r in resources:
        base = f"/{_prefix(gv)}/" + ("namespaces/{namespace}/" if r.namespaced else "")
        collection: dict[str, Any] = {"post": op(r, "post", "post", r.kind, r.kind)}
        if r.stored:
            collection["get"] = op(r, "list", "get", None, r.kind + "List")
            paths[base + r.plural + "/{name}"] = {
                "get": op(r, "get", "get", None, r.kind), "put": op(r, "put", "put", r.kind, r.kind),
                "patch": op(r, "patch", "patch", r.kind, r.kind),
                "delete": op(r, "delete", "delete", None, "Status"),
            }
        paths[base + r.plural] = collection
    return dict(sorted(paths.items()))


def document(gv: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version (``None`` if unknown)."""
    resources = GROUP_VERSIONS.get(gv)
    if resources is None:
        return None
    names = schemas.closure(_roots(resources))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": schemas.KUBE_VERSION},
            "paths": _paths(gv, resources, v3=True),
            "components": {"schemas": schemas.definitions(names, "#/components/schemas/")}}


@functools.cache
def _v3_bytes(gv: str) -> bytes | None:
    doc = document(gv)
    return None if doc is None else json.dumps(doc, separators=(",", ":")).encode()


def etag(data: bytes) -> str:
    """kube-openapi's ETag: the upper-case hex SHA-512 of the served bytes."""
    return hashlib.sha512(data).hexdigest().upper()


def root() -> dict[str, Any]:
    """``/openapi/v3``: where each group/version document lives."""
    out = {}
    for gv in GROUP_VERSIONS:
        data = _v3_bytes(gv)
        assert data is not None
        out[_prefix(gv)] = {"serverRelativeURL": f"/openapi/v3/{_prefix(gv)}?hash={etag(data)}"}
    return {"paths": out}


def v3_for_path(path: str) -> bytes | None:
    """The JSON bytes for ``api/v1`` or ``apis/<group>/<version>`` (``None`` if unknown)."""
    for head in ("api/", "apis/"):
        if path.startswith(head):
            gv = path[len(head):]
            if (head == "api/") == ("/" not in gv):
                return _v3_bytes(gv)
    return None


def swagger() -> dict[str, Any]:
    """The whole API as one swagger 2.0 document (``/openapi/v2``)."""
    paths: dict[str, Any] = {}
    for gv, resources in GROUP_VERSIONS.items():
        paths.update(_paths(gv, resources, v3=False))
    names = schemas.closure(_roots(list(RESOURCES)))
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": schemas.KUBE_VERSION},
            "paths": dict(sorted(paths.items())),
            "definitions": schemas.definitions(names, "#/definitions/"),
            "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication",
                                                    "type": "apiKey", "name": "authorization", "in": "header"}},
            "security": [{"BearerToken": []}]}


@functools.lru_cache(maxsize=1)
def v2_json() -> bytes:
    """``/openapi/v2`` as JSON bytes."""
    return json.dumps(swagger(), separators=(",", ":")).encode()


@functools.lru_cache(maxsize=1)
def v2_protobuf() -> bytes:
    """``/openapi/v2`` as gnostic protobuf bytes."""
    return openapi_pb.document(swagger())


def _accept(header: str | None) -> list[tuple[str, str]]:
    """(type, subtype) clauses of an Accept header, best first (goautoneg's order: q, then
    specificity, then position); clauses with q=0 are dropped."""
    ranked = []
    for index, part in enumerate((header or "*/*").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        kind, _, sub = media.partition("/")
        specificity = (kind != "*") + (sub != "*")
        ranked.append(((-q, -specificity, index), kind, sub or "*"))
    return [(kind, sub) for _, kind, sub in sorted(ranked)]


def negotiate(header: str | None, offers: list[tuple[str, str]]) -> str | None:
    """The content type to answer: the first offer (``type/subtype``) the best clause matches.

    ``offers`` pairs an accepted ``type/subtype`` with the content type it is answered as.
    """
    for kind, sub in _accept(header):
        for offered, answer in offers:
            o_kind, _, o_sub = offered.partition("/")
            if kind in ("*", o_kind) and sub in ("*", o_sub):
                return answer
    return None


V2_OFFERS = [("application/json", "application/json"),
             (openapi_pb.CONTENT_TYPE_DEPRECATED, openapi_pb.CONTENT_TYPE),
             (openapi_pb.CONTENT_TYPE, openapi_pb.CONTENT_TYPE)]
V3_OFFERS = [("application/json", "application/json")]
