"""The kernel's end of one runner: its channel, its in-flight tasks and its liveness.

A :class:`RunnerLink` multiplexes tasks over the runner's channel (task ids tag every
message), sends heartbeats, answers the runner's idle requests through the pool's policy, and
turns a lost connection or a dead process into :class:`~jupyter_flame.errors.RunnerLostError`
for every task in flight, within a couple of seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from jupyter_flame.backends.base import RunnerHandle, describe_exit
from jupyter_flame.channel._baton import THREAD, ReadBaton
from jupyter_flame.channel.protocol import (
    Call,
    ClearOutput,
    Configure,
    Display,
    Done,
    Execute,
    IdleReply,
    IdleRequest,
    Interrupt,
    Ping,
    Pong,
    Shutdown,
    Stream,
)
from jupyter_flame.errors import ChannelAuthError, RunnerLostError

log = logging.getLogger("jupyter_flame")

Output = Stream | Display | ClearOutput
OutputCallback = Callable[[Output], None]

__all__ = ["RunnerLink"]


def task_label(msg: Execute | Call) -> str:
    """A short name for a task: a cell's first line of code, or ``call``."""
    if isinstance(msg, Execute):
        for line in msg.source.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "%%")):
                return "cell: " + (line if len(line) <= 48 else line[:47] + "\u2026")
        return "cell"
    return "call"


