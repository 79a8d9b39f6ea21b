"""Streaming responses: watches (newline-delimited JSON events) and pod logs.

Pod logs follow the stand-in's convention: the node agent writes container
output to ``<state-dir>/logs/<namespace>/<pod>/<container>.log`` and the
server serves ``GET pods/{name}/log`` from that file.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Protocol

from tornado.iostream import StreamClosedError

from .._paths import log_path, previous_log_path
from . import tables
from .selectors import Selector
from .status import bad_request
from .store import Change

if TYPE_CHECKING:
    from .resources import Resource
    from .state import ServerState


class ApiHandler(Protocol):
    """What a stream needs of the request handler serving it (``server.ApiHandler``)."""

    state: ServerState
    closed: bool

    def write(self, chunk: bytes | str | dict[str, Any]) -> None: ...

    def flush(self) -> Any: ...

    def set_header(self, name: str, value: Any) -> None: ...

    def set_status(self, status_code: int, reason: str | None = None) -> None: ...


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _classify(change: Change, selector: Selector) -> str | None:
    """The event type a selective watcher sees for ``change`` (or ``None``)."""
    now_matches = selector.matches(change.obj)
    if change.type != "MODIFIED":
        return change.type if now_matches else None
    was = selector.matches(change.old)
    if now_matches and was:
        return "MODIFIED"
    if now_matches:
        return "ADDED"
    if was:
        return "DELETED"
    return None


def _bookmark(res: Resource, rv: int, initial_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return _event("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta})


BOOKMARK_EVERY = 15.0


async def watch(handler: ApiHandler, res: Resource, namespace: str | None, selector: Selector,
                resource_version: str | None, timeout: float, table_include: str | None,
                send_initial: bool = False, bookmarks: bool = False) -> None:
    """Serve a watch until ``timeout``, the client leaving, or server shutdown.

    ``resourceVersion`` unset or ``"0"`` (or ``sendInitialEvents=true``) starts
    with synthetic ADDED events for the current objects; with
    ``sendInitialEvents`` and bookmarks allowed, a BOOKMARK annotated
    ``k8s.io/initial-events-end`` follows them (the watch-list protocol).
    Bookmarks are also sent every 15 s while idle when allowed.
    """
    store = handler.state.store
    initial: list[dict[str, Any]] = []
    if send_initial or resource_version in (None, "", "0"):
        initial = [o for o in store.list(res.key, namespace) if selector.matches(o)]
        since = None
    else:
        try:
            since = int(resource_version or "0")
        except ValueError as exc:
            raise bad_request(f"invalid resource version: {resource_version}") from exc
    handler.set_status(200)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-cache, private")
    try:
        watcher, backlog = store.subscribe(res.key, namespace, since)
    except Exception as exc:  # 410 Gone goes in the stream, as the real server does
        if getattr(exc, "code", None) != 410:
            raise
        handler.write(_event("ERROR", exc.status))  # type: ignore[attr-defined]
        return
    headers = [True]

    def render(kind: str, obj: dict[str, Any]) -> bytes:
        if table_include is None:
            return _event(kind, obj)
        if table_include == tables.PARTIAL:
            return _event(kind, tables.partial(obj))
        t = tables.table(res.plural, [obj], obj["metadata"].get("resourceVersion", ""), table_include,
                         headers=headers[0])
        headers[0] = False
        return _event(kind, t)

    deadline = time.monotonic() + timeout
    try:
        for obj in initial:
            handler.write(render("ADDED", obj))
        if send_initial and bookmarks:
            handler.write(_bookmark(res, store.rv, initial_end=True))
        for change in backlog:
            kind = _classify(change, selector)
            if kind:
                handler.write(render(kind, change.obj))
        await handler.flush()
        last_sent = time.monotonic()
        while not handler.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                change = await asyncio.wait_for(watcher.queue.get(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                if bookmarks and time.monotonic() - last_sent > BOOKMARK_EVERY:
                    handler.write(_bookmark(res, store.rv))
                    await handler.flush()
                    last_sent = time.monotonic()
                continue
            last_sent = time.monotonic()
            kind = _classify(change, selector)
            if kind:
                handler.write(render(kind, change.obj))
                while not watcher.queue.empty():
                    more = watcher.queue.get_nowait()
                    k2 = _classify(more, selector)
                    if k2:
                        handler.write(render(k2, more.obj))
                await handler.flush()
    except StreamClosedError:
        pass
    finally:
        watcher.close()


def pick_container(pod: dict[str, Any], container: str | None) -> str:
    """Resolve ``?container=`` like the real server (400 when ambiguous or unknown)."""
    spec = pod.get("spec") or {}
    names: list[str] = [str(c["name"]) for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    name = pod["metadata"]["name"]
    if not container:
        if len(names) == 1:
            return names[0]
        raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                          + (f" or one of the init containers: [{' '.join(init)}]" if init else ""))
    if container not in names + init:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


def _waiting_reason(pod: dict[str, Any], container: str) -> str | None:
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if cs.get("name") == container:
            waiting = (cs.get("state") or {}).get("waiting")
            return str(waiting.get("reason") or "") or None if waiting else None
    return "ContainerCreating"


_IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                           "ErrImageInspect", "RegistryUnavailable"})


def _tail(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def logs(handler: ApiHandler, pod: dict[str, Any], container: str, follow: bool,
               tail_lines: int | None, limit_bytes: int | None, previous: bool = False) -> None:
    """Serve ``pods/{name}/log`` from the agent's log file (optionally following it).

    ``previous=true`` reads ``<container>.previous.log`` (the log of the last
    terminated instance, if the agent keeps one).
    """
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    path = log_path(handler.state.state_dir, ns, name, container)
    if previous:
        path = previous_log_path(path)
        if not path.exists():
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        follow = False
    if not path.exists():
        reason = _waiting_reason(pod, container)
        if reason in _IMAGE_ERRORS:
            reason = "trying and failing to pull image"
        if reason:
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        data = b""
    else:
        data = path.read_bytes()
    handler.set_header("Content-Type", "text/plain")
    offset = len(data)
    data = _tail(data, tail_lines)
    sent = 0

    def emit(chunk: bytes) -> bool:
        nonlocal sent
        if limit_bytes is not None:
            chunk = chunk[: max(limit_bytes - sent, 0)]
        sent += len(chunk)
        if chunk:
            handler.write(chunk)
        return limit_bytes is None or sent < limit_bytes

    if not emit(data) or not follow:
        return
    uid = pod["metadata"]["uid"]
    try:
        await handler.flush()
        while not handler.closed:
            await asyncio.sleep(0.1)
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                if not emit(chunk):
                    break
                await handler.flush()
                continue
            current = handler.state.store.get(("", "pods"), ns, name)
            if current is None or current["metadata"]["uid"] != uid or _terminated(current, container):
                break
    except StreamClosedError:
        pass


def _terminated(pod: dict[str, Any], container: str) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == container and (cs.get("state") or {}).get("terminated"):
            return True
    return False
