"""The parent's side of the channel: one :class:`Listener` per pool accepts its runners."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from typing import Any

from jupyter_flame.channel._conn import Conn, nodelay
from jupyter_flame.channel._framing import check_key, parent_handshake, session_keys
from jupyter_flame.channel.channel import DEFAULT_MAX_FRAME, Channel
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

__all__ = ["HANDSHAKE_STAGING", "HANDSHAKE_TIMEOUT", "MAX_HANDSHAKES", "UNIX", "Listener"]

UNIX = "unix"
"""``Listener.start(UNIX, ...)`` listens on a Unix-domain socket in a fresh 0700 directory
(runners on this machine: no other user can even connect; large buffers go through shared
memory, see :mod:`jupyter_flame.channel._shm`). Its :attr:`Listener.address` is then
``("unix:/path/to/socket", 0)``."""

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a dialing peer has to complete the handshake before the listener drops it (the
default of ``Listener.start(handshake_timeout=...)``)."""

MAX_HANDSHAKES = 32
"""Connections a listener handshakes at once; beyond that it stops accepting (new connections
wait in the OS's listen backlog, outside the kernel's memory, and a runner's dial retries) until
one finishes or times out."""

REJECT_LOG_BURST = 3  # rejections logged one by one per window
REJECT_LOG_WINDOW = 60.0  # seconds; then one summary line

HANDSHAKE_STAGING = 1024
"""Bytes of read buffer a connection gets before it has authenticated (a hello is at most 295
bytes); it grows to the channel's full staging buffer once the handshake succeeds."""


