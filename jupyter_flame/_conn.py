"""Socket plumbing of :mod:`jupyter_flame.channel` (internal): a non-blocking socket driven by
the running loop with a staging buffer for small reads and zero-copy reads into large buffers."""

from __future__ import annotations

import asyncio
import socket

from cryptography.hazmat.primitives.poly1305 import Poly1305

_STAGING = 256 * 1024
_DIRECT_MIN = 64 * 1024  # reads at least this large go straight into the destination


class ChannelClosedError(ConnectionError):
    """The peer is gone (EOF, reset) or the channel was closed locally."""


class Conn:
    """A non-blocking socket driven by the running loop, closable while reads/writes wait.

    ``close`` shuts the socket down (which wakes pending reads and writes); the descriptor itself
    is closed once no operation is in flight, so the selector never holds a stale descriptor.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._busy = 0
        self._released = asyncio.Event()
        self._view = memoryview(bytearray(_STAGING))
        self._start = 0
        self._end = 0

    # --- raw I/O -------------------------------------------------------------------------
    async def recv_into(self, buf: memoryview) -> int:
        if self.closed:
            raise ChannelClosedError("channel is closed")
        self._busy += 1
        try:
            n = await self.loop.sock_recv_into(self.sock, buf)
        except OSError as exc:
            raise ChannelClosedError(f"connection lost: {exc}") from exc
        finally:
            self._busy -= 1
            self._release()
        if not n:
            raise ChannelClosedError("connection closed by peer")
        return n

    async def sendall(self, data: bytes | memoryview) -> None:
        if self.closed:
            raise ChannelClosedError("channel is closed")
        self._busy += 1
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError as exc:
            raise ChannelClosedError(f"connection lost: {exc}") from exc
        finally:
            self._busy -= 1
            self._release()

    def try_send(self, data: bytes) -> int:
        """Send what the kernel takes right now, without waiting (0 when it would block)."""
        if self.closed:
            raise ChannelClosedError("channel is closed")
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ChannelClosedError(f"connection lost: {exc}") from exc

    def send_blocking(self, data: memoryview) -> None:
        """Write all of ``data`` from a thread that may block (waits for writability)."""
        import select

        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLOUT)
        while len(data):
            sent = self.try_send(data)  # type: ignore[arg-type]
            data = data[sent:]
            if len(data):
                poller.poll(1000)

    def try_sendv(self, parts: list[bytes | memoryview]) -> list[memoryview]:
        """Send what the kernel takes now, with gathered writes (``sendmsg``: no copies, no
        joins); return what is left, in order."""
        views = [memoryview(p) for p in parts if len(p)]
        sock = self.sock
        while views:
            if self.closed:
                raise ChannelClosedError("channel is closed")
            try:
                n = sock.sendmsg(views[:512])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                raise ChannelClosedError(f"connection lost: {exc}") from exc
            while n:
                first = views[0]
                if n >= len(first):
                    n -= len(first)
                    del views[0]
                else:
                    views[0] = first[n:]
                    n = 0
        return views

    async def sendv(self, parts: list[bytes | memoryview]) -> None:
        """Send all of ``parts`` in order, waiting for the socket as needed."""
        left = self.try_sendv(parts)
        while left:
            await self._writable()
            left = self.try_sendv(left)  # type: ignore[arg-type]

    async def _writable(self) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = self.sock.fileno()
        self._busy += 1
        self.loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            self.loop.remove_writer(fd)
            self._busy -= 1
            self._release()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._release()

    def _release(self) -> None:
        if self.closed and not self._busy and not self._released.is_set():
            self.sock.close()
            self._released.set()

    async def wait_closed(self) -> None:
        await self._released.wait()

    # --- buffered reads ------------------------------------------------------------------
    async def read(self, n: int) -> memoryview:
        """The next ``n`` bytes (n <= 256 KiB); the view is valid until the next read."""
        start, end = self._start, self._end
        if end - start < n:
            view = self._view
            if len(view) - start < n:
                view[: end - start] = view[start:end]
                start, end = 0, end - start
                self._start, self._end = start, end
            while end - start < n:
                end += await self.recv_into(view[end:])
                self._end = end
        self._start = start + n
        if self._start == end:
            self._start = self._end = 0
        return self._view[start : start + n]

    async def readinto(self, dest: memoryview, poly: Poly1305 | None = None) -> None:
        """Fill ``dest`` exactly, feeding ``poly`` (when given) as bytes arrive.

        Large reads go straight from the socket into ``dest`` inside the loop's readiness
        callback (as ``sock_sendall`` does for writes): one task wake-up per buffer, not per chunk.
        """
        n = len(dest)
        have = min(n, self._end - self._start)
        if have:
            dest[:have] = self._view[self._start : self._start + have]
            self._start += have
            if self._start == self._end:
                self._start = self._end = 0
            if poly is not None:
                poly.update(dest[:have])
        if n - have < _DIRECT_MIN:
            if n > have:
                chunk = await self.read(n - have)
                dest[have:] = chunk
                if poly is not None:
                    poly.update(chunk)
            return
        pos = self._fill(dest, have, poly)
        if pos == n:
            return
        if self.closed:
            raise ChannelClosedError("channel is closed")
        loop, fd = self.loop, self.sock.fileno()
        fut: asyncio.Future[None] = loop.create_future()
        state = [pos]

        def on_readable() -> None:
            if fut.done():
                return
            try:
                state[0] = self._fill(dest, state[0], poly)
            except BaseException as exc:  # handed to the waiting task
                fut.set_exception(exc)
                return
            if state[0] == n:
                fut.set_result(None)

        self._busy += 1
        loop.add_reader(fd, on_readable)
        try:
            await fut
        finally:
            loop.remove_reader(fd)
            self._busy -= 1
            self._release()

    def _fill(self, dest: memoryview, pos: int, poly: Poly1305 | None) -> int:
        """Read what the socket has now into ``dest[pos:]``; return the new position."""
        sock, n = self.sock, len(dest)
        while pos < n:
            try:
                k = sock.recv_into(dest[pos:])
            except (BlockingIOError, InterruptedError):
                return pos
            except OSError as exc:
                raise ChannelClosedError(f"connection lost: {exc}") from exc
            if not k:
                raise ChannelClosedError("connection closed by peer")
            if poly is not None:
                poly.update(dest[pos : pos + k])
            pos += k
        return pos
