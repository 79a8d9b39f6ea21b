"""Runners leaving the pool: idle retirement, loss, kills, resizing down and shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_flame.errors import FlameError, RunnerLostError
from jupyter_flame.pool import scaling
from jupyter_flame.pool.link import RunnerLink
from jupyter_flame.pool.state import PoolState, RunnerSlot, log

__all__ = ["Retirement"]


class Retirement(PoolState):
    """The retiring part of :class:`~jupyter_flame.pool.core.PoolCore`."""

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

