"""Socket plumbing of :mod:`jupyter_flame.channel.channel` (internal): a non-blocking socket driven by
the running loop with a staging buffer for small reads and zero-copy reads into large buffers."""

from __future__ import annotations

import array
import asyncio
import os
import select
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jupyter_flame.channel._seal import Feed
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

_STAGING = 256 * 1024
_DIRECT_MIN = 64 * 1024  # reads at least this large go straight into the destination
_MAX_FDS = 64  # descriptors one recvmsg takes (a frame's segments, see _shm.MAX_PER_FRAME)
_ANC = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
_MAX_PENDING_FDS = 4 * _MAX_FDS


def _recv_into(sock: socket.socket, view: memoryview, fds: deque[int] | None) -> int:
    """``recv_into``; on a Unix socket (``fds`` given) descriptors that come along are kept."""
    if fds is None:
        return sock.recv_into(view)
    n, anc, flags, _ = sock.recvmsg_into([view], _ANC)
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(data[: len(data) - len(data) % got.itemsize])
            fds.extend(got)
    if flags & socket.MSG_CTRUNC or len(fds) > _MAX_PENDING_FDS:
        while fds:
            os.close(fds.popleft())
        raise ChannelAuthError("the peer sent more descriptors than a frame may carry")
    return n


class Conn:
    """A non-blocking socket driven by the running loop, closable while reads/writes wait.

    ``close`` shuts the socket down (which wakes pending reads and writes); the descriptor itself
    is closed once no operation is in flight, so the selector never holds a stale descriptor.
    """

    def __init__(self, sock: socket.socket, staging: int = _STAGING) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.closed = False
        #: A Unix socket: descriptors received with frames (None on TCP), and those to send
        #: with the next write (a frame's segments, attached to its header's first bytes).
        self.fds_in: deque[int] | None = deque() if sock.family == socket.AF_UNIX else None
        self.fds_out: list[int] = []
        self._busy = 0
        self._released = asyncio.Event()
        self._view = memoryview(bytearray(staging))
        self._start = 0
        self._end = 0

    def grow(self, staging: int = _STAGING) -> None:
        """Give the staging buffer its full size (a listener's connections start with a small
        one, so that peers still in the handshake cost almost nothing); staged bytes are kept."""
        if len(self._view) >= staging:
            return
        view = memoryview(bytearray(staging))
        have = self._end - self._start
        view[:have] = self._view[self._start : self._end]
        self._view, self._start, self._end = view, 0, have

    # --- raw I/O -------------------------------------------------------------------------
    async def recv_into(self, buf: memoryview) -> int:
        if self.closed:
            raise ChannelClosedError("channel is closed")
        # The bytes are taken in this task's own step, never in a callback: a task cancelled
        # while it waits (the reading changing hands, see _baton) loses no data.
        sock = self.sock
        while True:
            try:
                n = _recv_into(sock, buf, self.fds_in)
            except (BlockingIOError, InterruptedError):
                await self._readable()
                if self.closed:
                    raise ChannelClosedError("channel is closed") from None
                continue
            except OSError as exc:
                raise ChannelClosedError(f"connection lost: {exc}") from exc
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
                if self.fds_out:
                    rights = array.array("i", self.fds_out).tobytes()
                    n = sock.sendmsg(views[:512], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                    self.fds_out = []  # they went with the first byte
                else:
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
        await self._ready(self.loop.add_writer, self.loop.remove_writer)

    async def _readable(self) -> None:
        await self._ready(self.loop.add_reader, self.loop.remove_reader)

    async def _ready(self, add: Callable[..., Any], remove: Callable[[int], bool]) -> None:
        """Wait until the socket is writable (or readable, with the reader methods)."""
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = self.sock.fileno()
        self._busy += 1
        add(fd, ready)
        try:
            await fut
        finally:
            remove(fd)
            self._busy -= 1
            self._release()

    def take_fd(self) -> int:
        """The next descriptor the peer sent (``ChannelAuthError`` when there is none)."""
        if not self.fds_in:
            raise ChannelAuthError("frame declares a shared-memory segment but no descriptor "
                                   "came with it (forged or truncated frame)")
        return self.fds_in.popleft()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while self.fds_in:
            os.close(self.fds_in.popleft())
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
    def staged(self, n: int) -> memoryview | None:
        """The next ``n`` bytes if the staging buffer holds them (consumed), else ``None``
        (after making room for ``n`` bytes at the end of the buffer)."""
        start, end = self._start, self._end
        if end - start < n:
            view = self._view
            if len(view) - start < n:
                view[: end - start] = view[start:end]
                self._start, self._end = 0, end - start
            return None
        self._start = start + n
        if self._start == end:
            self._start = self._end = 0
        return self._view[start : start + n]

    def unstage(self, dest: memoryview, poly: Feed | None) -> int:
        """Move what is staged (at most ``len(dest)`` bytes) into ``dest``; return how many."""
        have = min(len(dest), self._end - self._start)
        if have:
            dest[:have] = self._view[self._start : self._start + have]
            self._start += have
            if self._start == self._end:
                self._start = self._end = 0
            if poly is not None:
                poly.update(dest[:have])
        return have

    async def read(self, n: int) -> memoryview:
        """The next ``n`` bytes (n <= 256 KiB); the view is valid until the next read."""
        while (got := self.staged(n)) is None:
            self._end += await self.recv_into(self._view[self._end :])
        return got

    async def readinto(self, dest: memoryview, poly: Feed | None = None) -> None:
        """Fill ``dest`` exactly, feeding ``poly`` (when given) each chunk once it is in
        ``dest`` (a MAC reads it; a decryption replaces it in place).

        Large reads go straight from the socket into ``dest`` inside the loop's readiness
        callback (as ``sock_sendall`` does for writes): one task wake-up per buffer, not per chunk.
        """
        n = len(dest)
        have = self.unstage(dest, poly)
        if n - have < _DIRECT_MIN:
            if n > have:
                dest[have:] = await self.read(n - have)
                if poly is not None:
                    poly.update(dest[have:])
            return
        pos = self._fill(self.sock, dest, have, poly, self.fds_in)
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
                state[0] = self._fill(self.sock, dest, state[0], poly, self.fds_in)
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

    @staticmethod
    def _fill(sock: socket.socket, dest: memoryview, pos: int, poly: Feed | None,
              fds: deque[int] | None) -> int:
        """Read what ``sock`` has now into ``dest[pos:]``; return the new position."""
        n = len(dest)
        while pos < n:
            try:
                k = _recv_into(sock, dest[pos:], fds)
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


class BlockingReads:
    """Reads of a :class:`Conn` for a thread that waits on the socket itself (internal).

    It shares the connection's staging buffer, so the loop's reads and a thread's reads can
    take turns between frames (see :mod:`jupyter_flame.channel._baton`); only one reads at a time. It
    waits on a duplicate of the descriptor, so a concurrent :meth:`Conn.close` wakes it (the
    socket is shut down) but never leaves it on a descriptor number that was reused.

    Its ``read``/``readinto`` have the signatures of :class:`Conn`'s but never suspend: a
    coroutine that awaits only them runs to the end in one step (see :func:`drive`).
    ``check`` is called every ``interval`` seconds of waiting, and whenever one of
    ``wake_fds`` is readable; it may raise to give up waiting. Both attributes may change
    between reads.
    """

    def __init__(self, conn: Conn, check: Callable[[], None], wake_fds: tuple[int, ...] = (),
                 interval: float = 0.2) -> None:
        self.conn = conn
        try:
            if conn.closed:
                raise OSError("closed")
            self.sock = conn.sock.dup()
        except OSError as exc:  # closed meanwhile (a runner leaving, a lost link)
            raise ChannelClosedError("channel is closed") from exc
        self.check = check
        self.interval = interval
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        for fd in wake_fds:
            self._poll.register(fd, select.POLLIN)
        self._quiet = select.poll()  # the socket alone: while check() chose to go on
        self._quiet.register(self.sock.fileno(), select.POLLIN)

    def close(self) -> None:
        self.sock.close()

    def wait(self) -> None:
        """Block until the socket is readable (or ``check`` raises)."""
        fd = self.sock.fileno()
        poll = self._poll
        while True:
            events = poll.poll(int(self.interval * 1000))
            if any(e_fd == fd for e_fd, _ in events):
                return
            self.check()
            poll = self._quiet if events else self._poll

    async def read(self, n: int) -> memoryview:
        conn = self.conn
        while (got := conn.staged(n)) is None:
            conn._end = self._recv_some(conn._end)
        return got

    def _recv_some(self, end: int) -> int:
        view = self.conn._view
        while True:
            try:
                k = _recv_into(self.sock, view[end:], self.conn.fds_in)
            except (BlockingIOError, InterruptedError):
                self.wait()
                continue
            except OSError as exc:
                raise ChannelClosedError(f"connection lost: {exc}") from exc
            if not k:
                raise ChannelClosedError("connection closed by peer")
            return end + k

    async def readinto(self, dest: memoryview, poly: Feed | None = None) -> None:
        n = len(dest)
        pos = self.conn.unstage(dest, poly)
        while True:
            pos = Conn._fill(self.sock, dest, pos, poly, self.conn.fds_in)
            if pos == n:
                return
            self.wait()


T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (one over :class:`BlockingReads`) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a blocking read suspended")


def nodelay(sock: socket.socket) -> None:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
