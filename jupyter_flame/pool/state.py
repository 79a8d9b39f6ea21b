"""What a pool's core holds, and how its parts call each other.

:class:`PoolState` is the state of :class:`~jupyter_flame.pool.core.PoolCore` (its runners, the
FIFO queue of waiters, counters), shared by the parts it is made of: booting
(:mod:`.booting`), retirement, loss and shutdown (:mod:`.retirement`), and checkout, scaling
and running tasks (:mod:`.core`). The hooks at the end are how one part asks another; the
core, which has all parts, implements them all.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.backends.base import Backend, LifecycleEvent, RunnerHandle, RunnerSpec
from jupyter_flame.channel.protocol import Call, Configure, Execute
from jupyter_flame.errors import RunnerLostError
from jupyter_flame.pool.link import RunnerLink

__all__ = ["MessageFactory", "PoolOptions", "PoolState", "RunnerSlot", "log", "slug"]

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
    heartbeat_timeout: float | None = 30.0
    parent_timeout: float = 10.0
    interrupt_grace: float = 5.0
    encrypt: bool | None = None  # None: the backend's encrypt_channel
    max_frame: int = 16 * 1024**3


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


class PoolState:
    """See :class:`jupyter_flame.pool.pool.Pool` for the meaning of every option."""

    @property
    def encrypts(self) -> bool:
        """Whether this pool's channels encrypt frames (``Pool.encrypt``, else the backend's
        choice)."""
        chosen = self.options.encrypt
        return self.backend.encrypt_channel if chosen is None else chosen

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
        self._start_waiting = 0  # callers inside ensure_started()
        self._ids = itertools.count(1)
        self._unsubscribe: Callable[[], None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        # Guards runner loads and the decisions that read them: Pool.call checks runners out
        # from its own thread (see _direct), everything else runs on the flame loop.
        self.mutex = threading.Lock()
        self._last_taken: RunnerLink | None = None

    def _spawn(self, coro: Any) -> None:
        """Run background work, keeping a reference and logging its failure."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool %s: background work failed", self.name, exc_info=task.exception())

    # -- hooks: implemented by the parts (see the module docstring) -------------------------
    def scale(self) -> None:
        raise NotImplementedError

    def dispatch(self) -> None:
        raise NotImplementedError

    def _configure(self, runner_id: str) -> Configure:
        raise NotImplementedError

    async def _discard(self, slot: RunnerSlot) -> None:
        raise NotImplementedError

    def _idle_request(self, link: RunnerLink, idle_for: float) -> bool:
        raise NotImplementedError

    def _stats(self, link: RunnerLink, stats: dict[str, Any]) -> None:
        """A heartbeat brought the runner's resource use: tell the widgets (phase unchanged)."""
        self.backend.emit(link.handle, "stats", **stats)

    def _lost(self, link: RunnerLink, err: RunnerLostError) -> None:
        raise NotImplementedError


def slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return (out or "pool")[:30]
