"""Who reads a channel: a task on its event loop, a thread waiting on it, or nobody yet.

A message wakes whoever reads the socket. When that is the loop's thread and another thread
is the one waiting for the message (a kernel thread inside ``Pool.call``, a runner's idle main
thread), the message costs a second wake-up, and on a quiet machine each wake-up costs a
couple of hundred microseconds of cold caches. So a waiting thread takes the channel over and
reads the socket itself: it holds the *baton*. The baton changes hands only between frames
(the connection's staging buffer goes with it), and is in one of three places:

``loop``
    A reader task on the loop calls ``on_message`` for each message, in the loop's thread.
``thread``
    A thread reads with :meth:`jupyter_flame.channel.channel.Channel.recv_blocking` and hands what is
    not its business to the loop itself.
``parked``
    Nobody reads: bytes wait in the socket until the loop or a thread takes the baton. Each
    side decides when a parked baton must go back to the loop (the kernel on its heartbeat, a
    runner on its watchdog tick while a task runs).

Sending is independent of all this: frames go out from any thread (see
:meth:`~jupyter_flame.channel.channel.Channel.send_now`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_flame.channel._conn import BlockingReads
from jupyter_flame.errors import ChannelClosedError

__all__ = ["LOOP", "PARKED", "THREAD", "ReadBaton"]

LOOP, THREAD, PARKED = "loop", "thread", "parked"


class ReadBaton:
    """The baton of one channel (see the module docstring).

    Parameters
    ----------
    channel:
        The :class:`~jupyter_flame.channel.channel.Channel` read.
    loop:
        The loop that owns ``channel``; :meth:`take` and the reader run there.
    on_message:
        ``f(msg)``, called in the loop's thread for each message the loop's reader receives.
    on_failure:
        ``async f(exc) -> bool``, awaited in the loop's thread when the loop's reader fails;
        ``True`` reads on (e.g. after a message that could not be unpickled).
    """

    def __init__(self, channel: Any, loop: asyncio.AbstractEventLoop,
                 on_message: Callable[[object], None],
                 on_failure: Callable[[BaseException], Awaitable[bool]]) -> None:
        self.channel = channel
        self.loop = loop
        self._on_message = on_message
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._holder = PARKED
        self._parked_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._yield_wanted = False  # a thread waits for the loop's reader to stop
        self._loop_wanted = False  # the loop asked for the baton while a thread held it
        self._handed = threading.Event()
        self._closed = False
        self._reads: BlockingReads | None = None  # kept between a thread's turns

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's reader task, if it ever started (done once it stopped)."""
        return self._task

    def parked_for(self) -> float | None:
        """Seconds the baton has been parked, ``None`` if somebody holds it."""
        with self._lock:
            if self._holder != PARKED:
                return None
            return time.monotonic() - self._parked_at

    # --- the loop's side ------------------------------------------------------------------
    def take(self) -> None:
        """Start the loop's reader (in the loop's thread): now if the baton is parked, else as
        soon as the thread that holds it lets go."""
        with self._lock:
            if self._closed or self._holder == LOOP:
                return
            if self._holder == THREAD:
                self._loop_wanted = True
                return
            self._holder = LOOP
        self._task = self.loop.create_task(self._read())
        # a callback, not a ``finally``: a task cancelled before its first step runs no code
        self._task.add_done_callback(self._read_ended)

    def close(self) -> None:
        """Stop reading for good (in the loop's thread); a thread reading sees the channel
        close."""
        with self._lock:
            self._closed = True
            reads = None
            if self._holder != THREAD:
                reads, self._reads = self._reads, None
        if reads is not None:
            reads.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._handed.set()

    async def _read(self) -> None:
        channel = self.channel
        while not self._yield_wanted:
            try:
                msg = await channel.recv()
            except asyncio.CancelledError:
                if self._yield_wanted and not self._closed:
                    return  # handed over between frames
                raise
            except Exception as exc:
                if await self._on_failure(exc):
                    continue
                return
            self._on_message(msg)

    def _read_ended(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._holder = PARKED
            self._parked_at = time.monotonic()
        self._handed.set()

    def _yield(self) -> None:
        """In the loop's thread: stop the reader for a thread that asked, between frames."""
        task = self._task
        if self._holder != LOOP or task is None or task.done():
            self._handed.set()  # nothing to stop: let the thread look again
        elif not self.channel.mid_frame:
            task.cancel()
        # else the reader stops once the frame in progress is read (it checks _yield_wanted)

    # --- a thread's side ------------------------------------------------------------------
    def acquire(self, check: Callable[[], None]) -> bool:
        """Take the baton for the calling thread (never the loop's), waiting for the loop's
        reader to stop between frames; ``False`` (at once) if another thread holds it.
        ``check`` is called every 0.2 s of waiting and may raise to give up (then the loop
        takes the baton back)."""
        while True:
            with self._lock:
                if self._closed:
                    raise ChannelClosedError("the channel is closed")
                if self._holder == PARKED:
                    self._holder = THREAD
                    self._yield_wanted = False
                    return True
                if self._holder == THREAD:
                    return False
                self._yield_wanted = True
                self._handed.clear()
            self._call_soon(self._yield)
            try:
                while not self._handed.wait(0.2):
                    check()
            except BaseException:
                with self._lock:
                    self._yield_wanted = False
                    parked = self._holder == PARKED
                if parked:
                    self._call_soon(self.take)
                raise

    def release(self, to_loop: bool = False) -> None:
        """Let go (the holding thread); the loop takes over if it asked meanwhile, or if
        ``to_loop``."""
        with self._lock:
            self._holder = PARKED
            self._parked_at = time.monotonic()
            wanted, self._loop_wanted = self._loop_wanted, False
            reads = None
            if self._closed:
                reads, self._reads = self._reads, None
        if reads is not None:
            reads.close()
        if wanted or to_loop:
            self._call_soon(self.take)

    def reads(self, check: Callable[[], None], wake_fds: tuple[int, ...] = (),
              interval: float = 0.2) -> BlockingReads:
        """The holding thread's reads for :meth:`Channel.recv_blocking`, kept from one turn
        to the next (their duplicate descriptor is closed once the baton is closed)."""
        reads = self._reads
        if reads is None:
            reads = self._reads = self.channel.blocking_reads(check, wake_fds, interval)
        reads.check = check
        reads.interval = interval
        return reads

    def hand_to_loop(self, msg: object) -> None:
        """Have the loop handle a message a thread read (in order with others it hands)."""
        self._call_soon(self._on_message, msg)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the process is on its way out
            pass
