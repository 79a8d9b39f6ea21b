"""Large buffers through shared memory on a Unix-domain channel (internal).

A buffer of at least :data:`SHM_MIN` bytes is not written into the stream: the sender copies
it once into a *segment* (a ``memfd``, never a name in ``/dev/shm``), passes the descriptor
with the frame's header (``SCM_RIGHTS``), and the frame's table says "segment ``id``, ``n``
bytes" instead of carrying the bytes. The receiver maps the segment (``MAP_SHARED``) and hands
the mapping to ``pickle.loads`` as the buffer: no copy. When every object made from it is gone,
the receiver tells the sender (:class:`SegmentsReleased`, an internal message the channel
handles itself), and the sender reuses the segment for a later buffer: its pages stay touched
and the receiver's mapping of it stays populated, so a transfer costs one ``memcpy`` on this
side and nothing on the other.

Integrity. The table entry (id, length) is inside the frame's MAC, like every other byte of
the frame. The segment's bytes are not MACed; what stands in for a MAC is who can write them:
a memfd has no name anyone could open, the descriptor travels only over this authenticated
connection (a Unix socket in a 0700 directory, see :mod:`jupyter_flame.channel.listener`), so
only the two ends hold it; the sender seals it against shrinking and against further seals
(``F_SEAL_SHRINK | F_SEAL_SEAL``), so neither end can turn a mapping into a ``SIGBUS`` or stop
the other's writes; and the receiver checks the seals, the type and the size of every
descriptor before anything of the frame is unpickled. Segment bytes are raw buffer contents
(array data, bytes): they are never unpickled themselves. The sender writes a segment only
while the receiver has released it.

Lifetime. Segments die with the last descriptor or mapping: a SIGKILLed process leaves
nothing behind (no ``/dev/shm`` entry exists at any point). A sender keeps released segments
for reuse up to :data:`KEEP_BYTES` and :data:`KEEP_SECONDS`; the receiver drops cached mappings
on the same clock.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jupyter_flame.errors import ChannelAuthError

if TYPE_CHECKING:  # numpy is imported when a segment arrives (see _framing._empty)
    import numpy as np

SHM_MIN = 1 << 20
"""Buffers at least this large go through a segment (smaller ones stay in the stream)."""
MAX_PER_FRAME = 64
"""Segments one frame may carry (descriptors per ``recvmsg``); more buffers stay in the stream."""
def _keep_bytes() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 16 << 30
    return int(min(4 << 30, ram // 8))


KEEP_BYTES = _keep_bytes()
"""Released segments a sender keeps for reuse, in bytes (4 GiB, or an eighth of the RAM)."""
KEEP_SECONDS = 30.0
"""How long a released segment (and a receiver's idle mapping) is kept."""

_PARALLEL_MIN = 64 << 20  # copies at least this large are split across threads
_COPIERS = min(4, os.cpu_count() or 1)
_POOL: list[ThreadPoolExecutor] = []


def _copy_pool() -> ThreadPoolExecutor:
    if not _POOL:
        with _POOL_LOCK:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(_COPIERS, thread_name_prefix="flame-shm-copy"))
    return _POOL[0]


_POOL_LOCK = threading.Lock()
FLAG = 1 << 63
_ID_SHIFT = 40
_ID_MASK = (1 << 23) - 1
_LEN_MASK = (1 << _ID_SHIFT) - 1
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
NAME = "jupyter-flame"


def in_segment(view: memoryview) -> bool:
    """Whether a buffer travels in a segment: large, and not bytes/bytearray (the receiver
    copies those into a new object anyway, so a segment would only add a copy and memory)."""
    return view.nbytes >= SHM_MIN and not isinstance(view.obj, (bytes, bytearray))


def entry(seg_id: int, length: int) -> int:
    """The table entry of a buffer in segment ``seg_id``."""
    return FLAG | (seg_id & _ID_MASK) << _ID_SHIFT | length


def unpack(value: int) -> tuple[bool, int, int]:
    """``(in a segment, segment id, length)`` of a table entry."""
    if value & FLAG:
        return True, (value >> _ID_SHIFT) & _ID_MASK, value & _LEN_MASK
    return False, 0, value


def length_of(value: int) -> int:
    return value & _LEN_MASK if value & FLAG else value


class SegmentsReleased:
    """Internal message: the receiver is done with these segments (the channel handles it)."""

    __slots__ = ("ids",)

    def __init__(self, ids: tuple[int, ...]) -> None:
        self.ids = ids

    def __reduce__(self) -> tuple[type[SegmentsReleased], tuple[tuple[int, ...]]]:
        return SegmentsReleased, (self.ids,)


@dataclass
class _Segment:
    seg_id: int
    fd: int
    size: int
    freed_at: float = field(default=0.0)
    view: memoryview | None = None  # our writable mapping (its pages stay mapped for reuse)

    def write(self, data: memoryview) -> None:
        if self.view is None:
            self.view = memoryview(mmap.mmap(self.fd, self.size, mmap.MAP_SHARED,
                                             mmap.PROT_READ | mmap.PROT_WRITE))
        n = data.nbytes
        if n < _PARALLEL_MIN or _COPIERS < 2:
            self.view[:n] = data  # one memcpy into pages that stay touched
            return
        # a large copy in parallel pieces (numpy releases the GIL while it copies), as ray's
        # object store does: one core cannot saturate memory bandwidth
        from numpy import copyto, frombuffer, uint8

        dst, src = frombuffer(self.view, uint8, n), frombuffer(data, uint8, n)
        step = -(-n // _COPIERS)
        list(_copy_pool().map(lambda i: copyto(dst[i * step:(i + 1) * step], src[i * step:(i + 1) * step]),
                              range(_COPIERS)))

    def close(self) -> None:
        if self.view is not None:
            mm = self.view.obj
            self.view.release()
            self.view = None
            _close_quietly(mm)  # type: ignore[arg-type]
        os.close(self.fd)


class SegmentPool:
    """The sending side's segments: in flight (the receiver holds them) or free for reuse."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[int, _Segment] = {}
        self._free: list[_Segment] = []
        self._next = 1
        self.closed = False

    def write(self, view: memoryview) -> tuple[int, int]:
        """Copy ``view`` into a segment; return ``(table entry, descriptor to send)``."""
        n = view.nbytes
        seg = self._take(n)
        seg.write(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
        return entry(seg.seg_id, n), seg.fd

    def _take(self, n: int) -> _Segment:
        with self._lock:
            self._trim(time.monotonic())
            best = None
            for seg in self._free:  # the smallest free segment that fits (at most 2x)
                if n <= seg.size <= 2 * n + (1 << 20) and (best is None or seg.size < best.size):
                    best = seg
            if best is not None:
                self._free.remove(best)
                self._busy[best.seg_id] = best
                return best
            seg_id = self._new_id()
        fd = os.memfd_create(NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, n)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        except BaseException:
            os.close(fd)
            raise
        seg = _Segment(seg_id, fd, n)
        with self._lock:
            self._busy[seg_id] = seg
        return seg

    def _new_id(self) -> int:
        while True:
            seg_id = self._next
            self._next = self._next % _ID_MASK + 1
            if seg_id not in self._busy and all(s.seg_id != seg_id for s in self._free):
                return seg_id

    def unsent(self, entries: list[int]) -> None:
        """Take back segments of a frame that never went out (the receiver never saw them)."""
        self.release(tuple(unpack(e)[1] for e in entries if e & FLAG))

    def release(self, ids: tuple[int, ...]) -> None:
        """The receiver is done with ``ids``: keep them for reuse (within the limits)."""
        now = time.monotonic()
        with self._lock:
            for seg_id in ids:
                seg = self._busy.pop(seg_id, None)
                if seg is None:
                    continue
                if self.closed:
                    seg.close()
                    continue
                seg.freed_at = now
                self._free.append(seg)
            self._trim(now)

    def _trim(self, now: float) -> None:
        keep: list[_Segment] = []
        total = 0
        for seg in sorted(self._free, key=lambda s: s.freed_at, reverse=True):
            if now - seg.freed_at <= KEEP_SECONDS and total + seg.size <= KEEP_BYTES:
                keep.append(seg)
                total += seg.size
            else:
                seg.close()
        self._free = keep

    def trim(self) -> None:
        with self._lock:
            self._trim(time.monotonic())

    @property
    def held(self) -> int:
        """Bytes of segments this side holds (in flight and free)."""
        with self._lock:
            return sum(s.size for s in self._busy.values()) + sum(s.size for s in self._free)

    def close(self) -> None:
        """Drop every segment (mappings the receiver still has stay valid)."""
        with self._lock:
            self.closed = True
            for seg in [*self._busy.values(), *self._free]:
                seg.close()
            self._busy.clear()
            self._free.clear()


@dataclass
class _Mapping:
    inode: tuple[int, int]
    mm: mmap.mmap
    size: int
    used_at: float
    users: int = 0


class SegmentMaps:
    """The receiving side: maps segments (reusing a mapping when the sender reuses a segment)
    and reports, through ``on_release``, when nothing made from a segment is left."""

    def __init__(self, on_release: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        self._maps: dict[tuple[int, int], _Mapping] = {}
        self._on_release = on_release
        self.closed = False

    def open(self, fd: int, seg_id: int, length: int) -> np.ndarray:
        """The segment's first ``length`` bytes as a writable uint8 array (``fd`` is closed).

        Refuses (:class:`ChannelAuthError`) a descriptor that is not a sealed memfd of at
        least ``length`` bytes, before anything is mapped.
        """
        try:
            st = os.fstat(fd)
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError:
                seals = 0
            link = os.readlink(f"/proc/self/fd/{fd}")
            if not stat.S_ISREG(st.st_mode) or not link.startswith(f"/memfd:{NAME}"):
                raise ChannelAuthError(f"shared-memory descriptor is not one of ours ({link})")
            if seals & SEALS != SEALS:
                raise ChannelAuthError("shared-memory segment is not sealed against shrinking")
            if st.st_size < length:
                raise ChannelAuthError(f"shared-memory segment of {st.st_size} bytes is shorter "
                                       f"than the {length} bytes its frame declares (truncated)")
            inode = (st.st_dev, st.st_ino)
            with self._lock:
                found = self._maps.get(inode)
                if found is None or found.size < length:
                    self._trim(time.monotonic())
                    mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                    found = _Mapping(inode, mm, st.st_size, time.monotonic())
                    self._maps[inode] = found
                found.users += 1
                found.used_at = time.monotonic()
        finally:
            os.close(fd)
        from numpy import frombuffer, uint8

        array = frombuffer(found.mm, uint8, length)
        weakref.finalize(array, self._released, found, seg_id)
        return array

    def _released(self, found: _Mapping, seg_id: int) -> None:
        with self._lock:
            found.users -= 1
            found.used_at = time.monotonic()
        if not self.closed:
            self._on_release(seg_id)

    def _trim(self, now: float) -> None:
        for inode, m in list(self._maps.items()):
            if m.users <= 0 and now - m.used_at > KEEP_SECONDS:
                del self._maps[inode]
                _close_quietly(m.mm)

    def close(self) -> None:
        """Forget idle mappings (arrays still in use keep theirs alive)."""
        with self._lock:
            self.closed = True
            for m in self._maps.values():
                if m.users <= 0:
                    _close_quietly(m.mm)
            self._maps.clear()


def _close_quietly(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # still exported: it goes with its last array
        pass


def memfds_open() -> int:
    """How many of our segments this process holds descriptors of (for tests and checks)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(f"/memfd:{NAME}"):
                count += 1
        except OSError:
            continue
    return count