class RunnerLink:
    """One connected runner, seen from the kernel.

    Parameters
    ----------
    channel:
        The authenticated channel the runner dialled in on.
    handle:
        The backend's handle of the runner (process or pod).
    on_idle_request:
        ``f(link, idle_for) -> bool``: the pool's answer to the runner's idle request; ``True``
        retires the runner.
    on_lost:
        ``f(link, error)``: called once when the runner is gone.
    """

    def __init__(
        self,
        channel: Any,
        handle: RunnerHandle,
        *,
        on_idle_request: Callable[[RunnerLink, float], bool] | None = None,
        on_lost: Callable[[RunnerLink, RunnerLostError], None] | None = None,
        on_stats: Callable[[RunnerLink, dict[str, Any]], None] | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        self.channel = channel
        self.handle = handle
        self.id = handle.id
        self.pool = handle.pool
        self.on_idle_request = on_idle_request
        self.on_lost = on_lost
        self.on_stats = on_stats
        #: the runner's last resource readings (``Pong.stats``): cpu_percent, rss, gpus
        self.stats: dict[str, Any] = {}
        #: what each task in flight is, for the dashboards (``cell: <first line>`` or ``call``)
        self.labels: dict[int, str] = {}
        self.config: Configure | None = None
        self.load = 0
        self.last_used = time.monotonic()
        self.last_rtt: float | None = None
        #: when the last whole frame arrived (half a frame does not count)
        self.last_heard = time.monotonic()
        self.heartbeat_timeout = heartbeat_timeout
        self.cache: dict[str, str] = {}
        self.tasks_done = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Done], OutputCallback | None]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._replies: set[asyncio.Task[Any]] = set()
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[RunnerLostError] = loop.create_future()
        self._closing = False
        # Who reads the channel: the loop, or a thread inside Pool.call (see _baton, _direct)
        self.baton = ReadBaton(channel, loop, self.handle_message, self._read_failed)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, config: Configure) -> None:
        """Send the configuration and start reading, heartbeats and the exit watch."""
        await self.configure(config)
        self.baton.take()
        self._tasks = [
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self._watch_exit()),
        ]

    async def configure(self, config: Configure) -> None:
        self.config = config
        await self.channel.send(config)

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    def new_task_id(self) -> int:
        return next(self._ids)

    async def run(self, msg: Execute | Call, on_output: OutputCallback | None = None,
                  on_sent: Callable[[], None] | None = None) -> Done:
        """Send one task and wait for its :class:`Done`; outputs go to ``on_output``;
        ``on_sent`` is told once the message is on the wire."""
        if self.lost.done():
            raise self.lost.result()
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._pending[msg.task] = (fut, on_output)
        self.labels[msg.task] = task_label(msg)
        self.baton.take()  # the loop reads the reply (once a thread reading lets go)
        try:
            await self.channel.send(msg)
        except (ConnectionError, OSError) as exc:
            self._pending.pop(msg.task, None)
            err = await self.lose(exc)
            raise err from exc
        if on_sent is not None:
            on_sent()
        try:
            # shielded: if the caller gives up (cancel, timeout) the task still runs on the
            # runner, and its entry stays until settle() collects the Done
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._pending.pop(msg.task, None)
                self.labels.pop(msg.task, None)
            self.last_used = time.monotonic()

    async def settle(self, task: int, grace: float) -> bool:
        """Wait up to ``grace`` seconds for the Done of a task its caller gave up on, then
        forget the task. False if the runner did not answer in time."""
        entry = self._pending.get(task)
        try:
            if entry is not None:
                await asyncio.wait_for(asyncio.shield(entry[0]), grace)
            return True
        except asyncio.TimeoutError:
            return False
        except Exception:  # the runner was lost meanwhile: nothing left to wait for
            return True
        finally:
            self._pending.pop(task, None)
            self.labels.pop(task, None)

    async def interrupt(self, task: int) -> None:
        if self.alive:
            try:
                await self.channel.send(Interrupt(task))
            except (ConnectionError, OSError):
                pass

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Ask the runner to exit and close the channel (the backend then terminates it)."""
        self._closing = True
        if self.alive:
            try:
                await asyncio.wait_for(self.channel.send(Shutdown(reason)), 2.0)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
        self._finish(RunnerLostError(f"Runner {self.id} was shut down ({reason}).",
                                     pool=self.pool, runner=self.id))

    def adopt(self, task: int) -> None:
        """Expect the Done of a task a thread sent and gave up on (see :meth:`settle`)."""
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._pending[task] = (fut, None)

    def note_done(self, msg: Done) -> None:
        """Account for a task's Done (whoever read it)."""
        self.last_heard = time.monotonic()
        self.tasks_done += 1
        if msg.cache or msg.ok:
            self.cache = dict(msg.cache)
        self.last_used = time.monotonic()

    # -- internals ---------------------------------------------------------------------------
    def handle_message(self, msg: object) -> None:
        """One message from the runner, in the loop's thread (whoever read it)."""
        self.last_heard = time.monotonic()
        if isinstance(msg, (Stream, Display, ClearOutput)):
            entry = self._pending.get(msg.task)
            if entry is not None and entry[1] is not None:
                try:
                    entry[1](msg)
                except Exception:  # a broken display must not kill the runner link
                    log.exception("output callback failed")
        elif isinstance(msg, Done):
            self.note_done(msg)
            entry = self._pending.get(msg.task)
            if entry is not None and not entry[0].done():
                entry[0].set_result(msg)
        elif isinstance(msg, Pong):
            self.last_rtt = time.monotonic() - msg.sent
            if msg.stats:
                self.stats = msg.stats
                if self.on_stats is not None:
                    self.on_stats(self, msg.stats)
        elif isinstance(msg, IdleRequest):
            ok = False
            if self.on_idle_request is not None and not self._pending:
                ok = self.on_idle_request(self, msg.idle_for)
            reply = asyncio.ensure_future(self._reply(IdleReply(ok)))
            self._replies.add(reply)
            reply.add_done_callback(self._replies.discard)
        else:
            log.warning("runner %s sent an unexpected %r", self.id, type(msg).__name__)

    async def _reply(self, msg: object) -> None:
        try:
            await self.channel.send(msg)
        except Exception as exc:
            await self.lose(exc)

    async def _read_failed(self, exc: BaseException) -> bool:
        await self.lose(exc)  # ChannelAuthError included: _lose says so
        return False

    async def _heartbeat(self) -> None:
        assert self.config is not None
        interval = self.config.heartbeat_interval
        try:
            while self.alive:
                await asyncio.sleep(interval)
                if not self.alive:
                    return
                parked = self.baton.parked_for()
                if parked is not None and parked >= interval:
                    self.baton.take()  # calls stopped: read idle requests and the runner's exit
                    self.last_heard = max(self.last_heard, time.monotonic() - interval)
                silent = time.monotonic() - self.last_heard
                if self.heartbeat_timeout is not None and silent > self.heartbeat_timeout:
                    await self.lose(RunnerLostError(
                        f"Runner {self.id} of pool {self.pool!r} sent nothing for {silent:.3g} s "
                        f"(heartbeat_timeout={self.heartbeat_timeout:g}): it is stopped, hung, "
                        "cut off by the network, or its cell holds the GIL in C code. It is "
                        "stopped and the next task gets a new runner; raise "
                        "Pool(heartbeat_timeout=...) for cells that hold the GIL that long.", pool=self.pool, runner=self.id))
                    return
                await self.channel.send(Ping(time.monotonic()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.lose(exc)

    async def _watch_exit(self) -> None:
        code = await asyncio.shield(self.handle.exited)
        # The process may exit right after its last frames (a single-use runner sends Done,
        # then exits): let the reader take what is still in the socket, up to its EOF, before
        # anything pending is declared lost. A thread reading does the same for its task.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while self.baton.holder == THREAD and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.baton.take()
        reader = self.baton.task
        if reader is not None and not reader.done():
            await asyncio.wait({reader}, timeout=max(0.05, deadline - loop.time()))
        await self.lose(None, code)

    async def lose(self, exc: BaseException | None, code: int | None = None) -> RunnerLostError:
        """Declare the runner lost (once); return the error its tasks fail with."""
        if self.lost.done():
            return self.lost.result()
        if code is None and not self._closing:
            # The connection broke: the process is usually gone too; give its exit a moment so
            # the error can say how it died.
            try:
                code = await asyncio.wait_for(asyncio.shield(self.handle.exited), 1.0)
            except asyncio.TimeoutError:
                code = None
        if self.lost.done():
            return self.lost.result()
        busy = len(self._pending)
        how = describe_exit(code)
        if self.handle.info.get("exit_reason"):  # the backend knows why (out of memory...)
            how = f"{self.handle.info['exit_reason']} (exit code {code})"
        pod = self.handle.info.get("pod")
        where = f" (pod {pod})" if pod else ""
        what = f"Runner {self.id}{where} of pool '{self.pool}' was lost: {how}"
        if isinstance(exc, RunnerLostError):  # the kernel gave up on it (heartbeat_timeout)
            what = str(exc).rstrip(".")
        if busy:
            what += f" while running {busy} task{'s' if busy != 1 else ''}"
        if isinstance(exc, ChannelAuthError):
            what += f" (channel authentication failed: {exc})"
        err = RunnerLostError(what + ".", exit_code=code, pool=self.pool, runner=self.id, pod=pod)
        self._finish(err)
        return err

    def _finish(self, err: RunnerLostError) -> None:
        if self.lost.done():
            return
        self.lost.set_result(err)
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(err)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.baton.close()
        try:
            self.channel.close()
        except Exception:
            pass
        if self.on_lost is not None:
            try:
                self.on_lost(self, err)
            except Exception:
                log.exception("on_lost callback failed")
