"""A task being run, as seen by whoever may interrupt it (:class:`Job`)."""

from __future__ import annotations

import asyncio
import ctypes
import threading

from jupyter_flame.channel.protocol import Call, Execute

__all__ = ["Job"]


class Job:
    """One task being run, as seen by whoever may interrupt it.

    An interrupt only ever raises inside :meth:`user_code`: a flag checked on entry, a SIGINT
    to the main thread (whose handler checks :attr:`in_user_code`), or an asynchronous
    exception for a worker thread, withdrawn again if the code finished before it landed.
    """

    def __init__(self, msg: Execute | Call) -> None:
        self.msg = msg
        self.task = msg.task
        self.thread_id: int | None = None
        self.on_main = False
        self.interrupted = False
        self.in_user_code = False
        self._async_sent = False
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None  # the cell's private loop, if any

    def release(self) -> None:
        """Forget the task's message (its code and values) once the task is done."""
        self.msg = None  # type: ignore[assignment]

    def user_code(self) -> Job:
        """Mark the span in which an interrupt may raise ``KeyboardInterrupt``: use as
        ``with job.user_code():`` (a plain context manager: this sits on every task's path)."""
        return self

    def __enter__(self) -> None:
        with self._lock:
            self.in_user_code = True
            interrupted = self.interrupted
        if interrupted:
            self.__exit__()
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.in_user_code = False
            if self._async_sent and self.thread_id is not None:
                _set_async_exc(self.thread_id, None)  # not delivered yet: withdraw it
            self._async_sent = False

    def request_interrupt(self) -> bool:
        """Flag the job; return whether it is in user code right now (then deliver a signal)."""
        with self._lock:
            self.interrupted = True
            return self.in_user_code

    def raise_in_thread(self) -> None:
        """Raise ``KeyboardInterrupt`` in the job's (worker) thread if it runs user code."""
        with self._lock:
            if self.in_user_code and self.thread_id is not None and not self._async_sent:
                self._async_sent = True
                _set_async_exc(self.thread_id, KeyboardInterrupt)
                loop = self.loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(_nothing)  # wake a loop waiting in select()


def _nothing() -> None:
    pass


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )
