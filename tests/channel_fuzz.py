"""Fuzzing the channel's frame reader as an attacker on the path would (shared by
tests/test_channel_fuzz.py, a short seeded run, and benchmarks/fuzz_channel.py, the long one).

The attacker sees genuine frames (it is on the path) but holds no key. Each fuzzed frame is a
genuine frame of the session, mutated (bits flipped, cut short, sizes or sequence numbers
rewritten, headers and bodies spliced, random bodies behind a plausible header). Two harnesses:

* :func:`fuzz_reader`: the real :class:`~jupyter_flame.channel._framing.FrameOpener` of both
  directions (the kernel's and the runner's) reading each fuzzed frame from memory. Fast, so
  it carries the 100,000-frame figure. A frame it accepts that is not byte-for-byte a genuine
  one is a forgery and fails the run.
* :func:`fuzz_sockets`: the real listener and channels over loopback; each fuzzed frame goes on a
  fresh authenticated connection (after a bad frame the connection is dropped), messages that
  count their own unpickling, and one real session beside them that must stay unaffected.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import re
import struct
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from jupyter_flame.channel import _framing
from jupyter_flame.channel.dial import connect
from jupyter_flame.channel.listener import Listener
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

UNPICKLED: list[int] = []


def _loaded(i: int) -> int:
    UNPICKLED.append(i)
    return i


class Counted:
    """Unpickling one records its number: proof of what was (and was not) loaded."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return (_loaded, (self.i,))


# --- genuine frames and their mutations --------------------------------------------------------
def genuine_message(rng: random.Random, i: int) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return (Counted(i), "x" * rng.randrange(0, 2000))
    if kind == 1:
        return (Counted(i), b"y" * rng.randrange(60_000, 70_000))  # around the small limit
    n = rng.randrange(1, 4)
    return (Counted(i), [pickle.PickleBuffer(np.full(rng.randrange(1, 200_000), i % 251,
                                                      np.uint8)) for _ in range(n)])


