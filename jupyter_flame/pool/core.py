"""The async heart of a pool: checkout, the FIFO queue of waiters, scaling, running tasks.

Runs only on the flame loop (:mod:`jupyter_flame.pool.loop`). The public, thread-safe facade is
:class:`jupyter_flame.pool.pool.Pool`; the decisions are the pure functions of
:mod:`jupyter_flame.pool.scaling`. Booting is in :mod:`.booting`, retirement, loss and shutdown in
:mod:`.retirement`, the state they share in :mod:`.state`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from jupyter_flame.channel.protocol import Done
from jupyter_flame.errors import FlameError, FlameTimeoutError
from jupyter_flame.pool import scaling
from jupyter_flame.pool.booting import Booting
from jupyter_flame.pool.link import OutputCallback, RunnerLink
from jupyter_flame.pool.retirement import Retirement
from jupyter_flame.pool.state import MessageFactory, PoolOptions, RunnerSlot

__all__ = ["MessageFactory", "PoolCore", "PoolOptions", "RunnerSlot"]


class PoolCore(Booting, Retirement):
    """One pool on the flame loop; see :class:`jupyter_flame.pool.pool.Pool` for the options."""

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

    # -- running tasks -----------------------------------------------------------------------
    async def run(self, make_msg: MessageFactory, on_output: OutputCallback | None,
                  timeout: float | None, on_checkout: Callable[[RunnerLink, int], None] | None = None,
                  on_sent: Callable[[], None] | None = None) -> tuple[RunnerLink, Done]:
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
                    done = await asyncio.wait_for(link.run(msg, on_output, on_sent), remaining)
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

    def describe_capacity(self) -> str:
        live = [s for s in self.slots.values() if s.state == "live"]
        booting = sum(1 for s in self.slots.values() if s.state == "booting")
        busy = sum(s.load for s in live)
        text = (f"{len(live)} runner(s) live with {busy} of "
                f"{len(live) * self.options.max_concurrency} slots busy, {booting} booting, "
                f"max={self.options.max}, max_concurrency={self.options.max_concurrency}")
        for slot in self.slots.values():  # why a booting runner is not up yet, in its words
            ev = slot.last_event
            if slot.state == "booting" and ev is not None and (ev.reason or ev.message):
                text += f"; runner {slot.id} {ev.phase}"
                text += f" ({ev.reason})" if ev.reason else ""
                text += f": {ev.message}" if ev.message else ""
        return text
