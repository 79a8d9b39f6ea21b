"""The runner process: ``python -m jupyter_flame.runner``.

A runner dials its parent (the kernel), authenticates, and then runs the cells and calls the
parent sends (:mod:`jupyter_flame.channel.protocol` describes the conversation). It is configured only
by its environment (see :func:`jupyter_flame.backends.base.runner_env`):

``JUPYTER_FLAME_PARENT`` (``host:port``), ``JUPYTER_FLAME_RUNNER_ID``, ``JUPYTER_FLAME_POOL``,
``JUPYTER_FLAME_KEY`` (hex; removed from the environment as soon as it is read, so cell code and
child processes never see it), ``JUPYTER_FLAME_BOOT_TIMEOUT`` (seconds to keep dialling a parent
that refuses connections; default 30) and ``JUPYTER_FLAME_CACHE_BYTES`` (bound of the value
cache; default 4 GiB).

Threads
-------
- ``flame-io`` runs the asyncio loop: the channel, heartbeats, idle and liveness checks, and
  one outbox through which every other thread sends (so messages keep their order).
- The main thread runs tasks, so that an interrupt (``SIGINT`` to the main thread) breaks out of
  ``time.sleep`` and most C code. Tasks beyond the first run concurrently in worker threads
  (interrupted with ``PyThreadState_SetAsyncExc``, which takes effect at the next bytecode).
- ``flame-output`` flushes buffered stdout/stderr text, and ``flame-fd1``/``flame-fd2`` read
  the process's own descriptors 1 and 2 (child processes' output), see
  :mod:`jupyter_flame.runner._outputs`.

Cells run as in IPython but each in a namespace of its own (:mod:`jupyter_flame.runner._execution`).

Modules: this one holds the entry point, the environment, the process group and :class:`Job`
(interrupt delivery); :mod:`jupyter_flame.runner._lifecycle` holds the :class:`Runner` itself.

Liveness: a runner exits when the connection closes, when no frame arrives for
``parent_timeout`` seconds, on :class:`~jupyter_flame.channel.protocol.Shutdown` or ``SIGTERM``, when
its idle request is accepted, and after its one task when ``single_use``. It exits from the I/O
thread even if the main thread is stuck in user code. The runner leads its own process group;
on exit it sends SIGTERM (then SIGKILL after a second) to the other processes in that group,
i.e. the children its cells started.

Exit codes
----------
0
    Normal: shutdown asked (``Shutdown``, ``SIGTERM``), idle retirement accepted, single-use
    task done.
1
    Internal error (a bug; the traceback is on stderr).
2
    Bad environment: a ``JUPYTER_FLAME_*`` variable is missing or malformed.
3
    The parent could not be reached within the boot timeout.
4
    Authentication with the parent failed (wrong key, or a tampered/out-of-sequence frame).
5
    The parent went away: the connection closed, or no frame arrived for ``parent_timeout``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.channel.protocol import Call, Execute

__all__ = [
    "DEFAULT_BOOT_TIMEOUT",
    "DEFAULT_CACHE_BYTES",
    "EXIT_AUTH",
    "EXIT_BAD_ENV",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PARENT_LOST",
    "EXIT_UNREACHABLE",
    "Job",
    "RunnerEnv",
    "become_group_leader",
    "kill_children",
    "main",
    "read_env",
]


EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_ENV = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_PARENT_LOST = 5

_CHILD_GRACE = 1.0  # seconds between SIGTERM and SIGKILL for the runner's children

DEFAULT_BOOT_TIMEOUT = 30.0
"""Seconds a runner keeps dialling a parent that refuses (``JUPYTER_FLAME_BOOT_TIMEOUT``)."""

DEFAULT_CACHE_BYTES = 4 * 1024**3
"""Default bound of the runner's value cache (``JUPYTER_FLAME_CACHE_BYTES`` overrides it)."""


class _Fatal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _log(text: str) -> None:
    stream = sys.__stderr__
    if stream is not None:
        try:
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def become_group_leader() -> None:
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    except OSError:
        pass  # a session leader (start_new_session=True) already leads its group


def _group_members(pgid: int, me: int) -> list[int] | None:
    """Live processes of process group ``pgid`` other than ``me``; ``None`` without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def kill_children() -> None:
    """SIGTERM, then SIGKILL, the other processes of our own process group."""
    me = os.getpid()
    if os.getpgrp() != me:
        return  # not our group: never signal anyone else's processes
    members = _group_members(me, me)
    if members is None:  # no /proc: signal the group (our own SIGTERM handler only notes it)
        try:
            os.killpg(me, signal.SIGTERM)
        except OSError:
            pass
        time.sleep(0.2)
        return
    sig = signal.SIGTERM
    deadline = time.monotonic() + _CHILD_GRACE
    while members:
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGKILL:
            return
        while members and time.monotonic() < deadline:
            time.sleep(0.05)
            members = _group_members(me, me) or []
        sig = signal.SIGKILL


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


@dataclass(frozen=True)
class RunnerEnv:
    """What the environment tells a runner."""

    host: str
    port: int
    runner_id: str
    pool: str
    key: bytes = field(repr=False)
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    cache_bytes: int = DEFAULT_CACHE_BYTES


def read_env(environ: Any = None) -> RunnerEnv:
    """Parse the runner's environment; removes ``JUPYTER_FLAME_KEY`` from it.

    Raises ``_Fatal`` (exit code 2) naming the variable that is missing or malformed.
    """
    env = os.environ if environ is None else environ
    key_hex = env.pop("JUPYTER_FLAME_KEY", None)

    def need(name: str) -> str:
        value = env.get(name)
        if not value:
            raise _Fatal(EXIT_BAD_ENV, f"{name} is not set; runners are started by a pool")
        return str(value)

    parent = need("JUPYTER_FLAME_PARENT")
    host, sep, port_text = parent.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise _Fatal(EXIT_BAD_ENV, f"JUPYTER_FLAME_PARENT={parent!r} is not host:port")
    if not key_hex:
        raise _Fatal(EXIT_BAD_ENV, "JUPYTER_FLAME_KEY is not set; runners are started by a pool")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise _Fatal(EXIT_BAD_ENV, "JUPYTER_FLAME_KEY is not hex") from None

    def number(name: str, default: float) -> float:
        text = env.get(name)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise _Fatal(EXIT_BAD_ENV, f"{name}={text!r} is not a number") from None

    return RunnerEnv(
        host=host,
        port=int(port_text),
        runner_id=need("JUPYTER_FLAME_RUNNER_ID"),
        pool=env.get("JUPYTER_FLAME_POOL") or "default",
        key=key,
        boot_timeout=number("JUPYTER_FLAME_BOOT_TIMEOUT", DEFAULT_BOOT_TIMEOUT),
        cache_bytes=int(number("JUPYTER_FLAME_CACHE_BYTES", DEFAULT_CACHE_BYTES)),
    )


def main() -> None:
    """Entry point of ``python -m jupyter_flame.runner``."""
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        env = read_env()
    except _Fatal as exc:
        _log(f"jupyter-flame runner: {exc}")
        sys.exit(exc.code)
    become_group_leader()
    from jupyter_flame.runner._lifecycle import (
        Runner,  # imports the channel; IPython comes after connecting
    )

    try:
        code = Runner(env).run()
    except BaseException:
        _log(traceback.format_exc())
        code = EXIT_INTERNAL
    sys.stdout.flush()
    os._exit(code)

