"""Drive a real runner process (``python -m jupyter_flame.runner``) from a test's event loop.

The harness plays the parent: it listens on 127.0.0.1 with a fresh key, spawns the runner with
:func:`~jupyter_flame.backends.base.runner_env`, waits for it to connect, sends ``Configure``
and then runs cells and calls, collecting every message per task::

    async with RunnerHarness(configure={"max_concurrency": 2}) as h:
        r = await h.execute("print(x + 1)\\nx * 2", {"x": 20})
        assert r.stdout == "21\\n" and r.value() == 40

Heartbeats are sent every ``heartbeat`` seconds (``None``: never). On exit the runner's whole
process group is killed, so no test leaks processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.backends.base import BootRequest, RunnerSpec, runner_env
from jupyter_flame.channel.channel import Channel, ChannelClosedError
from jupyter_flame.channel.listener import Listener
from jupyter_flame.channel.protocol import (
    Call,
    ClearOutput,
    Configure,
    Display,
    Done,
    Execute,
    Packed,
    Ping,
    Pong,
    Stream,
)
from jupyter_flame.values.shipping import pack, unpack

__all__ = ["Received", "RunnerHarness", "TaskResult"]


@dataclass
class Received:
    msg: Any
    at: float  # time.monotonic() on arrival


@dataclass
class TaskResult:
    """Everything one task produced: its outputs in arrival order, then its ``Done``."""

    task: int
    done: Done
    outputs: list[Received] = field(default_factory=list)
    sent_at: float = 0.0

    def text(self, name: str = "stdout") -> str:
        return "".join(r.msg.text for r in self.outputs
                       if isinstance(r.msg, Stream) and r.msg.name == name)

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    @property
    def displays(self) -> list[Display]:
        return [r.msg for r in self.outputs if isinstance(r.msg, Display)]

    @property
    def clears(self) -> list[ClearOutput]:
        return [r.msg for r in self.outputs if isinstance(r.msg, ClearOutput)]

    def value(self) -> Any:
        assert self.done.ok, self.error_text()
        assert self.done.value is not None
        return unpack(self.done.value)

    def names(self) -> dict[str, Any]:
        return {name: unpack(p) for name, p in self.done.names.items()}

    def error_text(self) -> str:
        err = self.done.error
        if err is None:
            return ""
        return "\n".join(err.traceback) or f"{err.ename}: {err.evalue}"


class RunnerHarness:
    """A parent for one real runner process; see the module docstring."""

    def __init__(
        self,
        *,
        configure: dict[str, Any] | None = None,
        boot_timeout: float = 10.0,
        heartbeat: float | None = 0.5,
        env: dict[str, str] | None = None,
        pool: str = "test",
    ) -> None:
        self.pool = pool
        self.runner_id = f"r-{uuid.uuid4().hex[:8]}"
        self.configure = configure or {}
        self.boot_timeout = boot_timeout
        self.heartbeat = heartbeat
        self.extra_env = env or {}
        self.key = os.urandom(32)
        self.listener: Listener | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.spawned_at = 0.0
        self.connected_at = 0.0
        self.log: list[str] = []  # the runner's own stdout/stderr lines
        self.control: asyncio.Queue[Received] = asyncio.Queue()  # task-less, but Pongs
        self.pongs: list[Received] = []
        self._outputs: dict[int, list[Received]] = defaultdict(list)
        self._done: dict[int, asyncio.Future[Received]] = {}
        self._sent_at: dict[int, float] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> RunnerHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, connect: bool = True) -> RunnerHarness:
        """Listen, spawn the runner, and (unless ``connect=False``) wait for it and configure."""
        self.listener = await Listener.start("127.0.0.1", self.key)
        request = BootRequest(self.pool, self.runner_id, RunnerSpec(), self.listener.address,
                              self.key, boot_timeout=self.boot_timeout)
        env = {**os.environ, **runner_env(request), **self.extra_env}
        expected = self.listener.expect(self.runner_id)
        await self.spawn(env)
        if connect:
            await self.wait_connected(expected)
        return self

    async def spawn(self, env: dict[str, str]) -> None:
        self.spawned_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jupyter_flame.runner", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            self._tasks.append(asyncio.create_task(self._read_log(stream)))

    async def wait_connected(self, expected: asyncio.Future[Channel]) -> None:
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({expected, exited}, timeout=self.boot_timeout + 5,
                                     return_when=asyncio.FIRST_COMPLETED)
        if expected not in done:
            exited.cancel()
            raise AssertionError(f"runner did not connect (exit {self.proc.returncode}):\n"
                                 + "\n".join(self.log))
        exited.cancel()
        self.channel = expected.result()
        self.connected_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._read_messages()))
        if self.heartbeat is not None:
            self._tasks.append(asyncio.create_task(self._ping()))
        await self.send(Configure(pool=self.pool, runner_id=self.runner_id, **self.configure))

    async def close(self) -> None:
        """Kill the runner's process group, stop listening."""
        for task in self._tasks:
            task.cancel()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self.channel is not None:
            self.channel.close()
        if self.listener is not None:
            await self.listener.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    # --- messages ------------------------------------------------------------------------
    async def send(self, msg: object) -> None:
        assert self.channel is not None
        await self.channel.send(msg)

    def next_task(self) -> int:
        return next(self._ids)

    async def submit(self, msg: Execute | Call) -> int:
        self._done[msg.task] = asyncio.get_running_loop().create_future()
        self._sent_at[msg.task] = time.monotonic()
        await self.send(msg)
        return msg.task

    async def result(self, task: int, timeout: float = 30.0) -> TaskResult:
        try:
            rec = await asyncio.wait_for(asyncio.shield(self._done[task]), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no Done for task {task} within {timeout} s; runner log:\n"
                                 + "\n".join(self.log)) from None
        return TaskResult(task, rec.msg, list(self._outputs[task]), self._sent_at[task])

    async def execute(
        self,
        source: str,
        variables: dict[str, Any] | None = None,
        *,
        packed: dict[str, Packed] | None = None,
        cached: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> TaskResult:
        """Run a cell; ``variables`` are packed here, ``packed`` are sent as they are."""
        task = self.next_task()
        shipped = {name: pack(value, name=name) for name, value in (variables or {}).items()}
        shipped.update(packed or {})
        msg = Execute(task, source, shipped, dict(cached or {}), filename=f"<flame-cell-{task}>")
        await self.submit(msg)
        return await self.result(task, timeout)

    async def call(self, fn: Any, *args: Any, timeout: float = 30.0, **kwargs: Any) -> TaskResult:
        task = self.next_task()
        await self.submit(Call(task, pack((fn, args, kwargs))))
        return await self.result(task, timeout)

    async def expect_control(self, kind: type, timeout: float = 10.0) -> Any:
        """The next task-less message, which must be a ``kind``."""
        try:
            rec = await asyncio.wait_for(self.control.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {kind.__name__} within {timeout} s; runner log:\n"
                                 + "\n".join(self.log)) from None
        assert isinstance(rec.msg, kind), rec.msg
        return rec.msg

    async def _read_messages(self) -> None:
        assert self.channel is not None
        while True:
            try:
                msg = await self.channel.recv()
            except (ChannelClosedError, ConnectionError):
                return
            rec = Received(msg, time.monotonic())
            task = getattr(msg, "task", None)
            if isinstance(msg, Pong):
                self.pongs.append(rec)
            elif task is None:
                self.control.put_nowait(rec)
            elif isinstance(msg, Done):
                fut = self._done.setdefault(task, asyncio.get_running_loop().create_future())
                if not fut.done():
                    fut.set_result(rec)
            else:
                self._outputs[task].append(rec)

    async def _ping(self) -> None:
        assert self.heartbeat is not None
        while True:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(ConnectionError, ChannelClosedError):
                await self.send(Ping(time.time()))

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace").rstrip("\n"))
