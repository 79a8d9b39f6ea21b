"""A runner's live state, published for readers outside the kernel (the server extension).

The server never talks to kernels: it reads runner records (local runners) and pod annotations
(Kubernetes runners). A backend therefore publishes what only the kernel knows, whether the
runner is busy or idle and the resource use its heartbeats bring, through
:class:`StatePublisher`. Publication is coalesced: a burst of calls (busy, idle, busy, ...)
costs at most one write per ``interval`` seconds per runner, and the write carries the latest
state, so a warm call pays nothing but a dict update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LiveState", "StatePublisher", "live_state"]

log = logging.getLogger("jupyter_flame.backends")

#: The published state: ``activity`` ("busy"/"idle"), ``cpu_percent``, ``rss`` (bytes),
#: ``gpu_stats`` (NVML readings), ``updated`` (epoch seconds).
LiveState = dict[str, Any]

_ACTIVITY = {"busy": "busy", "idle": "idle", "connected": "idle"}


def live_state(state: LiveState, phase: str, details: dict[str, Any], now: float) -> bool:
    """Fold one lifecycle event into ``state``; whether it changed anything worth publishing."""
    before = dict(state)
    if phase in _ACTIVITY:
        state["activity"] = _ACTIVITY[phase]
    elif phase == "stats":
        for key in ("cpu_percent", "rss"):
            if key in details:
                state[key] = details[key]
        if details.get("gpus"):
            state["gpu_stats"] = details["gpus"]
    else:
        return False
    changed = state != before
    if changed:
        state["updated"] = round(now, 3)
    return changed


class StatePublisher:
    """Collects runners' live state and calls ``flush(runner_id, state)`` at most every
    ``interval`` seconds per runner, on the event loop that saw the event.

    ``flush`` may return an awaitable (an API call); a failing flush is logged, never raised.
    """

    def __init__(self, flush: Callable[[str, LiveState], Any], interval: float = 0.5) -> None:
        self._flush = flush
        self.interval = interval
        self._states: dict[str, LiveState] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def note(self, runner_id: str, phase: str, details: dict[str, Any]) -> None:
        state = self._states.setdefault(runner_id, {})
        if not live_state(state, phase, details, time.time()) or runner_id in self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test driving the backend by hand): nothing to coalesce on
        self._pending[runner_id] = loop.call_later(self.interval, self._write, runner_id)

    def forget(self, runner_id: str) -> None:
        """The runner ended: drop its state and any write still waiting."""
        self._states.pop(runner_id, None)
        pending = self._pending.pop(runner_id, None)
        if pending is not None:
            pending.cancel()

    def _write(self, runner_id: str) -> None:
        self._pending.pop(runner_id, None)
        state = self._states.get(runner_id)
        if state is None:
            return
        try:
            result = self._flush(runner_id, dict(state))
        except Exception:
            log.debug("publishing the state of runner %s failed", runner_id, exc_info=True)
            return
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("publishing a runner's state failed", exc_info=task.exception())
