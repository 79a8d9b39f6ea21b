"""A runner's life once started: the channel, tasks, interrupts, liveness and exit.

See :mod:`jupyter_flame.runner` (the entry point) for the threads, the liveness rules and the
exit codes. Nothing here imports IPython until the runner has connected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from jupyter_flame.channel._baton import PARKED, ReadBaton
from jupyter_flame.channel.protocol import (
    EXIT_AUTH,
    EXIT_BAD_ENV,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PARENT_LOST,
    EXIT_UNREACHABLE,
    Call,
    Configure,
    Execute,
    IdleReply,
    IdleRequest,
    Interrupt,
    Ping,
    Pong,
    Shutdown,
    Stream,
)
from jupyter_flame.errors import ChannelClosedError
from jupyter_flame.runner.env import Fatal as _Fatal
from jupyter_flame.runner.env import RunnerEnv
from jupyter_flame.runner.env import log as _log
from jupyter_flame.runner.jobs import Job
from jupyter_flame.runner.process_group import kill_children
from jupyter_flame.runner.sentinel import start_connection_sentinel
from jupyter_flame.runner.stats import Stats
from jupyter_flame.runner.tasks import TaskScheduling

__all__ = ["Runner"]

_TICK = 0.2  # seconds between liveness/idle checks
_PRE_CONFIGURE_TIMEOUT = 30.0  # parent_timeout until the first Configure arrives
_SHUTDOWN_GRACE = 2.0  # seconds interrupted tasks get to finish on Shutdown
_FLUSH = object()  # outbox marker: everything before it has been sent


class Runner(TaskScheduling):
    """One runner process's life, from dialling the parent to exiting; see
    :mod:`jupyter_flame.runner` for the threads and the rules."""

    def __init__(self, env: RunnerEnv) -> None:
        self.env = env
        self.config = Configure(pool=env.pool, runner_id=env.runner_id)
        self._configured = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._io = threading.Thread(target=self._loop.run_forever, name="flame-io", daemon=True)
        self._channel: Any = None
        # (message, future set once it is on the wire, its encoding if already pickled)
        self._outbox: asyncio.Queue[tuple[object, concurrent.futures.Future[None] | None, Any]]
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}  # task -> Job, started or pending
        self._pending: deque[Job] = deque()
        self._running = 0
        self._finishing = 0  # tasks no longer running whose Done is still being sent
        self._main_busy = False
        self._main_jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        # written to when a task is queued for the main thread while it reads the channel
        self._main_wake = socket.socketpair()
        for end in self._main_wake:
            end.setblocking(False)
        self._baton: Any = None
        self._io_tasks: list[asyncio.Task[None]] = []
        self._main_job: Job | None = None
        self._main_ident = threading.get_ident()
        self._ready = threading.Event()
        self._router: Any = None
        self._executor: Any = None
        self._last_frame = time.monotonic()
        self._last_activity = time.monotonic()
        self._idle_pending = False
        self._stats = Stats()
        self._stopping = False
        self._exit_lock = threading.Lock()
        self._exiting = False
        self._leaving = False  # a clean exit is closing the channel: EOF is expected
        self._space = threading.Condition()
        self._queued_text = 0
        self._posted = 0  # messages handed to the sender (under _space)
        self._sent = 0  # ... and those it has finished with (under _space)

    # --- life ----------------------------------------------------------------------------
    def run(self) -> int:
        """Connect, then serve tasks in the main thread; returns only on a startup failure."""
        self._io.start()
        self._install_signals()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result()
        except _Fatal as exc:
            _log(f"jupyter-flame runner {self.env.runner_id}: {exc}")
            return exc.code
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        try:
            self._prepare()
        except BaseException:
            _log(traceback.format_exc())
            self._terminate(EXIT_INTERNAL, "could not start IPython on the runner")
        self._ready.set()
        while True:
            job = self._next_main_job()
            self._main_job = job
            try:
                self._run_job(job)
            finally:
                self._main_job = None
                # Drop the finished task now, not when the next one arrives: its arguments
                # may be shared-memory segments the kernel is waiting to reuse.
                job.release()
                del job
                self._reassert_signals()  # the task may have replaced our handlers

    async def _connect(self) -> None:
        from jupyter_flame.channel.dial import connect
        from jupyter_flame.errors import ChannelAuthError

        self._outbox = asyncio.Queue()
        env = self.env
        where = f"{env.host}:{env.port}"
        deadline = time.monotonic() + env.boot_timeout
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Fatal(
                    EXIT_UNREACHABLE,
                    f"cannot reach the parent at {where} within {env.boot_timeout:g} s "
                    f"(JUPYTER_FLAME_BOOT_TIMEOUT): {last or 'timed out'}",
                )
            try:
                self._channel = await connect(env.host, env.port, env.key, env.runner_id,
                                              timeout=remaining)
                if not os.environ.get("JUPYTER_FLAME_KERNEL_PID"):  # a pod: no kernel pid
                    start_connection_sentinel(self._channel.fileno())
                self._baton = ReadBaton(self._channel, self._loop, self._on_frame,
                                        self._read_failed)
                return
            except ChannelAuthError as exc:
                raise _Fatal(
                    EXIT_AUTH, f"authentication with the parent at {where} failed: {exc}"
                ) from exc
            except ValueError as exc:
                raise _Fatal(EXIT_BAD_ENV, str(exc)) from exc
            except OSError as exc:  # refused, unreachable, timed out: keep dialling
                last = exc
                await asyncio.sleep(min(0.05, max(remaining, 0.0)))

    def _prepare(self) -> None:
        """Import IPython and build the shell (after connecting, so that dialling is fast)."""
        from jupyter_flame.runner._execution import Executor, ValueCache, make_shell
        from jupyter_flame.runner._outputs import DisplayRouter, OutputRouter, install_streams
        from jupyter_flame.values.shipping import pack

        router = OutputRouter(self.post)
        shell = make_shell(DisplayRouter)
        shell.display_pub.router = router  # type: ignore[attr-defined]
        shell.transform_cell("pass\n")  # type: ignore[no-untyped-call]
        pack(None)  # warm up module classification
        install_streams(router)
        self._router = router
        self._executor = Executor(shell, ValueCache(self.env.cache_bytes),
                                  max_frame=lambda: self.config.max_frame)

    def _install_signals(self) -> None:
        """SIGINT raises only in an interrupted task; SIGTERM shuts down, even if main is stuck."""
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # in case a cell takes the wakeup fd
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        self._wakeup = (rsock, wsock)

        def on_wakeup() -> None:
            try:
                data = rsock.recv(512)
            except OSError:
                return
            if signal.SIGTERM in data:
                self._loop.create_task(self._shutdown("SIGTERM"))

        self._loop.call_soon_threadsafe(self._loop.add_reader, rsock.fileno(), on_wakeup)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.create_task, self._shutdown("SIGTERM"))

    def _reassert_signals(self) -> None:
        if signal.getsignal(signal.SIGINT) != self._on_sigint:
            signal.signal(signal.SIGINT, self._on_sigint)
        if signal.getsignal(signal.SIGTERM) != self._on_sigterm:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        job = self._main_job
        if job is not None and job.interrupted and job.in_user_code:
            raise KeyboardInterrupt

    def _terminate(self, code: int, reason: str) -> None:
        """Exit the process now, from any thread, after stopping our child processes."""
        with self._exit_lock:
            if self._exiting:
                return
            self._exiting = True
        if reason:
            _log(f"jupyter-flame runner {self.env.runner_id}: {reason}; exiting ({code})")
        try:
            kill_children()
        finally:
            os._exit(code)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)) if exc else ""
        _log(f"jupyter-flame runner: {context.get('message')}\n{detail}")

    # --- the I/O thread ------------------------------------------------------------------
    async def _serve(self) -> None:
        self._last_frame = time.monotonic()
        self._io_tasks = [asyncio.create_task(self._sender()),
                          asyncio.create_task(self._watchdog())]
        self._baton.take()  # the main thread takes the channel over once it is ready

    async def _sender(self) -> None:

        while True:
            msg, fut, encoded = await self._outbox.get()
            if msg is _FLUSH:
                if fut is not None:
                    fut.set_result(None)
                continue
            try:
                await self._channel.send(msg, encoded=encoded)
                with self._space:
                    if isinstance(msg, Stream):
                        self._queued_text -= len(msg.text)
                        self._space.notify_all()
            except (ChannelClosedError, OSError) as exc:
                if fut is not None:
                    fut.set_exception(exc)
                if not self._leaving:
                    self._terminate(EXIT_PARENT_LOST, f"lost the parent while sending: {exc}")
            except Exception as exc:  # e.g. a display payload that cannot be pickled
                _log(f"jupyter-flame runner: cannot send {type(msg).__name__}: {exc!r}")
                if fut is not None:
                    fut.set_exception(exc)
            else:
                if fut is not None:
                    fut.set_result(None)
            finally:
                with self._space:
                    self._sent += 1

    async def _read_failed(self, exc: BaseException) -> bool:
        """The I/O thread's reading failed: exit, or (a message that cannot be loaded) go on."""
        if self._fatal_read(exc):
            return False
        _log(f"jupyter-flame runner: dropped a message that cannot be loaded: {exc!r}")
        self._last_frame = time.monotonic()
        return True

    def _fatal_read(self, exc: BaseException) -> bool:
        """Exit for an error that ends reading (from any thread); False for other errors."""
        from jupyter_flame.errors import ChannelAuthError

        if isinstance(exc, ChannelAuthError):
            self._terminate(EXIT_AUTH, f"a frame from the parent failed authentication: {exc}")
            return True
        if isinstance(exc, (ChannelClosedError, OSError, EOFError)):
            if not self._leaving:
                self._terminate(EXIT_PARENT_LOST, f"the connection to the parent closed ({exc})")
            return True
        return False

    def _on_frame(self, msg: object) -> None:
        self._last_frame = time.monotonic()
        self._dispatch(msg)

    def _dispatch(self, msg: object) -> None:
        if isinstance(msg, (Execute, Call)):
            self._submit(msg)
        elif isinstance(msg, Ping):
            self._enqueue(Pong(msg.sent, self._stats.sample()))
        elif isinstance(msg, Interrupt):
            self._interrupt(msg.task)
        elif isinstance(msg, Configure):
            self._configure(msg)
        elif isinstance(msg, IdleReply):
            self._idle_pending = False
            with self._lock:
                idle = self._running == 0 and not self._pending
            if msg.ok and idle:
                self._loop.create_task(self._exit_cleanly("the parent retired this idle runner"))
            else:
                self._last_activity = time.monotonic()
        elif isinstance(msg, Shutdown):
            self._loop.create_task(self._shutdown(msg.reason))
        else:
            _log(f"jupyter-flame runner: ignoring unexpected message {type(msg).__name__}")

    def _configure(self, msg: Configure) -> None:
        self.config = msg
        if self._channel is not None:
            self._channel.set_max_frame(msg.max_frame)
        if not self._configured:
            self._last_activity = time.monotonic()
        self._configured = True
        if msg.cwd and os.path.isdir(msg.cwd):
            try:
                os.chdir(msg.cwd)
            except OSError as exc:
                _log(f"jupyter-flame runner: cannot change to {msg.cwd!r}: {exc}")
        for entry in msg.sys_path:
            if entry and entry not in sys.path:
                sys.path.append(entry)
        with self._lock:  # a larger max_concurrency starts waiting tasks now
            while self._pending and self._running < max(1, msg.max_concurrency):
                self._start_locked(self._pending.popleft())

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            cfg = self.config
            timeout = cfg.parent_timeout if self._configured else _PRE_CONFIGURE_TIMEOUT
            if now - self._last_frame > timeout:
                self._terminate(
                    EXIT_PARENT_LOST,
                    f"no message from the parent for {timeout:g} s (parent_timeout): it is gone",
                )
            if self._baton.holder == PARKED and (self._main_busy or self._running):
                self._baton.take()  # a task runs: read interrupts and heartbeats meanwhile
            if cfg.idle_shutdown_after is None or self._idle_pending or self._stopping:
                continue
            with self._lock:
                busy = self._running > 0 or bool(self._pending)
            if busy:
                self._last_activity = now
            elif now - self._last_activity >= cfg.idle_shutdown_after:
                self._idle_pending = True
                self._enqueue(IdleRequest(now - self._last_activity))

    async def _shutdown(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        with self._lock:
            self._pending.clear()
            jobs = list(self._jobs.values())
        for job in jobs:
            self._interrupt(job.task)
        deadline = time.monotonic() + _SHUTDOWN_GRACE
        while (self._running or self._finishing) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # until the interrupted tasks' Done messages are out
        await self._exit_cleanly(f"shutting down ({reason})")

    async def _exit_cleanly(self, reason: str, code: int = EXIT_OK) -> None:
        """Send what is queued, close the channel, then exit."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._drain(), 1.0)
            self._leaving = True
            self._channel.close()
            await asyncio.wait_for(self._channel.wait_closed(), 1.0)
        except Exception:
            pass
        self._terminate(code, reason)

    async def _drain(self) -> None:
        """Return once everything queued so far has been written to the socket."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._outbox.put_nowait((_FLUSH, fut, None))
        await asyncio.wrap_future(fut)
