"""The contract every backend passes (see :mod:`jupyter_flame.backends.base`).

Use it by subclassing :class:`BackendContract` in a test module and providing a ``make_backend``
fixture: a zero-argument callable returning a fresh, unstarted backend (called inside the
event loop of each test)::

    class TestLocalBackendContract(BackendContract):
        @pytest.fixture
        def make_backend(self, tmp_path):
            return lambda: LocalBackend(runtime_dir=tmp_path)

Runners are real: each test boots ``python -m jupyter_flame.runner`` through the backend and
waits for it on a real :class:`~jupyter_flame.channel.listener.Listener`. Override :meth:`runner_gone`
for backends whose runners are not processes of this machine, and :meth:`spec` to add what a
backend needs (an image...).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from jupyter_flame.backends.base import (
    PHASES,
    Backend,
    BootRequest,
    LifecycleEvent,
    RunnerHandle,
    RunnerSpec,
)
from jupyter_flame.channel.channel import Channel
from jupyter_flame.channel.listener import Listener
from jupyter_flame.channel.protocol import EXIT_UNREACHABLE
from jupyter_flame.errors import BootError

from .conftest import pid_alive

T = TypeVar("T")

#: Phases a backend reports itself (the pool reports connected/busy/idle).
BACKEND_PHASES = tuple(p for p in PHASES if p not in ("connected", "busy", "idle"))


def _broken(event: LifecycleEvent) -> None:
    raise RuntimeError(f"a broken widget got {event.phase}")


@dataclass
class Harness:
    """One backend, one listener and the events seen, for one test."""

    backend: Backend
    listener: Listener
    key: bytes
    events: list[LifecycleEvent] = field(default_factory=list)
    count: int = 0

    def request(self, spec: RunnerSpec, boot_timeout: float, pool: str = "contract") -> BootRequest:
        self.count += 1
        return BootRequest(
            pool=pool,
            runner_id=f"r{self.count}",
            spec=spec,
            parent_address=self.listener.address,
            key=self.key,
            boot_timeout=boot_timeout,
            kernel_id="contract-kernel",
        )

    def phases(self, runner_id: str) -> list[str]:
        return [e.phase for e in self.events if e.runner_id == runner_id]


class ContractPlumbing:
    """Helpers (no tests) for backend tests: a harness, boot-and-connect, waiting."""

    #: Seconds a runner may take to dial back (the ``boot_timeout`` given to the backend).
    boot_timeout: float = 20.0
    #: Seconds ``boot()`` may take: it returns once the runner exists, not once it connected.
    boot_returns_within: float = 5.0
    #: Seconds a whole test may take.
    test_timeout: float = 60.0

    def spec(self, **overrides: Any) -> RunnerSpec:
        """The runner shape used by the tests."""
        return RunnerSpec(**overrides)

    def unreachable_request(self, h: Harness, boot_timeout: float) -> BootRequest:
        """A request whose runner cannot reach its parent (default: ``spec.env`` redirects
        ``JUPYTER_FLAME_PARENT`` to 127.0.0.1:1, where nobody listens)."""
        spec = self.spec(env=(("JUPYTER_FLAME_PARENT", "127.0.0.1:1"),))
        return h.request(spec, boot_timeout=boot_timeout)

    def runner_gone(self, handle: RunnerHandle) -> bool:
        """Whether nothing of the runner is left (default: its ``pid`` is not running)."""
        return not pid_alive(handle.info["pid"])

    # --- plumbing --------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(asyncio.wait_for(coro, self.test_timeout))

    @asynccontextmanager
    async def harness(self, make_backend: Callable[[], Backend]) -> AsyncIterator[Harness]:
        backend = make_backend()
        key = os.urandom(32)
        listener = await Listener.start(backend.parent_host(), key)
        h = Harness(backend, listener, key)
        unsubscribe = backend.subscribe(h.events.append)
        try:
            yield h
        finally:
            await backend.close()
            await listener.close()
            unsubscribe()

    async def boot_and_connect(self, h: Harness, **spec: Any) -> tuple[RunnerHandle, Channel]:
        request = h.request(self.spec(**spec), self.boot_timeout)
        expected = h.listener.expect(request.runner_id)
        handle = await h.backend.boot(request)
        waiting: set[asyncio.Future[Any]] = {expected, handle.failed}
        done, _ = await asyncio.wait(
            waiting, timeout=self.boot_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if handle.failed.done():
            pytest.fail(f"runner failed to boot: {handle.failed.result()}")
        assert expected in done, f"runner {handle.id} did not connect in {self.boot_timeout} s"
        h.backend.emit(handle, "connected")  # what the pool does once the channel is up
        return handle, expected.result()

    async def wait_gone(self, handle: RunnerHandle, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not self.runner_gone(handle):
            assert time.monotonic() < deadline, f"runner {handle.id} still exists"
            await asyncio.sleep(0.05)


class BackendContract(ContractPlumbing):
    """Tests every backend must pass; see the module docstring."""

    def test_boot_returns_before_runner_connects(self, make_backend: Callable[[], Backend]) -> None:
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                request = h.request(self.spec(), self.boot_timeout)
                expected = h.listener.expect(request.runner_id)
                start = time.monotonic()
                handle = await h.backend.boot(request)
                assert time.monotonic() - start < self.boot_returns_within
                assert (handle.id, handle.pool) == (request.runner_id, request.pool)
                assert not handle.exited.done() and not handle.failed.done()
                channel = await asyncio.wait_for(expected, self.boot_timeout)
                assert channel.peer_id == request.runner_id
                channel.close()
                await h.backend.terminate(handle, grace=5.0)

        self.run(scenario())

    def test_events_flow_in_order(self, make_backend: Callable[[], Backend]) -> None:
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                handle, channel = await self.boot_and_connect(h)
                late: list[LifecycleEvent] = []
                unsubscribe = h.backend.subscribe(late.append)
                unsubscribe()
                h.backend.subscribe(_broken)  # a broken subscriber breaks nothing
                await h.backend.terminate(handle, grace=5.0)
                channel.close()
                phases = h.phases(handle.id)
                assert phases[0] == "requested" and phases[-1] == "stopped", phases
                assert "starting" in phases and "stopping" in phases, phases
                ours = [PHASES.index(p) for p in phases if p in BACKEND_PHASES]
                assert ours == sorted(ours), phases
                assert all(e.pool == handle.pool for e in h.events)
                assert late == []
                assert handle.phase == "stopped"

        self.run(scenario())

    def test_terminate_resolves_exited_and_is_idempotent(
        self, make_backend: Callable[[], Backend]
    ) -> None:
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                handle, channel = await self.boot_and_connect(h)
                await asyncio.gather(
                    h.backend.terminate(handle, grace=5.0), h.backend.terminate(handle, grace=5.0)
                )
                assert handle.exited.done()
                assert isinstance(handle.exited.result(), int)
                await h.backend.terminate(handle, grace=5.0)  # again: no error
                assert h.phases(handle.id).count("stopping") == 1
                assert h.phases(handle.id).count("stopped") == 1
                assert not handle.failed.done()
                await self.wait_gone(handle)
                channel.close()

        self.run(scenario())

    def test_runner_that_cannot_connect_fails_with_log_tail(
        self, make_backend: Callable[[], Backend]
    ) -> None:
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                request = self.unreachable_request(h, boot_timeout=3.0)
                handle = await h.backend.boot(request)
                error = await asyncio.wait_for(handle.failed, self.boot_timeout)
                assert isinstance(error, BootError)
                assert error.reason == "exited"
                assert f"Runner {handle.id} of pool 'contract'" in str(error)
                assert "before connecting" in str(error)
                assert error.log_tail and "127.0.0.1:1" in error.log_tail, error.log_tail
                code = await asyncio.wait_for(handle.exited, 5.0)
                assert code == EXIT_UNREACHABLE
                assert h.phases(handle.id)[-1] == "failed"
                await h.backend.terminate(handle, grace=1.0)  # on a dead runner: fine
                assert h.phases(handle.id)[-1] == "failed"
                await self.wait_gone(handle)

        self.run(scenario())

    def test_close_leaves_no_runner(self, make_backend: Callable[[], Backend]) -> None:
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                handle, channel = await self.boot_and_connect(h)
                booting = await h.backend.boot(h.request(self.spec(), self.boot_timeout))
                await h.backend.close()
                await h.backend.close()  # idempotent
                for hd in (handle, booting):
                    assert hd.exited.done(), hd
                    await self.wait_gone(hd)
                    assert h.phases(hd.id)[-1] == "stopped", h.phases(hd.id)
                assert not booting.failed.done()  # cancelled by us: not a boot failure
                channel.close()

        self.run(scenario())
