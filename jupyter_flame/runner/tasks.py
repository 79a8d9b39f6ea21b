"""How a runner schedules its tasks: the main thread takes the first (so that SIGINT reaches
it), worker threads the others up to ``max_concurrency``, the rest queue; while the main thread
has no task it reads the channel itself (see :mod:`jupyter_flame.channel._baton`).

:class:`TaskScheduling` is the part of :class:`~jupyter_flame.runner._lifecycle.Runner` that
does this; the attributes and hooks it uses are declared below and set up by ``Runner``.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import threading
import time
from collections import deque
from typing import Any, NoReturn

from jupyter_flame.channel.protocol import Call, Configure, Done, ErrorInfo, Execute
from jupyter_flame.errors import ChannelClosedError
from jupyter_flame.runner.env import log as _log
from jupyter_flame.runner.jobs import Job
from jupyter_flame.runner.outbox import Outbox

__all__ = ["TaskQueued", "TaskScheduling"]


class TaskQueued(Exception):
    """The main thread stops reading the channel: a task is queued for it."""


class TaskScheduling(Outbox):
    """Starting, queueing, interrupting and finishing tasks (part of ``Runner``)."""

    # set up by Runner.__init__
    config: Configure
    _baton: Any
    _router: Any
    _executor: Any
    _lock: threading.Lock
    _jobs: dict[int, Job]
    _pending: deque[Job]
    _running: int
    _finishing: int
    _main_busy: bool
    _main_jobs: queue.SimpleQueue[Job]
    _main_wake: tuple[socket.socket, socket.socket]
    _main_ident: int
    _ready: threading.Event
    _stopping: bool
    _last_frame: float
    _last_activity: float

    # -- hooks: implemented by Runner --------------------------------------------------------
    def _fatal_read(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _dispatch(self, msg: object) -> None:
        raise NotImplementedError

    async def _exit_cleanly(self, reason: str, code: int = 0) -> None:
        raise NotImplementedError

    # --- tasks ---------------------------------------------------------------------------
    def _submit(self, msg: Execute | Call) -> None:
        job = Job(msg)
        with self._lock:
            self._jobs[msg.task] = job
            if self._stopping:
                return
            if self._running >= max(1, self.config.max_concurrency):
                self._pending.append(job)
            else:
                self._start_locked(job)

    def _start_locked(self, job: Job) -> None:
        self._running += 1
        if not self._main_busy:
            self._main_busy = True
            job.on_main = True
            self._main_jobs.put(job)
            if threading.get_ident() != self._main_ident:
                try:
                    self._main_wake[1].send(b"\0")
                except OSError:  # full: the main thread has plenty of wake-ups pending
                    pass
        else:
            name = f"flame-task-{job.task}"
            threading.Thread(target=self._run_job, args=(job,), name=name, daemon=True).start()

    # --- the main thread reads while it waits for a task ----------------------------------
    def _next_main_job(self) -> Job:
        """The main thread's next task. While there is none, the main thread reads the
        channel itself, so that a task arriving wakes this thread alone (see ``_baton``)."""
        while True:
            try:
                return self._main_jobs.get_nowait()
            except queue.Empty:
                pass
            try:
                if not self._baton.acquire(self._main_wake_check):
                    raise RuntimeError("the runner's channel is read by another thread")
            except TaskQueued:
                continue
            except ChannelClosedError:
                self._idle_forever()
            try:
                self._read_until_task()
            finally:
                self._baton.release()

    def _read_until_task(self) -> None:
        channel = self._channel
        reads = None
        while self._main_jobs.empty():
            try:
                if reads is None:  # the channel may close under us (single use, shutdown)
                    reads = self._baton.reads(self._main_wake_check,
                                              (self._main_wake[0].fileno(),))
                msg = channel.recv_blocking(reads)
            except TaskQueued:
                return
            except Exception as exc:
                if not self._fatal_read(exc):
                    _log(f"jupyter-flame runner: dropped a message that cannot be loaded: "
                         f"{exc!r}")
                    continue
                self._idle_forever()  # the I/O thread is ending the process
            self._last_frame = time.monotonic()
            if isinstance(msg, (Execute, Call, Configure)):
                self._dispatch(msg)  # now, in order: a task may follow at once
            else:
                self._baton.hand_to_loop(msg)

    def _main_wake_check(self) -> None:
        try:
            self._main_wake[0].recv(4096)
        except OSError:
            pass
        if not self._main_jobs.empty() and not self._channel.mid_frame:
            raise TaskQueued

    def _idle_forever(self) -> NoReturn:
        """Wait for the I/O thread to end the process (the channel is gone)."""
        while True:
            time.sleep(3600)

    def _interrupt(self, task: int) -> None:
        job = self._jobs.get(task)
        if job is None or not job.request_interrupt():
            return  # unknown, finished, or not in user code yet (it raises on entering it)
        if job.on_main:
            signal.pthread_kill(self._main_ident, signal.SIGINT)
        else:
            job.raise_in_thread()

    def _run_job(self, job: Job) -> None:
        self._ready.wait()
        from jupyter_flame.runner._execution import (
            error_info,  # loaded by _prepare: these are lookups
        )
        from jupyter_flame.runner._outputs import current_task

        # Single use is decided by the configuration the task started under: a Configure that
        # arrives while this task finishes applies to the next task, not to this one.
        single_use = self.config.single_use
        job.thread_id = threading.get_ident()
        self._router.task_started(job.task)
        token = current_task.set(job.task)
        try:
            if isinstance(job.msg, Execute):
                done = self._executor.execute(job.msg, job)
            else:
                done = self._executor.call(job.msg, job)
        except BaseException as exc:  # a bug here, or an interrupt that landed late
            done = Done(job.task, ok=False, error=error_info(exc))
        finally:
            current_task.reset(token)
        job.release()  # its values (shared-memory segments) go back before the result does
        self._router.task_finished(job.task)
        with self._lock:  # before Done goes out: the parent may send the next task at once
            self._jobs.pop(job.task, None)
            self._running -= 1
            self._finishing += 1
            if job.on_main:
                self._main_busy = False
            self._last_activity = time.monotonic()
            if self._pending and not self._stopping and not single_use:
                self._start_locked(self._pending.popleft())
        try:
            try:
                self._post_wait(done)
            except (ChannelClosedError, OSError):
                raise
            except Exception as exc:  # e.g. a result that cannot be pickled: say so instead
                error = ErrorInfo(type(exc).__name__, f"cannot send the task's result: {exc}", [])
                self._post_wait(Done(job.task, ok=False, error=error, elapsed=done.elapsed))
        except (ChannelClosedError, OSError):
            # The channel is gone (Shutdown, idle retirement, lost parent): nobody to tell. The
            # I/O thread is exiting the process (or has); do not race it with an error here.
            return
        finally:
            with self._lock:
                self._finishing -= 1
        if single_use:
            reason = "single-use runner finished its task"
            asyncio.run_coroutine_threadsafe(self._exit_cleanly(reason), self._loop)
