"""How a runner sends: every thread posts to one outbox, drained in order by the I/O thread;
a task's ``Done`` with nothing queued before it is written by the task's own thread.

:class:`Outbox` is that part of :class:`~jupyter_flame.runner._lifecycle.Runner` (its attributes
are set up there; the I/O thread's sender drains ``_outbox``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from jupyter_flame.channel.protocol import Stream

__all__ = ["MAX_QUEUED_TEXT", "Outbox"]

MAX_QUEUED_TEXT = 32 * 1024 * 1024
"""Characters of output queued before writing threads wait."""


class Outbox:
    """Posting messages to the parent, from any thread (part of ``Runner``)."""

    # set up by Runner.__init__
    _loop: asyncio.AbstractEventLoop
    _io: threading.Thread
    _channel: Any
    # (message, future set once it is on the wire, its encoding if already pickled)
    _outbox: asyncio.Queue[tuple[object, concurrent.futures.Future[None] | None, Any]]
    _space: threading.Condition
    _queued_text: int
    _posted: int
    _sent: int
    _exiting: bool

    def post(self, msg: object) -> None:
        """Queue ``msg`` for the parent; thread-safe, order-preserving.

        Text waits while more than :data:`MAX_QUEUED_TEXT` characters are queued, so a cell
        printing faster than the network carries it is slowed down instead of filling memory.
        """
        with self._space:
            if isinstance(msg, Stream):
                if threading.get_ident() != self._io.ident:  # the I/O thread must never wait
                    while self._queued_text > MAX_QUEUED_TEXT and not self._exiting:
                        self._space.wait(0.5)
                self._queued_text += len(msg.text)  # the sender subtracts it for every Stream
            self._posted += 1
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, (msg, None, None))

    def _enqueue(self, msg: object) -> None:
        """Queue ``msg`` from the I/O thread itself."""
        with self._space:
            self._posted += 1
        self._outbox.put_nowait((msg, None, None))

    def _post_wait(self, msg: object, timeout: float | None = None) -> None:
        """Send ``msg`` after everything posted before it; return once it is on the wire.

        When nothing posted earlier is still queued, the calling thread writes a small message
        itself (no hop through the I/O thread: the common case of a task's ``Done``); a message
        it could not write that way goes through the I/O thread without being pickled again.
        """
        with self._space:
            idle = self._posted == self._sent
        channel = self._channel
        encoded = None
        if idle and channel is not None and not channel.closed:
            encoded = channel.encode(msg)
            if channel.send_now(msg, encoded=encoded):
                return
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._space:
            self._posted += 1
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, (msg, fut, encoded))
        fut.result(timeout)
