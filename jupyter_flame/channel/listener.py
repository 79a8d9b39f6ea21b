"""The parent's side of the channel: one :class:`Listener` per pool accepts its runners."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import Any

from jupyter_flame.channel._conn import Conn, nodelay
from jupyter_flame.channel._framing import check_key, parent_handshake, session_keys
from jupyter_flame.channel.channel import DEFAULT_MAX_FRAME, Channel
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

__all__ = ["HANDSHAKE_TIMEOUT", "Listener"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a dialing peer has to complete the handshake before the listener drops it (the
default of ``Listener.start(handshake_timeout=...)``)."""


class Listener:
    """Accepts runner connections for one pool (parent side).

    Create with :meth:`start`; call :meth:`expect` for each runner before it dials. Each
    connection is handshaken in its own task within ``handshake_timeout`` seconds
    (default :data:`HANDSHAKE_TIMEOUT`), so a slow or
    hostile peer never blocks others. Rejected connections are logged and recorded in
    :attr:`rejected` (address, runner id, reason; the last 100).
    """

    def __init__(self, sock: socket.socket, key: bytes, max_frame: int,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self._sock = sock
        self.handshake_timeout = handshake_timeout
        self._key = key
        self._max_frame = max_frame
        self._expected: dict[str, asyncio.Future[Channel]] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed = False
        self.rejected: deque[tuple[Any, str, str]] = deque(maxlen=100)
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    @classmethod
    async def start(
        cls, host: str, key: bytes, port: int = 0, *, max_frame: int = DEFAULT_MAX_FRAME,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Listener:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`address`)."""
        key = check_key(key)
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
        return cls(sock, key, max_frame, handshake_timeout)

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
        for rid, fut in self._expected.items():
            if not fut.done():
                fut.set_exception(ChannelClosedError(f"listener closed before {rid!r} connected"))
                fut.exception()  # nobody may be waiting; avoid "never retrieved" noise
        self._expected.clear()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: back off, keep listening
                log.warning("channel listener accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake(conn, addr))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _reject(self, addr: Any, rid: str, reason: str) -> None:
        log.warning("channel: rejected connection from %s (runner %r): %s", addr, rid, reason)
        self.rejected.append((addr, rid, reason))

    async def _handshake(self, sock: socket.socket, addr: Any) -> None:
        rid = ["?"]
        try:
            nodelay(sock)
            conn = Conn(sock)
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

        transcript = await parent_handshake(conn, self._key, expected, rid_box)
        p2r, r2p = session_keys(self._key, transcript)
        return Channel(conn, rid_box[0], tx=p2r, rx=r2p, max_frame=self._max_frame)
