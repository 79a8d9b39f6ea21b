"""At most one refresh per interval, whatever the event rate, on the flame loop.

Widgets are driven by events (lifecycle events, heartbeats, the cell's own steps), never by a
polling loop: each event pokes the throttle, which schedules one call of the refresh at most
every ``interval`` seconds (10 model updates a second by default) and none while nothing
happens. ``every`` re-arms it on a timer only while something shown ticks (elapsed time).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from jupyter_flame.pool import loop as _loop

__all__ = ["Throttle"]


class Throttle:
    def __init__(self, refresh: Callable[[], Any], interval: float = 0.1,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.refresh = refresh
        self.interval = interval
        self._loop = loop or _loop.get_loop()
        self._lock = threading.Lock()
        self._armed = False
        self._stopped = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.calls = 0  # refreshes done (for tests and the benchmark)

    def poke(self) -> None:
        """Ask for a refresh soon (any thread)."""
        with self._lock:
            if self._armed or self._stopped:
                return
            self._armed = True
        self._loop.call_soon_threadsafe(self._arm)

    def every(self, seconds: float) -> None:
        """Poke again in ``seconds`` (a ticking display); call from the refresh."""
        if not self._stopped:
            self._loop.call_soon_threadsafe(self._loop.call_later, seconds, self.poke)

    def later(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Call ``fn`` on the flame loop in ``seconds`` unless stopped by then (any thread)."""
        def fire() -> None:
            if not self._stopped:
                fn()

        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, fire)

    def _arm(self) -> None:
        delay = max(0.0, self._last + self.interval - time.monotonic())
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        with self._lock:
            self._armed = False
            if self._stopped:
                return
        self._last = time.monotonic()
        self.calls += 1
        self.refresh()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        timer = self._timer
        if timer is not None:
            self._loop.call_soon_threadsafe(timer.cancel)
