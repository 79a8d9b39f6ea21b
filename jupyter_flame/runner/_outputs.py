"""Route a runner's stdout, stderr and rich displays to the task that produced them.

Every task runs with :data:`current_task` set (a context variable, so asyncio tasks created by
a cell inherit it). Output from anywhere else (threads a cell started, which begin with an
empty context) goes to the task that started last among those still running; output when no
task runs goes to the process's own stdout/stderr (the runner's log).

Text is buffered per task, in order across stdout and stderr, and sent as
:class:`~jupyter_flame.channel.protocol.Stream` messages by a flusher thread: a complete line wakes it
at once, a partial line waits at most :data:`FLUSH_INTERVAL` seconds. A display first flushes
its task's pending text, so text and displays arrive in the order they were produced.
"""

from __future__ import annotations

import codecs
import io
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TextIO

from IPython.core.displaypub import DisplayPublisher

from jupyter_flame.channel.protocol import ClearOutput, Display, Stream

__all__ = [
    "FLUSH_INTERVAL",
    "DisplayRouter",
    "OutputRouter",
    "TaskStream",
    "current_task",
    "install_streams",
]

FLUSH_INTERVAL = 0.05
"""Seconds a partial line may wait before it is sent."""

_MIN_GAP = 0.005  # coalesce bursts of lines into one message per this many seconds
_EAGER_BYTES = 1 << 20  # a task with this much pending text is flushed by the writer itself

#: The task whose code is running in this context (``None`` outside tasks).
current_task: ContextVar[int | None] = ContextVar("jupyter_flame_task", default=None)

Send = Callable[[object], None]


class OutputRouter:
    """Collects text per task and sends it as ``Stream`` messages through ``send``.

    ``send`` must be thread-safe and keep the order of calls (the runner's outbox).
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        # Where output goes while no task runs (the process's own stdout/stderr).
        self.fallback: dict[str, TextIO | None] = {
            "stdout": sys.__stdout__, "stderr": sys.__stderr__
        }
        self._lock = threading.Lock()
        self._pending: dict[int, list[list[str]]] = {}  # task -> [[name, text], ...]
        self._running: list[int] = []  # in start order
        self._wake = threading.Event()
        self.pumps: list[_FdPump] = []
        self._thread = threading.Thread(target=self._flusher, name="flame-output", daemon=True)
        self._thread.start()

    # --- task bookkeeping ----------------------------------------------------------------
    def task_started(self, task: int) -> None:
        with self._lock:
            self._running.append(task)

    def task_finished(self, task: int) -> None:
        """Send the task's remaining text; later output goes elsewhere."""
        if self.pumps:
            ready = select.select([p.fd for p in self.pumps], [], [], 0)[0]
            for pump in self.pumps:
                if pump.busy or pump.fd in ready:  # else it holds nothing: spare the lock
                    pump.sync()
        with self._lock:
            self._flush_locked(task)
            if task in self._running:
                self._running.remove(task)
            self._pending.pop(task, None)

    def target(self) -> int | None:
        """The task that output written here and now belongs to."""
        task = current_task.get()
        running = self._running
        if task is not None and task in running:
            return task
        return running[-1] if running else None

    # --- text ----------------------------------------------------------------------------
    def write(self, name: str, text: str) -> None:
        if not text:
            return
        task = self.target()
        if task is None:
            stream = self.fallback.get(name)
            if stream is not None:
                try:
                    stream.write(text)
                    stream.flush()
                except (OSError, ValueError):
                    pass
            return
        with self._lock:
            chunks = self._pending.setdefault(task, [])
            first = not chunks
            if chunks and chunks[-1][0] == name:
                chunks[-1][1] += text
            else:
                chunks.append([name, text])
            if sum(len(c[1]) for c in chunks) >= _EAGER_BYTES:
                self._flush_locked(task)
                return
        if first or "\n" in text:
            self._wake.set()  # the flusher sleeps while nothing is pending

    def flush(self) -> None:
        """Send the current target task's pending text now."""
        task = self.target()
        if task is None:
            return
        with self._lock:
            self._flush_locked(task)

    def flush_all(self) -> None:
        with self._lock:
            for task in list(self._pending):
                self._flush_locked(task)

    def _flush_locked(self, task: int) -> None:
        chunks = self._pending.get(task)
        if not chunks:
            return
        self._pending[task] = []
        for name, text in chunks:
            self._send(Stream(task, name, text))

    def _flusher(self) -> None:
        last = 0.0
        while True:
            with self._lock:
                pending = any(self._pending.values())
            # Sleep until text arrives (no periodic wake-ups on an idle runner); with partial
            # lines pending, flush them within FLUSH_INTERVAL.
            self._wake.wait(FLUSH_INTERVAL if pending else None)
            gap = time.monotonic() - last
            if gap < _MIN_GAP:
                time.sleep(_MIN_GAP - gap)
            self._wake.clear()
            last = time.monotonic()
            try:
                self.flush_all()
            except Exception:  # never let the flusher die; the outbox may be closing
                pass

    # --- rich output ---------------------------------------------------------------------
    def display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        display_id: str | None = None,
        update: bool = False,
    ) -> None:
        task = self.target()
        if task is None:
            return  # nobody to show it to
        with self._lock:
            self._flush_locked(task)
            self._send(Display(task, dict(data), dict(metadata or {}), display_id, update))

    def clear_output(self, wait: bool = False) -> None:
        task = self.target()
        if task is None:
            return
        with self._lock:
            self._flush_locked(task)
            self._send(ClearOutput(task, wait))


