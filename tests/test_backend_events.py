"""``Backend.emit``: every subscriber hears every event; one that raises is logged, not fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest

from jupyter_flame.backends.base import LifecycleEvent, RunnerHandle
from jupyter_flame.backends.local import LocalBackend


def test_a_failing_subscriber_is_logged_once_in_full_and_the_others_still_hear(
        caplog: pytest.LogCaptureFixture) -> None:
    backend = LocalBackend()
    heard: list[LifecycleEvent] = []

    def broken(event: LifecycleEvent) -> None:
        raise RuntimeError("widget bug")

    backend.subscribe(broken)
    backend.subscribe(heard.append)

    async def emit() -> RunnerHandle:  # a handle lives on the loop that boots it
        handle = RunnerHandle("r1", "p")
        backend.emit(handle, "starting")
        backend.emit(handle, "stopped")
        return handle

    with caplog.at_level(logging.DEBUG, logger="jupyter_flame.backends.base"):
        handle = asyncio.run(emit())
    assert [e.phase for e in heard] == ["starting", "stopped"]
    assert handle.phase == "stopped"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "lifecycle subscriber" in errors[0].getMessage()
    assert "starting of runner r1" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "widget bug" in str(errors[0].exc_info[1])
    again = [r for r in caplog.records if r.levelno == logging.DEBUG and "(again)" in r.getMessage()]
    assert len(again) == 1


def test_unsubscribe_stops_the_events() -> None:
    backend = LocalBackend()
    heard: list[str] = []
    stop = backend.subscribe(lambda e: heard.append(e.phase))

    async def emit() -> None:
        backend.emit(RunnerHandle("r1", "p"), "starting")
        stop()
        stop()  # idempotent
        backend.emit(RunnerHandle("r1", "p"), "stopped")

    asyncio.run(emit())
    assert heard == ["starting"]
