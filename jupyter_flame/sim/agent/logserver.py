"""The kubelet API's ``containerLogs`` endpoint, over HTTPS with client certificates.

A kube-apiserver serves ``kubectl logs`` by fetching
``https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>``
from the pod's kubelet. Each agent process serves that for the pods of all its
nodes from one listener (its nodes share one InternalIP and one process, so one
port per agent is enough; the agent advertises the port it bound on each Node).

Semantics follow the kubelet (``server.go: getContainerLogs`` and
``validateContainerLogStatus``):

- ``tailLines`` (or the legacy ``tail``, ``all`` = everything), ``limitBytes``,
  ``sinceSeconds``/``sinceTime``, ``timestamps`` (RFC 3339 nano prefix; the times
  are the :mod:`.logtimes` stamper's; lines that arrive while following are
  stamped when the stream reads them), ``previous`` (the last terminated
  instance; 400 ``previous terminated container ... not found`` when there is
  none), ``follow`` (streams until that container instance ends);
- 404 for a pod this agent does not run or a container not in its spec, 400
  for a container still waiting to start, 422 for invalid options;
- authentication like ``--client-ca-file`` with anonymous access off: a client
  certificate signed by the given CA, else 401 ``Unauthorized``. Every
  authenticated request is allowed (``--authorization-mode=AlwaysAllow``: no
  SubjectAccessReview); without a CA every request is refused.

The agent's loop thread :meth:`LogServer.publish`-es immutable views of its
pods; the server thread (asyncio + Tornado) only reads them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import StreamClosedError

from .._paths import log_path, previous_log_path
from .logtimes import INTERVAL, Index, Stamper, read_index, rfc3339nano, times_path
from .podstatus import PodRun

__all__ = ["ContainerView", "PodView", "LogServer", "pod_views", "LogRequestError"]

Json = dict[str, Any]
log = logging.getLogger(__name__)
FOLLOW_POLL = 0.05


@dataclass(frozen=True)
class ContainerView:
    """What the endpoint needs of one container: its instance id and states."""

    container_id: str
    state: Json
    last_state: Json


@dataclass(frozen=True)
class PodView:
    """A pod the agent runs: its uid and containers (init and app) by name."""

    uid: str
    containers: dict[str, ContainerView]


def pod_views(runs: Iterable[PodRun]) -> dict[tuple[str, str], PodView]:
    """Snapshot the kubelet's runs as views keyed by (namespace, name) (loop thread)."""
    return {
        (r.namespace, r.name): PodView(
            r.uid,
            {
                c.name: ContainerView(c.container_id, dict(c.state), dict(c.last_state))
                for c in (*r.init, *r.app)
            },
        )
        for r in list(runs)
    }