class TaskStream(io.TextIOBase):
    """A ``sys.stdout``/``sys.stderr`` replacement that writes through an :class:`OutputRouter`.

    ``fd`` is what :meth:`fileno` answers: the process's descriptor 1 or 2 (captured by
    :func:`install_streams`, so writes to it reach the task too).
    """

    def __init__(self, router: OutputRouter, name: str, fd: int | None) -> None:
        super().__init__()
        self._router = router
        self._name = name
        self._fd = fd
        self.buffer = _BinaryWriter(self)

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._router.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        self._router.flush()


class _BinaryWriter:
    """``sys.stdout.buffer`` for code that writes bytes.

    Decodes incrementally, so a multi-byte UTF-8 character split across writes arrives whole
    (its first bytes wait for the rest instead of becoming replacement characters).
    """

    def __init__(self, stream: TaskStream) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # keeps the decoder's state and the write order together
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = data if isinstance(data, bytes) else bytes(data)
        with self._lock:
            text = self._decoder.decode(chunk)
            if text:
                self._stream.write(text)
        return len(chunk)

    def flush(self) -> None:
        self._stream.flush()


class DisplayRouter(DisplayPublisher):
    """IPython's display publisher for a runner: every display becomes a message."""

    router: OutputRouter | None = None

    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self._validate_data(data, metadata)  # type: ignore[no-untyped-call]
        display_id = (transient or {}).get("display_id")
        if self.router is not None:
            self.router.display(data, metadata, display_id, update)

    def clear_output(self, wait: bool = False) -> None:
        if self.router is not None:
            self.router.clear_output(wait)


def install_streams(router: OutputRouter) -> None:
    """Route ``sys.stdout``/``sys.stderr`` and descriptors 1 and 2 through ``router``.

    Capturing the descriptors sends the output of child processes and C code to the task that
    started last. The process's original stdout/stderr stay reachable as ``sys.__stdout__`` /
    ``sys.__stderr__`` (duplicated descriptors), which is where the runner's own log goes.
    """
    fds: dict[str, int | None] = {"stdout": None, "stderr": None}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            original = _capture_fd(router, fd, name)
        except OSError:
            continue
        router.fallback[name] = original
        fds[name] = fd
        if fd == 1:
            sys.__stdout__ = original  # type: ignore[misc]
        else:
            sys.__stderr__ = original  # type: ignore[misc]
    sys.stdout = TaskStream(router, "stdout", fds["stdout"])
    sys.stderr = TaskStream(router, "stderr", fds["stderr"])


class _FdPump:
    """Reads a captured descriptor's pipe and writes what arrives through the router.

    Every read of the pipe happens under one lock, by the pump thread (when the pipe becomes
    readable) or by :meth:`sync`. So a task that ends calls :meth:`sync`, which takes the lock
    (everything the pump read before has been routed by then) and drains what is still in the
    pipe itself: output its child processes wrote a moment before still belongs to it, and no
    thread has to be woken for that in the common case of an empty pipe.
    """

    def __init__(self, router: OutputRouter, fd: int, name: str, read_end: int) -> None:
        self._router = router
        self._name = name
        self._read_end = read_end
        os.set_blocking(read_end, False)
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._eof = False
        threading.Thread(target=self._pump, name=f"flame-fd{fd}", daemon=True).start()

    @property
    def fd(self) -> int:
        return self._read_end

    @property
    def busy(self) -> bool:
        """Whether the pump thread is routing what it read (it holds the lock meanwhile)."""
        return self._lock.locked()

    def sync(self, timeout: float = 0.5) -> None:
        if self._lock.acquire(timeout=timeout):
            try:
                self._drain()
            finally:
                self._lock.release()

    def _drain(self) -> None:
        """Route everything the pipe holds now (caller holds the lock)."""
        while not self._eof:
            try:
                data = os.read(self._read_end, 65536)
            except BlockingIOError:  # (EINTR is retried by os.read itself, PEP 475)
                return
            except OSError:
                self._eof = True
                return
            if not data:
                self._eof = True
                return
            self._router.write(self._name, self._decoder.decode(data))

    def _pump(self) -> None:
        poller = select.poll()
        poller.register(self._read_end, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self._eof:
            poller.poll()  # retried on EINTR (PEP 475)
            with self._lock:
                self._drain()


def _capture_fd(router: OutputRouter, fd: int, name: str) -> io.TextIOWrapper:
    """Point ``fd`` at a pipe read by a thread; return a stream on the original file."""
    saved = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)
    os.set_inheritable(saved, False)
    router.pumps.append(_FdPump(router, fd, name, read_end))
    return open(saved, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
