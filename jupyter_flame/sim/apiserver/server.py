"""Tornado HTTP front end of the stand-in Kubernetes API server.

One handler decodes every path (:mod:`.routes`), authenticates the bearer
token, authorizes with RBAC, and dispatches to the registry, the deleter,
the review/token endpoints, discovery or the streaming responses.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import yaml
from tornado import web

from .._time import rfc3339
from . import documents, protobuf, schemas, streams, tables, writes
from .rbac import Attributes, UserInfo
from .routes import Route, parse
from .selectors import Selector
from .state import ServerState
from .status import (
    ApiError,
    bad_request,
    method_not_allowed,
    page_not_found,
    status_body,
    success_body,
    too_large,
    unsupported_media_type,
)

log = logging.getLogger("jupyter_flame.sim.apiserver")

VERSION = {
    "major": str(schemas.KUBE_MAJOR), "minor": str(schemas.KUBE_MINOR),
    "emulationMajor": str(schemas.KUBE_MAJOR), "emulationMinor": str(schemas.KUBE_MINOR),
    "gitVersion": f"{schemas.KUBE_VERSION}-jupyter-flame-sim", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.4",
    "compiler": "gc", "platform": "linux/amd64",
}
_PUBLIC = {"/version", "/healthz", "/livez", "/readyz", "/version/"}
_RETURNS_OBJECT = {"pods", "namespaces"}


#: The largest request body the server reads (kube-apiserver's default MaxRequestBodyBytes).
MAX_REQUEST_BODY = 3 * 1024 * 1024
#: A refused request's body up to this size is read and dropped before the answer, as Go's
#: server drains it, so the client reads the answer on a connection that stays open.
_DRAIN_LIMIT = 256 * 1024
#: Tornado's own cap, above ours so that a chunked body over ours still gets a Status body.
_HARD_BODY_LIMIT = 1 << 40


@web.stream_request_body
class ApiHandler(web.RequestHandler):
    """Every request of the API server goes through here."""

    state: ServerState

    def initialize(self, state: ServerState) -> None:  # noqa: D102
        self.state = state
        self.closed = False

    def on_finish(self) -> None:  # noqa: D102
        audit = getattr(self, "_audit", None)
        if audit is not None:
            self.state.audit(audit[0], self.get_status(), audit[1])

    def on_connection_close(self) -> None:  # noqa: D102
        self.closed = True

    def check_xsrf_cookie(self) -> None:  # noqa: D102
        return None

    def compute_etag(self) -> None:  # noqa: D102
        return None

    # -- helpers -----------------------------------------------------------
    def send(self, body: Any, code: int = 200, content_type: str = "application/json") -> None:
        """Write a JSON response (with the ``Warning`` headers of dropped unknown fields)."""
        fields = getattr(self, "_fields", None)
        if fields is not None and code < 300:
            for message in fields.warnings:
                self.add_header("Warning", '299 - "' + message.replace('"', '\\"') + '"')
        self.set_status(code)
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(body, separators=(",", ":")))

    def arg(self, name: str) -> str | None:
        """A query argument (``None`` when absent)."""
        return self.get_query_argument(name, None)

    def int_arg(self, name: str) -> int | None:
        """An integer query argument; 400 when malformed."""
        value = self.arg(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError as exc:
            raise bad_request(f"invalid {name}: {value}") from exc

    def body(self) -> Any:
        """The decoded request body (JSON, or YAML for apply patches)."""
        raw = self.request.body
        if not raw:
            return None
        ctype = self.request.headers.get("Content-Type", "")
        try:
            if ctype.startswith(protobuf.CONTENT_TYPE):
                return protobuf.decode(raw)
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except protobuf.ProtobufError as exc:
            raise unsupported_media_type(ctype) from exc
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding request body: {exc}") from exc
        except RecursionError:
            raise bad_request("error decoding request body: json: exceeded max depth") from None

    # -- entry points --------------------------------------------------------
    async def get(self, path: str) -> None:  # noqa: D102
        await self._serve("GET")

    async def post(self, path: str) -> None:  # noqa: D102
        await self._serve("POST")

    async def put(self, path: str) -> None:  # noqa: D102
        await self._serve("PUT")

    async def patch(self, path: str) -> None:  # noqa: D102
        await self._serve("PATCH")

    async def delete(self, path: str) -> None:  # noqa: D102
        await self._serve("DELETE")

    def prepare(self) -> None:
        """Authenticate, route and authorize from the headers alone, before any body is read.

        As a real API server does, a request without a valid token gets its 401, and one its
        user may not make gets its 403, without the server reading a byte of its body; a
        declared ``Content-Length`` over :data:`MAX_REQUEST_BODY` gets 413 at once.
        """
        self._chunks: list[bytes] = []
        self._size = 0
        self._user: UserInfo | None = None
        self._route: Route | None = None
        self._early: ApiError | None = None
        path, method = self.request.path, self.request.method or "GET"
        try:
            if path in _PUBLIC:
                return
            self._user = self._impersonate(self.state.authenticate(self.request.headers.get("Authorization")))
            if documents.is_discovery(path):
                return
            route = parse(path)
            if route is None:
                raise page_not_found()
            self._route = route
            self._authorize(method, route, self._user)
            declared = self.request.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
                raise too_large(MAX_REQUEST_BODY)
            self.request.connection.set_max_body_size(_HARD_BODY_LIMIT)  # type: ignore[union-attr]
        except ApiError as err:
            declared = self.request.headers.get("Content-Length", "0")
            if declared.isdigit() and int(declared) <= _DRAIN_LIMIT:
                # like Go's server: drain a small body so the client reads the answer on a live connection
                self._early = err
                self.request.connection.set_max_body_size(_DRAIN_LIMIT)  # type: ignore[union-attr]
                return
            self.send(err.status, err.code)
        except Exception as exc:  # noqa: BLE001 - a Status body, never a tornado HTML page
            self._internal_error(method, path, exc)

    def data_received(self, chunk: bytes) -> None:  # noqa: D102
        if self._finished or self._early is not None:
            return
        self._size += len(chunk)
        if self._size > MAX_REQUEST_BODY:
            self._chunks.clear()
            err = too_large(MAX_REQUEST_BODY)
            self.send(err.status, err.code)
            return
        self._chunks.append(chunk)

    def _internal_error(self, method: str, path: str, exc: BaseException) -> None:
        log.exception("internal error serving %s %s", method, path, exc_info=exc)
        if not self._finished:
            self.send(status_body(500, "InternalError", f"Internal error occurred: {exc}",
                                  {"causes": [{"message": str(exc)}]}), 500)

    async def _serve(self, method: str) -> None:
        path = self.request.path
        self.request.body = b"".join(self._chunks)
        self._chunks.clear()
        if self._early is not None:
            self.send(self._early.status, self._early.code)
            return
        try:
            if path in _PUBLIC:
                self.send(VERSION if path.startswith("/version") else "ok")
                return
            if documents.serve(self, path, method):
                return
            assert self._route is not None and self._user is not None
            await self._resource(method, self._route, self._user)
        except ApiError as err:
            if not self._finished:
                self.send(err.status, err.code)
        except Exception as exc:  # noqa: BLE001 - a Status body, never a tornado HTML page
            self._internal_error(method, path, exc)

    def _impersonate(self, user: UserInfo) -> UserInfo:
        """Honour ``Impersonate-User``/``Impersonate-Group`` (``kubectl --as``) when allowed."""
        name = self.request.headers.get("Impersonate-User")
        groups = self.request.headers.get_list("Impersonate-Group")
        if not name:
            return user
        prefix = "system:serviceaccount:"
        if name.startswith(prefix) and name.count(":") == 3:
            ns, sa = name[len(prefix):].split(":")
            self.state.check(Attributes(user, "impersonate", "", "serviceaccounts", "", ns, sa))
            groups = groups or ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
        else:
            self.state.check(Attributes(user, "impersonate", "", "users", "", "", name))
        for group in groups:
            self.state.check(Attributes(user, "impersonate", "", "groups", "", "", group))
        return UserInfo(name, (*groups, "system:authenticated"))

    # -- resources -------------------------------------------------------------
    def _authorize(self, method: str, route: Route, user: UserInfo) -> None:
        """405/404 for requests no resource serves, then RBAC (audited)."""
        res, ns, name, sub = route.resource, route.namespace, route.name, route.subresource
        verb = route.verb(method, self.arg("watch") in ("true", "1"))
        if sub == "log" and method != "GET" or sub in ("binding", "token") and method != "POST":
            raise method_not_allowed()
        if not res.stored and method != "POST":
            raise method_not_allowed()
        if not res.stored and name:
            raise page_not_found()
        attrs = Attributes(user, verb, res.group, res.plural, sub, ns or "", name)
        self._audit = (attrs, rfc3339())
        self.state.check(attrs)

    async def _resource(self, method: str, route: Route, user: UserInfo) -> None:
        res, ns, name, sub = route.resource, route.namespace, route.name, route.subresource
        watch = self.arg("watch") in ("true", "1")
        reg, state = self.state.registry, self.state
        body = self.body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if res.plural == "selfsubjectaccessreviews":
            self.send(state.access_review(user, body or {}), 201)
            return
        if res.plural == "selfsubjectrulesreviews":
            self.send(state.rules_review(user, body or {}), 201)
            return
        if res.plural == "selfsubjectreviews":
            self.send(state.subject_review(user), 201)
            return
        if res.plural == "bindings":
            self.send(reg.bind(ns or "", (body or {}).get("metadata", {}).get("name", ""), body or {}), 201)
            return
        if sub == "binding":
            self.send(reg.bind(ns or "", name, body or {}), 201)
            return
        if sub == "token":
            self.send(state.token_request(ns or "", name, body or {}), 201)
            return
        if sub == "log":
            pod = reg.get(res, ns or "", name)
            container = streams.pick_container(pod, self.arg("container"))
            await streams.logs(self, pod, container, self.arg("follow") in ("true", "1"),
                               self.int_arg("tailLines"), self.int_arg("limitBytes"),
                               previous=self.arg("previous") in ("true", "1"))
            if not self._finished:
                self.finish()
            return
        namespace = ns or ""
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            dry = self.arg("dryRun") == "All"
            manager = writes.manager_for(self.arg("fieldManager"), self.request.headers.get("User-Agent"))
            with self.state.store.dry_run(dry), writes.request(
                    self.arg("fieldValidation"), manager, self.arg("force") in ("true", "1")) as fields:
                self._write(method, route, body, fields)
            if not dry:
                self.state.deleter.reconcile()
            return
        if method == "GET" and not name:
            selector = Selector.parse(self.arg("labelSelector"), self.arg("fieldSelector"), res.plural)
            include = self._table_include()
            if watch:
                timeout = float(self.int_arg("timeoutSeconds") or 1800)
                await streams.watch(self, res, ns, selector, self.arg("resourceVersion"), timeout, include,
                                    send_initial=self.arg("sendInitialEvents") == "true",
                                    bookmarks=self.arg("allowWatchBookmarks") in ("true", "1"))
                if not self._finished:
                    self.finish()
                return
            listing = reg.list(res, ns, selector, self.int_arg("limit"), self.arg("continue"))
            if include == tables.PARTIAL:
                self.send(tables.partial_list(listing))
            elif include is not None:
                out = tables.table(res.plural, listing["items"], listing["metadata"]["resourceVersion"], include)
                out["metadata"] = listing["metadata"]
                self.send(out)
            else:
                self.send(listing)
            return
        if method == "GET":
            obj = reg.get(res, namespace, name, sub)
            include = self._table_include()
            if include == tables.PARTIAL:
                self.send(tables.partial(obj))
            elif include is not None:
                self.send(tables.table(res.plural, [obj], obj["metadata"]["resourceVersion"], include))
            else:
                self.send(obj)
            return
        raise method_not_allowed()

    def _write(self, method: str, route: Route, body: Any, fields: writes.WriteRequest) -> None:
        res, ns, name, sub = route.resource, route.namespace, route.name, route.subresource
        self._fields = fields
        namespace, reg = ns or "", self.state.registry
        if method == "POST":
            if name:
                raise method_not_allowed()
            obj = reg.create(res, namespace, body)
            self.send(obj, 201)
            return
        if method == "PUT":
            obj = reg.update(res, namespace, name, body, sub)
            self.send(obj)
            return
        if method == "PATCH":
            ctype = self.request.headers.get("Content-Type", "")
            obj, code = reg.patch(res, namespace, name, ctype, body, sub, self.arg("fieldManager"))
            self.send(obj, code)
            return
        if method == "DELETE":
            opts = dict(body or {}) if isinstance(body, dict) else {}
            grace = self.int_arg("gracePeriodSeconds")
            if grace is not None:
                opts["gracePeriodSeconds"] = grace
            if self.arg("propagationPolicy"):
                opts["propagationPolicy"] = self.arg("propagationPolicy")
            if not name:
                selector = Selector.parse(self.arg("labelSelector"), self.arg("fieldSelector"), res.plural)
                self.send(self.state.deleter.delete_collection(res, ns, selector, opts, reconcile=False))
                return
            obj = self.state.deleter.delete(res, namespace, name, opts, reconcile=False)
            gone = self.state.store.get(res.key, namespace, name) is None
            if gone and res.plural not in _RETURNS_OBJECT:
                details: dict[str, Any] = {"name": name}
                if res.group:
                    details["group"] = res.group
                details.update(kind=res.plural, uid=obj["metadata"].get("uid"))
                self.send(success_body(200, details))
            else:
                self.send(obj)
            return
        raise method_not_allowed()

    def _table_include(self) -> str | None:
        accept = self.request.headers.get("Accept", "")
        if tables.wants_partial(accept):
            return tables.PARTIAL
        if not tables.wants_table(accept):
            return None
        return self.arg("includeObject") or "Metadata"


def make_app(state: ServerState) -> web.Application:
    """The tornado application serving ``state``."""
    return web.Application([(r"(/.*)", ApiHandler, {"state": state})], compress_response=False)