class LogRequestError(Exception):
    """A request the endpoint refuses: ``status`` and the kubelet's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Options:
    follow: bool
    previous: bool
    timestamps: bool
    tail_lines: int | None
    limit_bytes: int | None
    since: float | None  # POSIX time


def _flag(args: dict[str, str], name: str) -> bool:
    value = args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise LogRequestError(400, '{"message": "Unable to decode query."}')
    return value in ("true", "1", "")


def _int(args: dict[str, str], name: str) -> int | None:
    if name not in args:
        return None
    try:
        return int(args[name])
    except ValueError:
        raise LogRequestError(400, '{"message": "Unable to decode query."}') from None


def parse_options(args: dict[str, str], now: float) -> _Options:
    """Decode and validate the query like the kubelet (400 undecodable, 422 invalid)."""
    args = dict(args)
    if "tail" in args:
        args["tailLines"] = args.pop("tail")
        if args["tailLines"] == "all":
            del args["tailLines"]
    tail, limit, since_s = (
        _int(args, "tailLines"),
        _int(args, "limitBytes"),
        _int(args, "sinceSeconds"),
    )
    since: float | None = None
    if "sinceTime" in args:
        try:
            since = dt.datetime.fromisoformat(args["sinceTime"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise LogRequestError(400, '{"message": "Unable to decode query."}') from None
    invalid = (
        (tail is not None and tail < 0)
        or (limit is not None and limit < 1)
        or (since_s is not None and since_s < 1)
        or (since_s is not None and since is not None)
    )
    if invalid:
        raise LogRequestError(422, '{"message": "Invalid request."}')
    if since_s is not None:
        since = now - since_s
    return _Options(_flag(args, "follow"), _flag(args, "previous"), _flag(args, "timestamps"),
                    tail, limit, since)  # fmt: skip


def choose_instance(pod: str, name: str, c: ContainerView, previous: bool) -> tuple[str, bool]:
    """(container id, served from the previous log file?) of the instance to read.

    Follows the kubelet's ``validateContainerLogStatus``; raises
    :class:`LogRequestError` (400) with its messages. The agent's current log
    file holds the latest instance until the next one starts, so a container
    waiting to restart is read from it.
    """
    state, last = c.state, (c.last_state.get("terminated") or {})
    restarted = "waiting" not in state  # a newer instance exists once it runs or ran
    if previous:
        if not last.get("containerID"):
            raise LogRequestError(
                400, f'previous terminated container "{name}" in pod "{pod}" not found'
            )
        return str(last["containerID"]), restarted
    if "running" in state:
        return c.container_id, False
    term = state.get("terminated")
    if term is not None:
        if term.get("containerID"):
            return str(term["containerID"]), False
        if last.get("containerID"):
            return str(last["containerID"]), True
        raise LogRequestError(400, f'container "{name}" in pod "{pod}" is terminated')
    if last:
        if not last.get("containerID"):
            raise LogRequestError(400, f'container "{name}" in pod "{pod}" is terminated')
        return str(last["containerID"]), False
    reason = (state.get("waiting") or {}).get("reason")
    if reason == "ErrImagePull":
        reason = "image can't be pulled"
    elif reason == "ImagePullBackOff":
        reason = "trying and failing to pull image"
    if reason:
        raise LogRequestError(
            400, f'container "{name}" in pod "{pod}" is waiting to start: {reason}'
        )
    raise LogRequestError(
        400, f'container "{name}" in pod "{pod}" is waiting to start - no logs yet'
    )


def _lines(data: bytes) -> list[tuple[int, bytes]]:
    """(end offset, line with its newline) of every line, the last maybe without one."""
    out, pos = [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        out.append((end, data[pos:end]))
        pos = end
    return out


class _Handler(tornado.web.RequestHandler):
    server: LogServer

    def initialize(self, server: LogServer) -> None:
        self.server = server
        self.closed = False

    def on_connection_close(self) -> None:
        self.closed = True

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(message + "\n")

    async def get(self, namespace: str, pod: str, container: str) -> None:
        if self.server.client_ca is None or not self.request.get_ssl_certificate():
            return self._refuse(401, "Unauthorized")
        try:
            opts = parse_options({k: self.get_query_argument(k) for k in self.request.arguments},
                                 time.time())  # fmt: skip
            view = self.server.views.get((namespace, pod))
            if view is None:
                raise LogRequestError(404, f'pod "{pod}" does not exist')
            c = view.containers.get(container)
            if c is None:
                raise LogRequestError(404, f'container "{container}" not found in pod "{pod}"')
            cid, from_previous = choose_instance(pod, container, c, opts.previous)
        except LogRequestError as exc:
            return self._refuse(exc.status, str(exc))
        path = log_path(self.server.state_dir, namespace, pod, container)
        if from_previous:
            path = previous_log_path(path)
        self.set_header("Content-Type", "text/plain")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # started, wrote nothing yet (or an adopted pod): an empty log
        try:
            await self._serve(fd, times_path(path, container, cid), opts,
                              (namespace, pod, view.uid, container, cid))  # fmt: skip
        except StreamClosedError:
            pass
        finally:
            os.close(fd)

    async def _serve(self, fd: int, index_file: Path, opts: _Options,
                     key: tuple[str, str, str, str, str]) -> None:  # fmt: skip
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        follow = opts.follow and self._live(key)
        index: Index | None = None
        if opts.timestamps or opts.since is not None:
            index = read_index(index_file, time.time() if follow else os.fstat(fd).st_mtime)
        lines = _lines(data)
        if opts.tail_lines is not None:
            lines = lines[len(lines) - opts.tail_lines :] if opts.tail_lines else []
        budget = [opts.limit_bytes]

        def emit(chunk: list[tuple[int, bytes]]) -> bool:
            out = []
            for end, line in chunk:
                when = index.time_of(end) if index is not None else 0.0
                if opts.since is not None and when < opts.since:
                    continue
                out.append(rfc3339nano(when) + b" " + line if opts.timestamps else line)
            blob = b"".join(out)
            if budget[0] is not None:
                blob, budget[0] = blob[: budget[0]], budget[0] - min(len(blob), budget[0])
            if blob:
                self.write(blob)
            return budget[0] is None or budget[0] > 0

        if not emit([ln for ln in lines if ln[1].endswith(b"\n") or not follow]) or not follow:
            return
        await self.flush()
        offset = size - (len(lines[-1][1]) if lines and not lines[-1][1].endswith(b"\n") else 0)
        while not self.closed:
            live = self._live(key)
            await asyncio.sleep(0 if not live else FOLLOW_POLL)
            more = os.pread(fd, 1 << 20, offset)
            if index is not None:
                index.fallback = time.time()
            complete = more[: more.rfind(b"\n") + 1] if live else more
            if complete:
                offset += len(complete)
                chunk = [(offset - len(complete) + end, ln) for end, ln in _lines(complete)]
                if not emit(chunk):
                    return
                await self.flush()
            elif not live:
                return

    def _live(self, key: tuple[str, str, str, str, str]) -> bool:
        namespace, pod, uid, container, cid = key
        view = self.server.views.get((namespace, pod))
        c = view.containers.get(container) if view is not None and view.uid == uid else None
        return c is not None and c.container_id == cid and "running" in c.state


class LogServer:
    """The agent's kubelet API listener (``/containerLogs`` only).

    Parameters
    ----------
    state_dir : Path
        The agent's state directory (container logs under ``logs/``).
    address : str
        Address to bind (the nodes' InternalIP).
    port : int
        Port to bind; 0 picks a free one (:attr:`port` says which).
    tls_cert, tls_key : Path
        The serving certificate and key.
    client_ca : Path or None
        CA of accepted client certificates; None refuses every request (401).

    Raises
    ------
    OSError
        The address cannot be bound (:meth:`__init__` binds at once).
    ssl.SSLError
        The certificate, key or CA cannot be loaded.
    """

    def __init__(self, state_dir: Path, address: str, port: int, tls_cert: Path, tls_key: Path,
                 client_ca: Path | None) -> None:  # fmt: skip
        self.state_dir = state_dir
        self.client_ca = client_ca
        self.views: dict[tuple[str, str], PodView] = {}
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl.load_cert_chain(str(tls_cert), str(tls_key))
        if client_ca is not None:
            self.ssl.load_verify_locations(str(client_ca))
            self.ssl.verify_mode = ssl.CERT_OPTIONAL
        self._sockets = tornado.netutil.bind_sockets(port, address, family=socket.AF_INET)
        self.address = address
        self.port: int = self._sockets[0].getsockname()[1]
        self._stamper = Stamper()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kubelet-api", daemon=True)

    def start(self) -> None:
        """Serve on a thread of its own."""
        self._thread.start()

    def publish(self, views: dict[tuple[str, str], PodView]) -> None:
        """Replace the pods served (any thread; the server only reads the new dict)."""
        self.views = views

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the listener."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def _running(self) -> dict[str, tuple[Path, str]]:
        out = {}
        for (namespace, pod), view in self.views.items():
            for name, c in view.containers.items():
                if "running" in c.state and c.container_id:
                    out[c.container_id] = (log_path(self.state_dir, namespace, pod, name), name)
        return out

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = tornado.web.Application(
            [(r"/containerLogs/([^/]+)/([^/]+)/([^/]+)", _Handler, {"server": self})]
        )
        server = tornado.httpserver.HTTPServer(app, ssl_options=self.ssl)
        server.add_sockets(self._sockets)
        try:
            while not self._stop.is_set():
                try:
                    self._stamper.tick(self._running())
                except Exception:
                    log.exception("log stamper pass failed")
                try:
                    await asyncio.wait_for(self._stop.wait(), INTERVAL)
                except asyncio.TimeoutError:
                    pass
        finally:
            server.stop()
            self._stamper.close()
