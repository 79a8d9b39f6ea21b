"""The authenticated (and, by choice, encrypted) message channel between a kernel (the parent)
and a runner.

One :class:`~jupyter_flame.channel.listener.Listener` per pool listens on the parent
(:mod:`.listener`); each runner dials it with :func:`~jupyter_flame.channel.dial.connect`
(:mod:`.dial`); both then hold a :class:`Channel` (this module).
Both ends prove they hold the pool's key (a mutual HMAC challenge on fresh nonces, in plain bytes)
before anything is unpickled, and derive per-connection, per-direction session keys. Every frame is
sequenced and authenticated over all of its bytes, out-of-band buffers included, before it is
unpickled: small frames by keyed BLAKE2b; large ones by a header tag checked before anything is
allocated (sizes are bounded by ``max_frame``) and a Poly1305 tag under a one-time key. With
``Listener.start(encrypt=True)`` (the parent decides, inside the handshake's tags) every frame's
payload and buffers are encrypted with AES-256-GCM instead, the sequence number as nonce, so a
replayed, reordered or truncated frame fails closed just the same. The wire format and its
rationale are in :mod:`jupyter_flame.channel._framing` and :mod:`._seal`; sockets in :mod:`._conn`.

Messages are pickled with protocol 5; every ``pickle.PickleBuffer`` inside a message (such as
:attr:`jupyter_flame.channel.protocol.Packed.buffers`) travels out of band, uncopied on send, and arrives
as a ``PickleBuffer`` over a fresh writable numpy buffer (so arrays come back writable).

Errors: a failed handshake or frame check raises :class:`~jupyter_flame.errors.ChannelAuthError`
and closes the connection; a vanished peer raises :class:`ChannelClosedError`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections.abc import Awaitable, Callable, Coroutine

from jupyter_flame.channel import _shm
from jupyter_flame.channel._conn import BlockingReads, Conn, drive
from jupyter_flame.channel._framing import (
    FRAME_TAG_SIZE,
    SMALL,
    DirectionKeys,
    FrameOpener,
    FrameSealer,
)
from jupyter_flame.channel._seal import BodySeal
from jupyter_flame.channel._shm_send import SegmentSending, consume_result
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

__all__ = ["DEFAULT_MAX_FRAME", "Channel", "ChannelClosedError", "Encoded"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 16 * 1024**3
"""Largest frame (payload plus buffers, in bytes) a channel accepts unless told otherwise."""

_CHUNK = 4 * 1024 * 1024  # large buffers are sealed and sent in chunks of this size


class Encoded:
    """A message pickled for sending (see :meth:`Channel.encode`): the protocol-5 payload and
    the raw views of its out-of-band buffers. Encode once, then offer it to
    :meth:`Channel.send_now` and, if refused, to :meth:`Channel.send`, without pickling twice."""

    __slots__ = ("payload", "views")

    def __init__(self, payload: bytes, views: list[memoryview]) -> None:
        self.payload = payload
        self.views = views

    @property
    def small(self) -> bool:
        """Whether it fits a small frame (no buffers, payload at most ``SMALL`` bytes)."""
        return not self.views and len(self.payload) <= SMALL


class Channel(SegmentSending):
    """One authenticated connection; use :func:`connect` or :meth:`Listener.expect` to get one.

    Attributes
    ----------
    peer_id:
        The runner id (on both ends).
    bytes_sent, bytes_received, frames_sent, frames_received:
        Traffic counters (bytes on the wire, framing included).
    closed:
        True once :meth:`close` ran or the connection failed.
    """

    def __init__(
        self,
        conn: Conn,
        peer_id: str,
        tx: DirectionKeys,
        rx: DirectionKeys,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._conn = conn
        self.peer_id = peer_id
        self._sealer = FrameSealer(tx)
        self._opener = FrameOpener(rx, max_frame)
        # Large buffers through shared memory on a Unix socket without encryption (_shm).
        self._segments: _shm.SegmentPool | None = None
        self._releases: list[int] = []
        self._release_lock = threading.Lock()
        if conn.fds_in is not None and tx.aead is None:
            self._segments = _shm.SegmentPool()
            self._opener.maps = _shm.SegmentMaps(self._segment_released)
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        # Guards the sealer and the socket's write side against send_now() from other threads;
        # ``_wire_busy`` is set while a frame handed to a write task is still going out.
        self._wire = threading.Lock()
        self._wire_busy = False
        self._scratch: memoryview | None = None  # ciphertext of the frame going out (AEAD)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def max_frame(self) -> int:
        return self._opener.max_frame

    def fileno(self) -> int:
        """The socket's descriptor (to watch it, never to read or write it)."""
        return self._conn.sock.fileno()

    def set_max_frame(self, limit: int) -> None:
        """Change the largest frame this end accepts (the peer's limit should match)."""
        self._opener.max_frame = limit

    @property
    def encrypted(self) -> bool:
        """Whether frames are encrypted (AES-256-GCM), not only authenticated."""
        return self._sealer.encrypts

    def _scratch_buffer(self) -> memoryview:
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_CHUNK))
        return self._scratch

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Channel peer={self.peer_id!r} {state} sent={self.frames_sent} recv={self.frames_received}>"

    # --- sending -------------------------------------------------------------------------
    @staticmethod
    def encode(msg: object) -> Encoded:
        """Pickle ``msg`` (protocol 5, buffers out of band) for :meth:`send`/:meth:`send_now`."""
        pbufs: list[pickle.PickleBuffer] = []
        payload = pickle.dumps(msg, protocol=5, buffer_callback=pbufs.append)
        return Encoded(payload, [pb.raw() for pb in pbufs])

    async def send(self, msg: object, *, encoded: Encoded | None = None) -> int:
        """Send one message as one frame; return the bytes it took on the wire.

        Safe to call from many tasks at once (frames never interleave). A frame that has
        started to go out is always finished, even if the calling task is cancelled.
        ``encoded`` is ``msg`` already encoded by :meth:`encode` (then ``msg`` is not pickled
        again), e.g. after :meth:`send_now` refused it.
        """
        if self.closed:
            raise ChannelClosedError(f"channel to {self.peer_id!r} is closed")
        if encoded is None:
            encoded = self.encode(msg)
        payload, views = encoded.payload, encoded.views
        lengths = [v.nbytes for v in views]
        await self._send_lock.acquire()
        fds: list[int] = []
        handed_off = False
        self._wire.acquire()
        try:
            if self.closed:
                raise ChannelClosedError(f"channel to {self.peer_id!r} is closed")
            parts: list[bytes | memoryview]
            body: BodySeal | None = None
            if not views and len(payload) <= SMALL:
                data = self._sealer.small(payload)
                self.bytes_sent += len(data)
                self.frames_sent += 1
                sent = self._conn.try_send(data)
                if sent == len(data):
                    return len(data)
                total = len(data)
                parts = [memoryview(data)[sent:]]
            else:
                if self._segments is not None:
                    lengths, views, fds = self._to_segments(views)
                head, body = self._sealer.header(len(payload), lengths)
                inband = sum(v.nbytes for v in views)
                total = len(head) + len(payload) + inband + FRAME_TAG_SIZE
                self.bytes_sent += total
                self.frames_sent += 1
                parts = [payload, *views]
                self._conn.fds_out = fds  # they go with the header's first byte
                if total - len(head) - FRAME_TAG_SIZE <= _CHUNK:
                    # seal it all and try to send it now, without a task
                    parts = self._seal_all(head, body, parts)
                    body = None
                    left = self._conn.try_sendv(parts)
                    if not left:
                        return total
                    parts = list(left)
            self._wire_busy = True
            task = asyncio.get_running_loop().create_task(
                self._write(parts, body, head if body is not None else b""))
            task.add_done_callback(consume_result)
            handed_off = True
        except BaseException:
            if not handed_off:
                if self._conn.fds_out and self._segments is not None:  # never went out
                    self._conn.fds_out = []
                    self._segments.unsent(lengths)
                self.close()  # the sequence number was spent, or the socket failed
            raise
        finally:
            self._wire.release()
            if not handed_off:
                self._send_lock.release()
        await asyncio.shield(task)
        return total

    def send_now(self, msg: object, *, encoded: Encoded | None = None) -> bool:
        """Send a small message at once from any thread, if the channel is idle.

        For a message without out-of-band buffers whose pickle fits a small frame, when no
        other frame is going out: the frame is written by the calling thread (sparing a hop to
        the event loop's thread) and ``True`` is returned. Otherwise nothing is sent and
        ``False`` is returned: use :meth:`send` (passing the same ``encoded``, if any, so the
        message is not pickled again). Frames never interleave with :meth:`send`'s.
        ``encoded`` is ``msg`` already encoded by :meth:`encode`.
        """
        if self.closed:
            return False
        if encoded is None:
            encoded = self.encode(msg)
        if not encoded.small:
            return self._send_now_segments(encoded)
        payload = encoded.payload
        if not self._wire.acquire(blocking=False):
            return False
        try:
            if self._wire_busy or self.closed:
                return False
            data = self._sealer.small(payload)
            self.bytes_sent += len(data)
            self.frames_sent += 1
            try:
                sent = self._conn.try_send(data)
                if sent < len(data):  # rare for a small frame: finish it here, blocking
                    self._conn.send_blocking(memoryview(data)[sent:])
            except BaseException:
                self.close()  # the sequence number was spent
                raise
            return True
        finally:
            self._wire.release()

    def _seal_all(self, head: bytes, body: BodySeal, parts: list[bytes | memoryview]
                  ) -> list[bytes | memoryview]:
        """The whole frame of a body of at most ``_CHUNK`` bytes, ready to send."""
        if body.copies:  # encrypted into the scratch buffer, in one piece
            scratch, pos = self._scratch_buffer(), 0
            for part in parts:
                n = len(memoryview(part).cast("B"))
                body.seal(part, scratch[pos : pos + n])
                pos += n
            return [head, scratch[:pos], body.finish()]
        for part in parts:  # MAC only: the parts go out as they are
            body.seal(part, None)
        if len(parts[0]) <= SMALL:  # one write for the header and a small payload
            return [head + parts[0], *parts[1:], body.finish()]
        return [head, *parts, body.finish()]

    async def _write(self, parts: list[bytes | memoryview], body: BodySeal | None,
                     head: bytes = b"") -> None:
        """Write ``parts``; with ``body``, send ``head`` and then seal each chunk of ``parts``
        just before it goes out (so the sealing overlaps the peer's reading), and send the tag
        with the last chunk."""
        conn = self._conn
        try:
            if body is None:
                await conn.sendv(parts)
                return
            scratch = self._scratch_buffer() if body.copies else None
            pending: list[bytes | memoryview] = [head]
            size = len(head)
            for part in parts:
                view = memoryview(part).cast("B")
                for start in range(0, len(view), _CHUNK):
                    chunk = view[start : start + _CHUNK]
                    if size + len(chunk) > _CHUNK:
                        await conn.sendv(pending)
                        pending, size = [], 0
                    out = scratch[size : size + len(chunk)] if scratch is not None else None
                    pending.append(body.seal(chunk, out))
                    size += len(chunk)
            pending.append(body.finish())
            await conn.sendv(pending)
        except BaseException:
            self.close()
            raise
        finally:
            with self._wire:
                self._wire_busy = False
            self._send_lock.release()

    # --- receiving -----------------------------------------------------------------------
    async def recv(self) -> object:
        """Receive the next message.

        Raises
        ------
        ChannelClosedError
            The peer closed the connection (or it was closed here).
        ChannelAuthError
            A frame failed its MAC, sequence or size check; the channel is closed.
        """
        async with self._recv_lock:
            while True:
                msg = self._loaded(await self._guard(self._opener.read(self._conn)))
                if msg is not _HANDLED:
                    return msg

    def blocking_reads(self, check: Callable[[], None], wake_fds: tuple[int, ...] = (),
                       interval: float = 0.2) -> BlockingReads:
        """Reads for a thread that waits on the socket itself (see :meth:`recv_blocking`);
        close them when done. ``check`` is called while waiting, every
        ``interval`` seconds and when one of ``wake_fds`` is readable; it may raise to stop."""
        return BlockingReads(self._conn, check, wake_fds, interval)

    def recv_blocking(self, reads: BlockingReads) -> object:
        """Receive the next message in the calling thread, blocking (see :meth:`recv`).

        Only one party reads a channel at a time: the caller must own its reading (see
        :mod:`jupyter_flame.channel._baton`). Whatever ``check`` raises while no frame is half read
        propagates and leaves the channel usable; an exception in the middle of a frame
        closes the channel.
        """
        while True:
            msg = self._loaded(drive(self._guard(self._opener.read(reads))))
            if msg is not _HANDLED:
                return msg

    @property
    def mid_frame(self) -> bool:
        """Whether a frame is half read (reading may change hands only between frames)."""
        return self._opener.mid_frame

    async def _guard(self, reading: Awaitable[tuple[bytes | bytearray | memoryview,
                                                     list[pickle.PickleBuffer], int]]
                     ) -> tuple[bytes | bytearray | memoryview, list[pickle.PickleBuffer], int]:
        if self.closed:
            if isinstance(reading, Coroutine):
                reading.close()
            raise ChannelClosedError(f"channel to {self.peer_id!r} is closed")
        try:
            return await reading
        except ChannelAuthError as exc:
            self.close()
            exc.runner = exc.runner or self.peer_id
            raise
        except ChannelClosedError:
            self.close()
            raise
        except BaseException:
            if self._opener.mid_frame:
                self.close()  # a partially read frame leaves the stream unusable
            raise

    def _loaded(self, frame: tuple[bytes | bytearray | memoryview, list[pickle.PickleBuffer], int]) -> object:
        payload, buffers, nbytes = frame
        self.bytes_received += nbytes
        self.frames_received += 1
        msg = pickle.loads(payload, buffers=buffers)
        if type(msg) is _shm.SegmentsReleased:
            if self._segments is not None:
                self._segments.release(msg.ids)
            return _HANDLED
        return msg

    # --- closing -------------------------------------------------------------------------
    @property
    def shared_memory(self) -> bool:
        """Whether large buffers travel through shared memory (a Unix socket, MAC only)."""
        return self._segments is not None

    def close(self) -> None:
        """Close the connection (idempotent); pending ``recv``/``send`` calls fail."""
        self._conn.close()
        if self._segments is not None:
            self._segments.close()
        if self._opener.maps is not None:
            self._opener.maps.close()

    async def wait_closed(self) -> None:
        """Wait until the socket is released after :meth:`close`."""
        await self._conn.wait_closed()


_HANDLED = object()  # _loaded's answer for an internal message the channel handled itself