def seal(sealer: _framing.FrameSealer, msg: Any) -> bytes:
    bufs: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(msg, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    if not views and len(payload) <= _framing.SMALL:
        return sealer.small(payload)
    head, body = sealer.header(len(payload), [v.nbytes for v in views])
    parts = [bytes(body.seal(p, memoryview(bytearray(len(p))))) for p in (payload, *views)]
    return head + b"".join(parts) + body.finish()


KINDS = ("flip", "flips", "cut", "payload_len", "huge_len", "nbuf", "seq", "table", "random_body",
         "splice", "zero_tag", "extend")


def mutate(rng: random.Random, frame: bytes, other: bytes) -> tuple[str, bytes]:
    """One mutation of ``frame`` (``other`` is another genuine frame, for splicing)."""
    kind = rng.choice(KINDS)
    b = bytearray(frame)
    fixed = _framing.FIXED.size
    if kind == "flip":
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif kind == "flips":
        for _ in range(rng.randrange(2, 9)):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
    elif kind == "cut":
        b = b[: rng.randrange(0, len(b))]
    elif kind == "payload_len":
        struct.pack_into("<Q", b, 8, rng.randrange(0, 1 << 20))
    elif kind == "huge_len":
        struct.pack_into("<Q", b, 8, rng.choice([1 << 62, (1 << 64) - 1, 1 << 40, 1 << 34]))
    elif kind == "nbuf":
        struct.pack_into("<I", b, 16, rng.choice([1, 2, 7, 1 << 16, (1 << 32) - 1,
                                                  rng.randrange(1 << 32)]))
    elif kind == "seq":
        struct.pack_into("<Q", b, 0, rng.randrange(1, 1 << 64))
    elif kind == "table":
        nbuf = struct.unpack_from("<I", b, 16)[0]
        if nbuf and len(b) >= fixed + 8 * nbuf:
            struct.pack_into("<Q", b, fixed + 8 * rng.randrange(nbuf),
                             rng.choice([0, 1, 1 << 62, rng.randrange(1 << 30)]))
        else:
            b[rng.randrange(len(b))] ^= 0xFF
    elif kind == "random_body":
        b = b[:fixed] + bytearray(rng.randbytes(rng.randrange(0, 4096)))
    elif kind == "splice":
        cut = rng.randrange(fixed, max(fixed + 1, min(len(b), len(other))))
        b = b[:cut] + bytearray(other[cut:])
    elif kind == "zero_tag":
        b[-16:] = bytes(16)
    elif kind == "extend":
        struct.pack_into("<Q", b, 8, struct.unpack_from("<Q", b, 8)[0] + rng.randrange(1, 64))
        b += rng.randbytes(64)
    if bytes(b) == frame:  # a no-op mutation (e.g. a cut at full length): flip one more bit
        b = bytearray(frame[:-1]) if frame else bytearray(b"\0")
    return kind, bytes(b)


# --- the reader in memory ------------------------------------------------------------------------
class MemoryReads:
    """The read side of :class:`~jupyter_flame.channel._conn.Conn` over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    async def read(self, n: int) -> memoryview:
        if self.pos + n > len(self.view):
            raise ChannelClosedError("connection closed by peer")
        out = self.view[self.pos : self.pos + n]
        self.pos += n
        return out

    async def readinto(self, dest: memoryview, feed: Any = None) -> None:
        n = len(dest)
        dest[:] = await self.read(n)
        if feed is not None:
            feed.update(dest)


def _drive(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the in-memory reader suspended")


@dataclass
class FuzzReport:
    frames: int = 0
    accepted_forgeries: int = 0
    rejected: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0
    seconds: float = 0.0
    unpickled: int = 0

    def add(self, kind: str, outcome: str) -> None:
        self.frames += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.errors[outcome] = self.errors.get(outcome, 0) + 1


def outcome(exc: BaseException) -> str:
    """The kind of refusal, numbers stripped (``frame declares N buffers (limit N)``)."""
    return re.sub(r"\d+", "N", str(exc).split(";")[0])[:70]


def fuzz_reader(n: int, seed: int, encrypt: bool, max_frame: int = 16 * 1024**3) -> FuzzReport:
    """``n`` fuzzed frames through the real frame reader, both directions, in memory."""
    rng = random.Random(seed)
    transcript = rng.randbytes(100)
    p2r, r2p = _framing.session_keys(os.urandom(32), transcript, encrypt)
    report = FuzzReport()
    genuine = {d: [seal(_framing.FrameSealer(k), genuine_message(rng, i)) for i in range(16)]
               for d, k in (("p2r", p2r), ("r2p", r2p))}  # each sealed as frame 0 of a sealer
    keys = {"p2r": p2r, "r2p": r2p}
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        for i in range(n):
            direction = "p2r" if i % 2 else "r2p"
            frames = genuine[direction]
            frame = frames[rng.randrange(len(frames))]
            kind, bad = mutate(rng, frame, frames[rng.randrange(len(frames))])
            opener = _framing.FrameOpener(keys[direction], max_frame)
            try:
                _drive(opener.read(MemoryReads(bad)))
            except ChannelAuthError as exc:
                report.add(kind, outcome(exc))
                report.rejected += 1
                continue
            except ChannelClosedError:
                report.add(kind, "closed (cut short)")
                report.rejected += 1
                continue
            report.add(kind, "ACCEPTED")
            if bad not in frames:
                report.accepted_forgeries += 1
    finally:
        report.seconds = time.perf_counter() - t0
        report.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return report


# --- real sockets ---------------------------------------------------------------------------------
async def fuzz_sockets(n: int, seed: int, encrypt: bool) -> FuzzReport:
    """``n`` fuzzed frames, each to a fresh authenticated channel on one real listener, half
    towards the kernel's side and half towards the runner's; a real session beside them."""
    rng = random.Random(seed)
    key = os.urandom(32)
    report = FuzzReport()
    UNPICKLED.clear()
    lst = await Listener.start("127.0.0.1", key, encrypt=encrypt)
    fut = lst.expect("real")
    real_runner = await connect(*lst.address, key, "real", timeout=5)
    real_parent = await asyncio.wait_for(fut, 5)
    good = 0
    me = psutil.Process()
    rss0 = me.memory_info().rss
    t0 = time.perf_counter()
    try:
        for i in range(n):
            if i % 100 == 0:  # growth of the whole process (kernel side and runner side)
                report.peak_bytes = max(report.peak_bytes, me.memory_info().rss - rss0)
            rid = f"f{i}"
            fut = lst.expect(rid)
            runner = await connect(*lst.address, key, rid, timeout=5)
            parent = await asyncio.wait_for(fut, 5)
            sender, receiver = (runner, parent) if i % 2 else (parent, runner)
            msg = genuine_message(rng, i)
            frame = seal(sender._sealer, msg)
            sender._sealer.seq = 0
            kind, bad = mutate(rng, frame, seal(_framing.FrameSealer(
                _framing.DirectionKeys(os.urandom(32), os.urandom(32))), msg))
            sender._sealer.seq = 1
            await sender._conn.sendall(bad)
            sender.close()  # a cut frame then sees the end, not silence
            try:
                await asyncio.wait_for(receiver.recv(), 5)
                report.add(kind, "ACCEPTED")
                if bad != frame:
                    report.accepted_forgeries += 1
            except ChannelAuthError as exc:
                report.add(kind, outcome(exc))
                report.rejected += 1
            except ChannelClosedError:
                report.add(kind, "closed (cut short)")
                report.rejected += 1
            receiver.close()
            if i % 10 == 0:  # the real session goes on undisturbed
                await real_runner.send(("real", i))
                assert await asyncio.wait_for(real_parent.recv(), 5) == ("real", i)
                good += 1
    finally:
        report.seconds = time.perf_counter() - t0
        report.unpickled = len(UNPICKLED)
        real_runner.close()
        real_parent.close()
        await lst.close()
    assert good == (n + 9) // 10
    return report
