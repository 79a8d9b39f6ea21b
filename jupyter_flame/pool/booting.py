"""Booting runners: ask the backend, wait (bounded by ``boot_timeout``) for the runner to dial
the pool's listener, configure it; a failed boot goes to the waiters when nobody else can
serve them."""

from __future__ import annotations

import asyncio
import os
import time

from jupyter_flame.backends.base import BootRequest, LifecycleEvent
from jupyter_flame.channel.protocol import Configure
from jupyter_flame.errors import BootError, FlameError
from jupyter_flame.pool.link import RunnerLink
from jupyter_flame.pool.state import PoolState, RunnerSlot, log, slug

__all__ = ["Booting"]


class Booting(PoolState):
    """The booting part of :class:`~jupyter_flame.pool.core.PoolCore`."""

    # -- start -------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        # Callers that arrive while others still wait for the start queue behind them (the
        # lock is FIFO), so checkouts reach the queue in arrival order (FIFO service).
        if self.started and not self._start_waiting:
            return
        self._start_waiting += 1
        try:
            await self._start_once()
        finally:
            self._start_waiting -= 1

    async def _start_once(self) -> None:
        async with self._start_lock:
            if self.started:
                return
            if self.closed:
                raise FlameError(f"Pool '{self.name}' is shut down; create a new pool.",
                                 pool=self.name)
            from jupyter_flame.channel.listener import UNIX, Listener

            # parent_host() may ask the Kubernetes API (no POD_IP): not on the loop
            host = (UNIX if self.backend.same_host
                    else await asyncio.to_thread(self.backend.parent_host))
            self.listener = await Listener.start(host, self.key, encrypt=self.encrypts,
                                                 max_frame=self.options.max_frame)
            self._unsubscribe = self.backend.subscribe(self._on_event)
            try:
                await self.backend.sweep(self.kernel_id, self.name)
            except FlameError as exc:  # the boot that follows reports it to the user
                log.debug("sweeping leftovers of pool %s failed: %s", self.name, exc)
            except Exception:
                log.exception("sweeping leftovers of pool %s failed", self.name)
            self.started = True
            self.scale()

    def _on_event(self, event: LifecycleEvent) -> None:
        slot = self.slots.get(event.runner_id)
        if slot is None or event.pool != self.name or event.phase in ("stats", "busy", "idle"):
            return  # heartbeat readings and load changes are not news about the runner's life
        slot.last_event = event

    def _start_boot(self) -> None:
        runner_id = f"{slug(self.name)}-{os.getpid()}-{next(self._ids)}"
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
                          on_lost=self._lost, on_stats=self._stats,
                          heartbeat_timeout=self.options.heartbeat_timeout)
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
            max_frame=self.options.max_frame,
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

