"""Connections that never authenticate cost almost nothing: the listener handshakes at most
``MAX_HANDSHAKES`` at once (the rest wait in the OS's backlog), gives each only a small read
buffer until it has authenticated, and a real runner still gets in while it is flooded.
Memory is measured with tracemalloc (Python allocations: exact, not a noisy RSS)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tracemalloc

import pytest

from jupyter_flame.channel.dial import connect
from jupyter_flame.channel.listener import MAX_HANDSHAKES, Listener

HOST = "127.0.0.1"
KEY = os.urandom(32)


async def _open(address: tuple[str, int], n: int, wait: float = 2.0) -> list[socket.socket]:
    """``n`` connections dialled at once; those the OS has not completed within ``wait``
    seconds (its listen backlog full: their SYNs are being retried) are left dialling."""
    loop = asyncio.get_running_loop()

    async def one() -> socket.socket:
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, address), wait)
        except (asyncio.TimeoutError, OSError):
            pass
        return s

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_300_half_open_connections_hold_almost_no_memory() -> None:
    async def main() -> int:
        listener = await Listener.start(HOST, KEY, handshake_timeout=30)
        await asyncio.sleep(0.05)
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        socks = await _open(listener.address, 300)
        await _wait(lambda: listener.handshaking == MAX_HANDSHAKES, 5)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        for s in socks:
            s.close()
        await listener.close()
        return grown

    grown = asyncio.run(main())
    # before the cap and the small buffers: ~256 KiB each, 75 MiB for 300
    assert grown < 2 * 1024 * 1024, f"{grown / 1e6:.1f} MB for 300 half-open connections"


def test_10000_attempts_leave_memory_flat_and_the_listener_working(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[int, int]:
        listener = await Listener.start(HOST, KEY, handshake_timeout=0.2)
        expected = listener.expect("r1")

        async def attempts(waves: int) -> None:
            for _ in range(waves):  # waves of 100: connect, send garbage or nothing, hang up
                socks = await _open(listener.address, 100)
                for i, s in enumerate(socks):
                    if i % 2:
                        try:
                            s.send(b"GET / HTTP/1.1\r\n\r\n")
                        except OSError:
                            pass
                    s.close()
                await _wait(lambda: listener.handshaking < MAX_HANDSHAKES, 20)
            await _wait(lambda: listener.handshaking == 0, 20)

        tracemalloc.start()
        await attempts(10)  # warm up: first-use caches of asyncio, logging, the deque
        base = tracemalloc.take_snapshot()
        await attempts(100)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        # the real runner, while 100 hold half-open connections
        squatters = await _open(listener.address, 100)
        channel = await connect(HOST, listener.address[1], KEY, "r1", timeout=15)
        parent = await asyncio.wait_for(expected, 15)
        await channel.send({"hello": 1})
        got = await parent.recv()
        assert got == {"hello": 1}
        channel.close()
        parent.close()
        for s in squatters:
            s.close()
        rejected = len(listener.rejected)
        await listener.close()
        return grown, rejected

    with caplog.at_level(logging.WARNING, logger="jupyter_flame.channel.listener"):
        grown, rejected = asyncio.run(main())
    assert grown < 2 * 1024 * 1024, f"{grown / 1e6:.1f} MB after 10,000 attempts"
    assert rejected > 0
    capped = [r for r in caplog.records if "in the handshake" in r.getMessage()]
    assert len(capped) == 1, [r.getMessage() for r in capped]
