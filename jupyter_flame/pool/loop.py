"""The flame loop: one asyncio event loop in a daemon thread that owns every pool, channel and
backend of this process.

Synchronous edges (the magic, ``Pool.submit``, widgets) hand coroutines to it with
:func:`run_sync` / :func:`submit`; nothing else touches the async core from another thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """Return the flame loop, starting its thread on first use."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="jupyter-flame-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the flame loop; return a thread-safe future."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the flame loop and wait for its result from a synchronous caller."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError("run_sync() called from the flame loop thread; await instead")
    return submit(coro).result(timeout)


def call_soon(fn: Any, *args: Any) -> None:
    """Call ``fn(*args)`` on the flame loop thread (fire and forget)."""
    get_loop().call_soon_threadsafe(fn, *args)
