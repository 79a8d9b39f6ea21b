"""A minimal OpenAPI surface: enough for ``kubectl apply`` and server-side validation.

``/openapi/v3`` lists one document per group/version; each document has the
resource paths with their ``x-kubernetes-group-version-kind`` and the
``fieldValidation`` query parameter, which tells kubectl that the server
validates fields (so it skips client-side schema validation).  Schemas are
not published: kubectl then computes strategic merge patches from its
compiled-in types.  ``/openapi/v2`` answers an empty protobuf document.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import GROUP_VERSIONS, Resource

V2_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"

_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation")
]


def _prefix(gv: str) -> str:
    return f"api/{gv}" if "/" not in gv else f"apis/{gv}"


def _op(r: Resource, action: str, patch: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{r.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": list(_PARAMS),
        "responses": {"200": {"description": "OK"}},
    }
    if patch:
        op["requestBody"] = {"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }}
    return op


def document(gv: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version (``None`` if unknown)."""
    resources = GROUP_VERSIONS.get(gv)
    if resources is None:
        return None
    paths: dict[str, Any] = {}
    for r in resources:
        base = f"/{_prefix(gv)}/" + ("namespaces/{namespace}/" if r.namespaced else "")
        paths[base + r.plural] = {"post": _op(r, "post")}
        if r.stored:
            paths[base + r.plural + "/{name}"] = {
                "get": _op(r, "get"), "put": _op(r, "put"), "patch": _op(r, "patch", True),
                "delete": _op(r, "delete"),
            }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": {}}}


def _hash(gv: str) -> str:
    return hashlib.sha512(json.dumps(document(gv), sort_keys=True).encode()).hexdigest()[:64].upper()


def root() -> dict[str, Any]:
    """``/openapi/v3``: where each group/version document lives."""
    return {"paths": {_prefix(gv): {"serverRelativeURL": f"/openapi/v3/{_prefix(gv)}?hash={_hash(gv)}"}
                      for gv in GROUP_VERSIONS}}


def document_for_path(path: str) -> dict[str, Any] | None:
    """Resolve ``api/v1`` or ``apis/<group>/<version>`` to its document."""
    if path.startswith("api/"):
        return document(path[4:])
    if path.startswith("apis/"):
        return document(path[5:])
    return None
