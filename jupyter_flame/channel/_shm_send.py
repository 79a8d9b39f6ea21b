"""The sending half of shared memory on a channel (internal; see :mod:`._shm`).

:class:`SegmentSending` is mixed into :class:`~jupyter_flame.channel.channel.Channel`: moving
large buffers into segments, sending such frames from the calling thread when little stays in
the stream, and telling the peer when one of its segments is no longer used here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from jupyter_flame.channel import _shm
from jupyter_flame.channel._conn import Conn
from jupyter_flame.channel._framing import FrameSealer
from jupyter_flame.channel._seal import BodySeal

_NOW_INBAND = 256 * 1024  # send_now takes a frame with segments if this much stays in-band


def consume_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the caller may have been cancelled and never see it


class SegmentSending:
    """Shared-memory sending for :class:`~jupyter_flame.channel.channel.Channel`."""

    _conn: Conn
    _sealer: FrameSealer
    _segments: _shm.SegmentPool | None
    _releases: list[int]
    _release_lock: threading.Lock
    _wire: threading.Lock
    _wire_busy: bool
    bytes_sent: int
    frames_sent: int

    # provided by Channel (declared here for the type checker)
    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def send_now(self, msg: object, *, encoded: Any = None) -> bool:
        raise NotImplementedError

    async def send(self, msg: object, *, encoded: Any = None) -> int:
        raise NotImplementedError

    def _seal_all(self, head: bytes, body: BodySeal, parts: list[bytes | memoryview]
                  ) -> list[bytes | memoryview]:
        raise NotImplementedError

    def _send_now_segments(self, encoded: Any) -> bool:  # a channel.Encoded
        """:meth:`send_now` for a message whose large buffers go into shared-memory segments,
        when what stays in the stream is small: the call's arguments then leave from the
        calling thread too (a 1 MiB array costs no hop to the loop)."""
        if self._segments is None or self.closed:
            return False
        inband = len(encoded.payload)
        segments = 0
        for view in encoded.views:
            if _shm.in_segment(view) and segments < _shm.MAX_PER_FRAME:
                segments += 1
            else:
                inband += view.nbytes
        if inband > _NOW_INBAND:
            return False
        if not self._wire.acquire(blocking=False):
            return False
        fds: list[int] = []
        lengths: list[int] = []
        try:
            if self._wire_busy or self.closed:
                return False
            lengths, views, fds = self._to_segments(encoded.views)
            head, body = self._sealer.header(len(encoded.payload), lengths)
            parts = self._seal_all(head, body, [encoded.payload, *views])
            total = sum(memoryview(p).nbytes for p in parts)
            self.bytes_sent += total
            self.frames_sent += 1
            self._conn.fds_out = fds
            try:
                for left in self._conn.try_sendv(parts):  # rare: finish it here, blocking
                    self._conn.send_blocking(left)
            except BaseException:
                self.close()  # the sequence number was spent
                raise
            return True
        except BaseException:
            if self._conn.fds_out:  # never went out
                self._conn.fds_out = []
                self._segments.unsent(lengths)
            raise
        finally:
            self._wire.release()

    def _to_segments(self, views: list[memoryview]) -> tuple[list[int], list[memoryview], list[int]]:
        """Move the large buffers into shared-memory segments: (table, in-band views, fds)."""
        assert self._segments is not None
        table: list[int] = []
        inband: list[memoryview] = []
        fds: list[int] = []
        for view in views:
            if _shm.in_segment(view) and len(fds) < _shm.MAX_PER_FRAME:
                entry, fd = self._segments.write(view)
                table.append(entry)
                fds.append(fd)
            else:
                table.append(view.nbytes)
                inband.append(view)
        return table, inband, fds

    def _segment_released(self, seg_id: int) -> None:
        """A mapping of the peer's segment is no longer used (any thread, from a finalizer):
        tell the peer now from this thread if the wire is free (so a runner's release goes out
        before the task's result, and the kernel has the segment back for its next call),
        else soon from the loop, in one internal message for all released so far."""
        if not self.closed and self.send_now(_shm.SegmentsReleased((seg_id,))):
            return
        with self._release_lock:
            first = not self._releases
            self._releases.append(seg_id)
        if first:
            try:
                self._conn.loop.call_soon_threadsafe(self._flush_releases)
            except RuntimeError:  # the loop is gone: so is the channel
                pass

    def _flush_releases(self) -> None:
        with self._release_lock:
            ids, self._releases = tuple(self._releases), []
        if ids and not self.closed:
            task = asyncio.ensure_future(self.send(_shm.SegmentsReleased(ids)))
            task.add_done_callback(consume_result)
