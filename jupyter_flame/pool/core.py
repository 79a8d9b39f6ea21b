"""The async heart of a pool: runners, the FIFO queue of waiters, boots, retirement.

Runs only on the flame loop (:mod:`jupyter_flame.pool.loop`). The public, thread-safe facade is
:class:`jupyter_flame.pool.pool.Pool`; the decisions are the pure functions of
:mod:`jupyter_flame.pool.scaling`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.backends.base import (
    Backend,
    BootRequest,
    LifecycleEvent,
    RunnerHandle,
    RunnerSpec,
)
from jupyter_flame.channel.protocol import Call, Configure, Done, Execute
from jupyter_flame.errors import BootError, FlameError, FlameTimeoutError, RunnerLostError
from jupyter_flame.pool import scaling
from jupyter_flame.pool.link import OutputCallback, RunnerLink

log = logging.getLogger("jupyter_flame")

MessageFactory = Callable[[RunnerLink, int], Execute | Call]


@dataclass
class PoolOptions:
    min: int = 0
    max: int = 1
    max_concurrency: int = 1
    idle_shutdown_after: float | None = 300.0
    boot_timeout: float = 60.0
    timeout: float | None = None
    single_use: bool = False
    heartbeat_interval: float = 2.0
    parent_timeout: float = 10.0
    interrupt_grace: float = 5.0


@dataclass
class RunnerSlot:
    """A runner as the pool tracks it, from boot request to exit."""

    id: str
    state: str = "booting"  # booting | live | retiring | gone
    handle: RunnerHandle | None = None
    link: RunnerLink | None = None
    requested_at: float = field(default_factory=time.time)
    last_event: LifecycleEvent | None = None
    boot_task: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        return self.link.load if self.link is not None else 0


class PoolCore:
    """See :class:`jupyter_flame.pool.pool.Pool` for the meaning of every option."""

    def __init__(self, name: str, backend: Backend, spec: RunnerSpec, options: PoolOptions,
                 kernel_id: str) -> None:
        self.name = name
        self.backend = backend
        self.spec = spec
        self.options = options
        self.kernel_id = kernel_id
        self.key = secrets.token_bytes(32)
        self.slots: dict[str, RunnerSlot] = {}
        self.waiters: collections.deque[asyncio.Future[RunnerLink]] = collections.deque()
        self.listener: Any = None
        self.closed = False
        self.last_error: BaseException | None = None
        self.min_suspended = False
        self.boots = 0
        self.boot_failures = 0
        self.tasks_done = 0
        self.direct_calls = 0  # calls whose thread sent them and read the reply (see _direct)
        self.started = False
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._unsubscribe: Callable[[], None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        # Guards runner loads and the decisions that read them: Pool.call checks runners out
        # from its own thread (see _direct), everything else runs on the flame loop.
        self.mutex = threading.Lock()
        self._last_taken: RunnerLink | None = None

    # -- start -------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        if self.started:
            return
        async with self._start_lock:
            if self.started:
                return
            if self.closed:
                raise FlameError(f"Pool '{self.name}' is shut down; create a new pool.",
                                 pool=self.name)
            from jupyter_flame.channel.channel import Listener

            # parent_host() may ask the Kubernetes API (no POD_IP): not on the loop
            host = await asyncio.to_thread(self.backend.parent_host)
            self.listener = await Listener.start(host, self.key)
            self._unsubscribe = self.backend.subscribe(self._on_event)
            try:
                await self.backend.sweep(self.kernel_id, self.name)
            except Exception:
                log.exception("sweeping leftovers of pool %s failed", self.name)
            self.started = True
            self.scale()

    def _on_event(self, event: LifecycleEvent) -> None:
        slot = self.slots.get(event.runner_id)
        if slot is None or event.pool != self.name:
            return
        slot.last_event = event

    # -- checkout / checkin ------------------------------------------------------------------
    def _loads(self) -> list[scaling.RunnerLoad]:
        return [
            scaling.RunnerLoad(s.id, s.load, accepting=s.state == "live")
            for s in list(self.slots.values())  # a copy: Pool.call reads it from its thread
            if s.link is not None and s.state == "live" and s.link.alive
        ]

    async def checkout(self, timeout: float | None) -> RunnerLink:
        await self.ensure_started()
        if self.closed:
            raise FlameError(f"Pool '{self.name}' is shut down.", pool=self.name)
        if not self.waiters:
            link = self._take()
            if link is not None:
                return link
        fut: asyncio.Future[RunnerLink] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.scale()
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()  # it arrived at the last moment
            raise FlameTimeoutError(
                f"No runner of pool '{self.name}' became available within {timeout:g} s "
                f"({self.describe_capacity()}). Raise --timeout, or raise the pool's max "
                f"(%flame pool {self.name} --max N).",
                pool=self.name,
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.checkin(fut.result())
            raise
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self.waiters:
                self.waiters.remove(fut)

    def _take(self) -> RunnerLink | None:
        link = self.take_now()
        if link is not None:
            self.backend.emit(link.handle, "busy")
        return link

    def take_now(self) -> RunnerLink | None:
        """The least-loaded runner with a free slot, its load counted, or ``None``; from any
        thread (the caller emits ``busy`` on the loop)."""
        with self.mutex:
            last = self._last_taken
            if last is not None and last.load == 0 and last.alive:  # none is less loaded
                slot = self.slots.get(last.id)
                if slot is not None and slot.state == "live" and slot.link is last:
                    last.load = 1
                    return last
            choice = scaling.choose_runner(self._loads(), self.options.max_concurrency)
            slot = None if choice is None else self.slots.get(choice)
            if slot is None or slot.link is None:
                return None
            slot.link.load += 1
            self._last_taken = slot.link
            return slot.link

    def untake(self, link: RunnerLink) -> None:
        """Undo :meth:`take_now` (nothing was sent)."""
        with self.mutex:
            link.load = max(0, link.load - 1)

    def count_checkin(self, link: RunnerLink) -> None:
        """The load part of :meth:`checkin`, from any thread."""
        with self.mutex:
            link.load = max(0, link.load - 1)
            self.tasks_done += 1

    def direct_checkin(self, link: RunnerLink, done: Done) -> bool:
        """Check in after a call sent from another thread (see ``_direct``); ``True`` when
        the loop must follow up with :meth:`after_checkin` (waiters, retirement)."""
        with self.mutex:
            link.load = max(0, link.load - 1)
            self.tasks_done += 1
            self.direct_calls += 1
            link.note_done(done)
            slot = self.slots.get(link.id)
            return (bool(self.waiters) or self.options.single_use or slot is None
                    or slot.state != "live" or not link.alive or self._over_max())

    def checkin(self, link: RunnerLink) -> None:
        self.count_checkin(link)
        self.after_checkin(link)

    def after_checkin(self, link: RunnerLink) -> None:
        """The decisions of :meth:`checkin` once the load is counted (on the loop)."""
        slot = self.slots.get(link.id)
        if slot is None or not link.alive:
            self.dispatch()
            return
        with self.mutex:
            retire = link.load == 0 and (self.options.single_use or slot.state == "retiring"
                                         or self._over_max())
            if retire:
                slot.state = "retiring"
        if retire:
            self.retire(slot, "single use" if self.options.single_use else "retired")
        elif link.load == 0 and slot.state == "live":
            self.backend.emit(link.handle, "idle")
        self.dispatch()

    def _over_max(self) -> bool:
        live = [s for s in list(self.slots.values()) if s.state in ("live", "booting")]
        return len(live) > self.options.max

    def dispatch(self) -> None:
        """Hand free runner slots to waiters, oldest first; then boot for what is left."""
        while self.waiters:
            fut = self.waiters[0]
            if fut.done():
                self.waiters.popleft()
                continue
            link = self._take()
            if link is None:
                break
            self.waiters.popleft()
            fut.set_result(link)
        self.scale()

    # -- scaling -----------------------------------------------------------------------------
    def scale(self) -> None:
        if self.closed or not self.started:
            return
        waiting = sum(1 for f in self.waiters if not f.done())
        live = [s for s in self.slots.values() if s.state == "live"]
        booting = [s for s in self.slots.values() if s.state == "booting"]
        free = sum(max(0, self.options.max_concurrency - s.load) for s in live)
        n = scaling.runners_to_boot(
            waiters=waiting,
            live=len(live),
            booting=len(booting),
            free_slots=free,
            min=0 if self.min_suspended and not waiting else self.options.min,
            max=self.options.max,
            max_concurrency=self.options.max_concurrency,
        )
        for _ in range(n):
            self._start_boot()

    def _start_boot(self) -> None:
        runner_id = f"{_slug(self.name)}-{os.getpid()}-{next(self._ids)}"
        slot = RunnerSlot(runner_id)
        self.slots[runner_id] = slot
        self.boots += 1
        slot.boot_task = asyncio.ensure_future(self._boot(slot))

    async def _boot(self, slot: RunnerSlot) -> None:
        request = BootRequest(
            pool=self.name,
            runner_id=slot.id,
            spec=self.spec,
            parent_address=self.listener.address,
            key=self.key,
            boot_timeout=self.options.boot_timeout,
            kernel_id=self.kernel_id,
        )
        expect = self.listener.expect(slot.id)
        started = time.monotonic()
        try:
            handle = await self.backend.boot(request)
            slot.handle = handle
            remaining = self.options.boot_timeout - (time.monotonic() - started)
            failed = asyncio.ensure_future(asyncio.shield(handle.failed))
            exited = asyncio.ensure_future(asyncio.shield(handle.exited))
            try:
                done, _ = await asyncio.wait(
                    {expect, failed, exited}, timeout=max(0.0, remaining),
                    return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                exited.cancel()
            if expect in done and not expect.cancelled() and expect.exception() is None:
                channel = expect.result()
            elif handle.failed.done():
                raise handle.failed.result()
            elif handle.exited.done():
                code = handle.exited.result()
                raise BootError(
                    f"Runner {slot.id} of pool '{self.name}' exited with code {code} before "
                    "connecting.", reason="exited", pool=self.name, runner=slot.id,
                    log_tail=handle.info.get("log_tail"))
            else:
                raise BootError(self._timeout_message(slot), reason="BootTimeout",
                                pool=self.name, runner=slot.id,
                                log_tail=handle.info.get("log_tail"))
        except asyncio.CancelledError:
            self.listener.forget(slot.id)
            await self._discard(slot)
            raise
        except Exception as exc:
            self.listener.forget(slot.id)
            err = exc if isinstance(exc, FlameError) else BootError(
                f"Runner {slot.id} of pool '{self.name}' could not be started: {exc}",
                reason=type(exc).__name__, pool=self.name, runner=slot.id)
            await self._discard(slot)
            self._boot_failed(err)
            return
        if self.closed or slot.state != "booting":
            channel.close()
            await self._discard(slot)
            return
        link = RunnerLink(channel, handle, on_idle_request=self._idle_request,
                          on_lost=self._lost)
        try:
            await link.start(self._configure(slot.id))
        except Exception as exc:
            channel.close()
            await self._discard(slot)
            self._boot_failed(BootError(f"Runner {slot.id} dropped its connection during "
                                        f"setup: {exc}", reason="setup", pool=self.name,
                                        runner=slot.id))
            return
        slot.link = link
        slot.state = "live"
        self.min_suspended = False
        self.last_error = None
        handle.info["boot_seconds"] = round(time.monotonic() - started, 3)
        self.backend.emit(handle, "connected", boot_seconds=handle.info["boot_seconds"])
        self.backend.emit(handle, "idle")
        self.dispatch()

    def _timeout_message(self, slot: RunnerSlot) -> str:
        msg = (f"Runner {slot.id} of pool '{self.name}' did not connect within "
               f"{self.options.boot_timeout:g} s (boot_timeout)")
        ev = slot.last_event
        if ev is not None:
            msg += f"; last state: {ev.phase}"
            if ev.reason:
                msg += f" ({ev.reason})"
            if ev.message:
                msg += f": {ev.message}"
        return msg + ". Raise boot_timeout, or check the runner's placement and resources."

    def _configure(self, runner_id: str) -> Configure:
        return Configure(
            pool=self.name,
            runner_id=runner_id,
            max_concurrency=self.options.max_concurrency,
            idle_shutdown_after=self.options.idle_shutdown_after,
            heartbeat_interval=self.options.heartbeat_interval,
            parent_timeout=self.options.parent_timeout,
            single_use=self.options.single_use,
            cwd=self.backend.runner_cwd(),
        )

    def _boot_failed(self, err: BaseException) -> None:
        self.boot_failures += 1
        self.last_error = err
        self.min_suspended = True
        others = [s for s in self.slots.values() if s.state in ("live", "booting")]
        if not others:
            # Nobody else can serve the queue: tell every waiter why, rather than hang.
            while self.waiters:
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_exception(err)
        else:
            self.scale()

    async def _discard(self, slot: RunnerSlot) -> None:
        slot.state = "gone"
        self.slots.pop(slot.id, None)
        if slot.handle is not None:
            try:
                await self.backend.terminate(slot.handle, grace=1.0)
            except Exception:
                log.exception("terminating runner %s failed", slot.id)

    # -- retirement and loss -----------------------------------------------------------------
    def _idle_request(self, link: RunnerLink, idle_for: float) -> bool:
        slot = self.slots.get(link.id)
        if slot is None or slot.state != "live" or self.waiters:
            return False
        live = sum(1 for s in self.slots.values() if s.state == "live")
        with self.mutex:  # not while Pool.call checks it out from another thread
            if not scaling.may_retire(live=live, min=self.options.min, load=link.load):
                return False
            slot.state = "retiring"
        self.backend.emit(link.handle, "stopping", reason="Idle",
                          message=f"idle for {idle_for:.0f} s")
        asyncio.get_running_loop().call_later(
            max(2.0, self.options.heartbeat_interval * 2),
            lambda: self._spawn(self._reap(slot)))
        return True

    def _spawn(self, coro: Any) -> None:
        """Run background work, keeping a reference and logging its failure."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool %s: background work failed", self.name, exc_info=task.exception())

    async def _reap(self, slot: RunnerSlot) -> None:
        if slot.handle is not None and not slot.handle.exited.done():
            await self.backend.terminate(slot.handle, grace=2.0)

    def retire(self, slot: RunnerSlot, reason: str) -> None:
        slot.state = "retiring"
        link = slot.link

        async def go() -> None:
            if link is not None:
                await link.shutdown(reason)
            await self._discard(slot)
            self.scale()

        self._spawn(go())

    def _lost(self, link: RunnerLink, err: RunnerLostError) -> None:
        slot = self.slots.pop(link.id, None)
        if slot is None:
            return
        expected = slot.state == "retiring" or self.closed
        slot.state = "gone"
        if not expected:  # retire, shutdown, kill and idle retirement terminate on their own
            self.last_error = err
            if slot.handle is not None:
                self._spawn(self._reap(slot))
        self.dispatch()

    async def kill(self, link: RunnerLink) -> None:
        """Kill a runner now (an interrupt it ignored); the pool refills to ``min``."""
        slot = self.slots.get(link.id)
        if slot is not None:
            slot.state = "retiring"
        await self.backend.terminate(link.handle, grace=0.5)

    # -- running tasks -----------------------------------------------------------------------
    async def run(self, make_msg: MessageFactory, on_output: OutputCallback | None,
                  timeout: float | None, on_checkout: Callable[[RunnerLink, int], None] | None = None,
                  ) -> tuple[RunnerLink, Done]:
        """Check out a runner, run one task on it (with one retry after a cache miss).

        A task its caller gives up on (cancelled, or past ``timeout``) is interrupted on the
        runner, and the runner goes back to the pool only once it has answered, or is killed
        after ``interrupt_grace`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        link = await self.checkout(timeout)
        abandoned = False
        try:
            for attempt in range(2):
                task = link.new_task_id()
                msg = make_msg(link, task)
                if on_checkout is not None:
                    on_checkout(link, task)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    done = await asyncio.wait_for(link.run(msg, on_output), remaining)
                except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
                    abandoned = True
                    self.give_up(link, task)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    raise self.task_timeout(link, timeout) from None
                if (not done.ok and done.error is not None
                        and done.error.ename == "FlameCacheMiss" and attempt == 0):
                    link.cache = {}
                    continue
                return link, done
            raise FlameError("The runner lost its cached variables twice in a row.",
                             pool=self.name, runner=link.id)
        finally:
            if not abandoned:
                self.checkin(link)

    def give_up(self, link: RunnerLink, task: int) -> None:
        """The caller gave up on ``task`` (on the loop): interrupt it; the runner comes back
        once it answers, or is killed after ``interrupt_grace``."""
        self._spawn(self._abandon(link, task))

    def task_timeout(self, link: RunnerLink, timeout: float | None) -> FlameTimeoutError:
        return FlameTimeoutError(
            f"The task on runner {link.id} did not finish within {timeout:g} s "
            "(timeout); it was interrupted. Raise --timeout.", pool=self.name, runner=link.id)

    async def _abandon(self, link: RunnerLink, task: int) -> None:
        await link.interrupt(task)
        if not await link.settle(task, self.options.interrupt_grace):
            await self.kill(link)
        self.checkin(link)

    # -- resize / shutdown -------------------------------------------------------------------
    async def resize(self, **changes: Any) -> None:
        reconfigure = False
        for key, value in changes.items():  # Pool.resize passes only the options it changes
            if getattr(self.options, key) != value:
                setattr(self.options, key, value)
                reconfigure = reconfigure or key in (
                    "max_concurrency", "idle_shutdown_after", "single_use")
        if reconfigure:
            for slot in list(self.slots.values()):
                if slot.link is not None and slot.link.alive:
                    await slot.link.configure(self._configure(slot.id))
        # shrink: retire idle runners above max
        live = [s for s in self.slots.values() if s.state == "live"]
        excess = len(live) - self.options.max
        for slot in sorted(live, key=lambda s: s.load):
            if excess <= 0:
                break
            with self.mutex:
                idle = slot.load == 0
                if idle:
                    slot.state = "retiring"
            if idle:
                self.retire(slot, "pool resized")
                excess -= 1
        self.min_suspended = False
        self.dispatch()

    async def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        err = FlameError(f"Pool '{self.name}' was shut down.", pool=self.name)
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(err)
        slots = list(self.slots.values())
        for slot in slots:
            if slot.boot_task is not None and not slot.boot_task.done():
                slot.boot_task.cancel()

        async def stop(slot: RunnerSlot) -> None:
            slot.state = "retiring"
            if slot.link is not None:
                await slot.link.shutdown("pool shut down")
            if slot.handle is not None:
                await self.backend.terminate(slot.handle, grace=2.0)
            self.slots.pop(slot.id, None)

        await asyncio.gather(*(stop(s) for s in slots), return_exceptions=True)
        if self.listener is not None:
            await self.listener.close()
        try:
            await self.backend.release_pool(self.name)
        except Exception:
            log.exception("releasing pool %s failed", self.name)
        if self._unsubscribe is not None:
            self._unsubscribe()

    def describe_capacity(self) -> str:
        live = [s for s in self.slots.values() if s.state == "live"]
        booting = sum(1 for s in self.slots.values() if s.state == "booting")
        busy = sum(s.load for s in live)
        return (f"{len(live)} runner(s) live with {busy} of "
                f"{len(live) * self.options.max_concurrency} slots busy, {booting} booting, "
                f"max={self.options.max}, max_concurrency={self.options.max_concurrency}")


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return (out or "pool")[:30]
