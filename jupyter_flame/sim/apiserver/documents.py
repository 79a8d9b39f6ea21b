"""Discovery and OpenAPI responses of the API server's handler.

Legacy discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]``),
aggregated discovery when asked for (:mod:`.discovery`), and the OpenAPI v2/v3
documents with kube-openapi's negotiation and caching headers (:mod:`.openapi`).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Protocol

from tornado import httputil

from . import discovery, openapi, resources
from .status import method_not_allowed, page_not_found


class ApiHandler(Protocol):
    """What these responses need of :class:`.server.ApiHandler` (no import: no cycle)."""

    request: httputil.HTTPServerRequest
    state: Any

    def send(self, body: Any, code: int = 200, content_type: str = "application/json") -> None: ...
    def arg(self, name: str) -> str | None: ...
    def add_header(self, name: str, value: str) -> None: ...
    def set_header(self, name: str, value: str) -> None: ...
    def set_status(self, status_code: int, reason: str | None = None) -> None: ...
    def finish(self, chunk: bytes | None = None) -> Any: ...
    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> None: ...


def is_discovery(path: str) -> bool:
    """Whether ``path`` is a discovery or OpenAPI path (answered before any body is read)."""
    parts = [p for p in path.split("/") if p]
    return (path.startswith("/openapi/") or parts in (["api"], ["apis"])
            or len(parts) == 2 and parts[0] in ("api", "apis") or len(parts) == 3 and parts[0] == "apis")


def serve(handler: ApiHandler, path: str, method: str) -> bool:
    """Answer a discovery or OpenAPI request (``False``: not one)."""
    parts = [p for p in path.split("/") if p]
    body: Any = None
    if path.startswith("/openapi/"):
        if method != "GET":
            raise method_not_allowed()
        _openapi(handler, path)
        return True
    elif parts in (["api"], ["apis"]):
        handler.add_header("Vary", "Accept")
        if discovery.wants_aggregated(handler.request.headers.get("Accept")):
            if method != "GET":
                raise method_not_allowed()
            handler.send(discovery.aggregated(core=parts == ["api"]), content_type=discovery.AGGREGATED)
            return True
        body = resources.versions(handler.state.address) if parts == ["api"] else resources.group_list()
    elif len(parts) == 2 and parts[0] == "api":
        if parts[1] != "v1":
            raise page_not_found()
        body = resources.resource_list("v1")
    elif len(parts) == 2 and parts[0] == "apis":
        body = resources.group(parts[1])
        if body is None:
            raise page_not_found()
    elif len(parts) == 3 and parts[0] == "apis":
        gv = f"{parts[1]}/{parts[2]}"
        if gv not in resources.GROUP_VERSIONS:
            raise page_not_found()
        body = resources.resource_list(gv)
    else:
        return False
    if method != "GET":
        raise method_not_allowed()
    handler.send(body)
    return True

def _openapi(handler: ApiHandler, path: str) -> None:
    """The OpenAPI documents, negotiated and cached as kube-openapi serves them."""
    handler.add_header("Vary", "Accept")
    accept = handler.request.headers.get("Accept")
    if path == "/openapi/v3":
        handler.send(openapi.root())
        return
    if path == "/openapi/v2":
        ctype = openapi.negotiate(accept, openapi.V2_OFFERS)
        data = openapi.v2_json() if ctype in ("application/json", None) else openapi.v2_protobuf()
        tag = openapi.etag(openapi.v2_json())
    else:
        found = openapi.v3_for_path(path[len("/openapi/v3/"):])
        if found is None:
            raise page_not_found()
        data, ctype, tag = found, openapi.negotiate(accept, openapi.V3_OFFERS), openapi.etag(found)
        wanted = handler.arg("hash")
        if wanted and ctype is not None:
            if wanted != tag:
                handler.redirect(f"{path}?hash={tag}", permanent=True)
                return
            handler.set_header("Cache-Control", "public, immutable")
            handler.set_header("Expires", email.utils.formatdate(time.time() + 365 * 86400, usegmt=True))
    if ctype is None:
        handler.set_status(406)
        handler.finish()
        return
    handler.set_header("Content-Type", ctype)
    handler.set_header("Etag", f'"{tag}"')
    if handler.request.headers.get("If-None-Match", "").strip() in (f'"{tag}"', tag, "*"):
        handler.set_status(304)
        handler.finish()
        return
    handler.finish(data)