class Listener:
    """Accepts runner connections for one pool (parent side).

    Create with :meth:`start`; call :meth:`expect` for each runner before it dials. Each
    connection is handshaken in its own task within ``handshake_timeout`` seconds
    (default :data:`HANDSHAKE_TIMEOUT`), so a slow or
    hostile peer never blocks others. Rejected connections are logged and recorded in
    :attr:`rejected` (address, runner id, reason; the last 100).
    """

    def __init__(self, sock: socket.socket, key: bytes, max_frame: int,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_handshakes: int = MAX_HANDSHAKES, encrypt: bool = False) -> None:
        self._sock = sock
        self.encrypt = encrypt
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self._slots = asyncio.Semaphore(max_handshakes)
        self._capped = False  # the cap was reached and logged (once per listener)
        self._log_window = float("-inf")
        self._logged = self._quiet = 0
        self._key = key
        self._max_frame = max_frame
        self._expected: dict[str, asyncio.Future[Channel]] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed = False
        self.rejected: deque[tuple[Any, str, str]] = deque(maxlen=100)
        self.address: tuple[str, int]
        if sock.family == socket.AF_UNIX:
            self.address = ("unix:" + sock.getsockname(), 0)
        else:
            host, port = sock.getsockname()[:2]
            self.address = (host, port)
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    @classmethod
    async def start(
        cls, host: str, key: bytes, port: int = 0, *, max_frame: int = DEFAULT_MAX_FRAME,
        handshake_timeout: float = HANDSHAKE_TIMEOUT, max_handshakes: int = MAX_HANDSHAKES,
        encrypt: bool = False,
    ) -> Listener:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`address`).

        ``encrypt`` makes every channel it accepts encrypt all frames (AES-256-GCM); otherwise
        frames are authenticated only. The runner learns it in the handshake."""
        key = check_key(key)
        if host == UNIX:
            return cls(_unix_socket(), key, max_frame, handshake_timeout, max_handshakes, encrypt)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock, key, max_frame, handshake_timeout, max_handshakes, encrypt)

    def expect(self, runner_id: str) -> asyncio.Future[Channel]:
        """A future resolved with the channel once ``runner_id`` connects and authenticates."""
        if self._closed:
            raise ChannelClosedError("listener is closed")
        fut = self._expected.get(runner_id)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._expected[runner_id] = fut
        return fut

    def forget(self, runner_id: str) -> None:
        """Stop expecting ``runner_id`` (its future is cancelled; it can no longer connect)."""
        fut = self._expected.pop(runner_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    async def close(self) -> None:
        """Stop listening; pending expectations fail with :class:`ChannelClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._accept_task.cancel()
        tasks = [self._accept_task, *self._handshakes]
        for task in self._handshakes:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.close()
        if self.address[0].startswith("unix:"):
            path = self.address[0][len("unix:"):]
            for remove in (os.unlink, os.rmdir):
                try:
                    remove(path)
                except OSError:
                    pass
                path = os.path.dirname(path)
        for rid, fut in self._expected.items():
            if not fut.done():
                fut.set_exception(ChannelClosedError(f"listener closed before {rid!r} connected"))
                fut.exception()  # nobody may be waiting; avoid "never retrieved" noise
        self._expected.clear()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._slots.locked() and not self._capped:
                self._capped = True
                log.warning("channel listener %s:%s: %d connections are in the handshake; "
                            "accepting more once one completes or times out (logged once)",
                            *self.address, self.max_handshakes)
            await self._slots.acquire()
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: back off, keep listening
                self._slots.release()
                log.warning("channel listener accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                self._slots.release()
                raise
            task = loop.create_task(self._handshake(conn, addr))
            self._handshakes.add(task)
            task.add_done_callback(self._handshake_done)

    def _handshake_done(self, task: asyncio.Task[None]) -> None:
        self._handshakes.discard(task)
        self._slots.release()

    @property
    def handshaking(self) -> int:
        """Connections now in the handshake."""
        return len(self._handshakes)

    def _reject(self, addr: Any, rid: str, reason: str) -> None:
        """Record a refused peer; log the first few, then one summary a minute (a flood of
        bad connections must not become a flood of log lines)."""
        self.rejected.append((addr, rid, reason))
        now = time.monotonic()
        if now - self._log_window >= REJECT_LOG_WINDOW:
            if self._quiet:
                log.warning("channel: %d more connections rejected in the last %.0f s",
                            self._quiet, now - self._log_window)
            self._log_window, self._logged, self._quiet = now, 0, 0
        if self._logged < REJECT_LOG_BURST:
            self._logged += 1
            log.warning("channel: rejected connection from %s (runner %r): %s%s", addr, rid,
                        reason, " (further rejections are summarized once a minute)"
                        if self._logged == REJECT_LOG_BURST else "")
        else:
            self._quiet += 1

    async def _handshake(self, sock: socket.socket, addr: Any) -> None:
        rid = ["?"]
        try:
            nodelay(sock)
            conn = Conn(sock, staging=HANDSHAKE_STAGING)
        except BaseException:
            sock.close()
            raise
        try:
            channel = await asyncio.wait_for(self._serve(conn, rid), self.handshake_timeout)
        except asyncio.TimeoutError:
            conn.close()
            self._reject(addr, rid[0],
                         f"handshake not completed within {self.handshake_timeout:.3g} s")
            return
        except (ChannelAuthError, ChannelClosedError, UnicodeDecodeError) as exc:
            conn.close()
            self._reject(addr, rid[0], str(exc))
            return
        except BaseException:
            conn.close()
            raise
        fut = self._expected.get(channel.peer_id)
        if fut is not None and not fut.done() and not self._closed:
            del self._expected[channel.peer_id]
            fut.set_result(channel)
        else:
            channel.close()
            self._reject(addr, channel.peer_id, "runner id no longer expected")

    async def _serve(self, conn: Conn, rid_box: list[str]) -> Channel:
        def expected(rid: str) -> bool:
            fut = self._expected.get(rid)
            return fut is not None and not fut.done() and not self._closed

        transcript = await parent_handshake(conn, self._key, expected, rid_box, self.encrypt)
        conn.grow()
        p2r, r2p = session_keys(self._key, transcript, self.encrypt)
        return Channel(conn, rid_box[0], tx=p2r, rx=r2p, max_frame=self._max_frame)


def _unix_socket() -> socket.socket:
    """A listening Unix socket in a new 0700 directory (``$XDG_RUNTIME_DIR`` if usable)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.access(base, os.W_OK) or len(base) > 60:
        base = None  # tempfile's default; socket paths must stay under ~100 bytes
    directory = tempfile.mkdtemp(prefix="jupyter-flame-", dir=base)  # mode 0700
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.join(directory, "channel"))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return sock
