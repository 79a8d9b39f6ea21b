"""Large values through shared memory between a kernel and its local runners.

Channel pairs over a real Unix socket (both ends in this process) for the frame-level
properties, hostile descriptors included; real runner processes and a real kernel for what a
user sees.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_flame import Pool
from jupyter_flame.channel import _shm
from jupyter_flame.channel._conn import Conn
from jupyter_flame.channel._framing import session_keys
from jupyter_flame.channel.channel import Channel
from jupyter_flame.errors import ChannelAuthError, RunnerLostError
from jupyter_flame.values import shipping

from .channel_fuzz import UNPICKLED, Counted
from .kernel_harness import Kernel

MiB = 1 << 20


async def pair(family: int = socket.AF_UNIX, encrypt: bool = False) -> tuple[Channel, Channel]:
    if family == socket.AF_UNIX:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        server = socket.create_server(("127.0.0.1", 0))
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
        server.close()
    for s in (a, b):
        s.setblocking(False)
    p2r, r2p = session_keys(os.urandom(32), b"transcript", encrypt)
    return Channel(Conn(a), "r", tx=p2r, rx=r2p), Channel(Conn(b), "r", tx=r2p, rx=p2r)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def trip(tx: Channel, rx: Channel, msg: object) -> Any:
    sending = asyncio.ensure_future(tx.send(msg))
    got = await rx.recv()
    await sending
    return got


def test_values_arrive_equal_arrays_without_crossing_the_socket() -> None:
    async def main() -> None:
        kernel, runner = await pair()
        assert kernel.shared_memory and runner.shared_memory
        arr = np.random.default_rng(0).random(2 * MiB)  # 16 MiB
        blob = os.urandom(3 * MiB)
        # bytes and bytearray travel as the values layer packs them (their memory out of band)
        value = {"array": arr, "bytes": shipping.pack(blob, digest=False),
                 "bytearray": shipping.pack(bytearray(blob), digest=False), "small": np.arange(10)}
        before = kernel.bytes_sent
        got = await trip(kernel, runner, value)
        assert np.array_equal(got["array"], arr) and got["array"].dtype == arr.dtype
        assert shipping.unpack(got["bytes"]) == blob
        assert shipping.unpack(got["bytearray"]) == bytearray(blob)
        assert np.array_equal(got["small"], np.arange(10))
        # the 16 MiB array went through a segment; bytes and bytearray stay in the stream (the
        # receiver copies them into new objects anyway: a segment would only add a copy)
        assert kernel.bytes_sent - before < 2 * len(blob) + 64 * 1024
        got["array"][0] = -1.0  # the array is the receiver's own, writable
        assert arr[0] != -1.0
        kernel.close()
        runner.close()

    run(main())


def test_pandas_frames_arrive_equal() -> None:
    pd = pytest.importorskip("pandas")

    async def main() -> None:
        kernel, runner = await pair()
        df = pd.DataFrame({"x": np.arange(400_000, dtype=np.float64), "y": np.arange(400_000)})
        before = kernel.bytes_sent
        got = await trip(kernel, runner, df)
        pd.testing.assert_frame_equal(got, df)
        assert kernel.bytes_sent - before < 256 * 1024
        kernel.close()
        runner.close()

    run(main())


@pytest.mark.parametrize(("family", "encrypt"), [(socket.AF_INET, False), (socket.AF_UNIX, True)])
def test_tcp_and_encrypted_channels_keep_the_stream(family: int, encrypt: bool) -> None:
    async def main() -> None:
        kernel, runner = await pair(family, encrypt)
        assert not kernel.shared_memory
        arr = np.ones(MiB)
        got = await trip(kernel, runner, arr)
        assert np.array_equal(got, arr)
        assert kernel.bytes_sent > arr.nbytes
        kernel.close()
        runner.close()

    run(main())


def test_released_segments_are_reused_and_freed() -> None:
    async def main() -> None:
        kernel, runner = await pair()
        base = _shm.memfds_open()
        for _ in range(5):
            got = await trip(kernel, runner, np.ones(4 * MiB))
            del got  # the runner is done with it: the release travels back
            await asyncio.wait_for(_drain(kernel), 2)
        pool = kernel._segments
        assert pool is not None and pool.held == 32 * MiB  # one segment, reused five times
        kernel.close()
        runner.close()
        assert _shm.memfds_open() <= base  # closing both ends dropped every segment

    async def _drain(channel: Channel) -> None:
        pool = channel._segments
        assert pool is not None
        while pool._busy:  # the release is an internal frame: reading handles it
            try:
                await asyncio.wait_for(channel.recv(), 0.05)
            except asyncio.TimeoutError:
                pass

    run(main())


# -- hostile descriptors: refused before anything is unpickled ------------------------------

def _memfd(size: int, seals: int) -> int:
    fd = os.memfd_create(_shm.NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.mark.parametrize(("name", "make_fd", "declared", "message"), [
    ("unsealed", lambda n: _memfd(n, 0), 4 * MiB, "not sealed"),
    ("truncated", lambda n: _memfd(n // 2, _shm.SEALS), 4 * MiB, "truncated"),
    ("longer than sent", lambda n: _memfd(n, _shm.SEALS), 64 * MiB, "truncated"),
    ("a regular file", lambda n: os.open(tempfile.mkstemp()[1], os.O_RDWR), 4 * MiB, "not one of ours"),
    ("missing", lambda n: None, 4 * MiB, "no descriptor"),
])
def test_forged_descriptors_are_refused_before_unpickling(name: str, make_fd: Callable[[int], int | None],
                                                         declared: int, message: str) -> None:
    async def main() -> None:
        kernel, runner = await pair()
        assert kernel._segments is not None
        sent: list[int] = []

        def hostile(view: memoryview) -> tuple[int, int]:
            fd = make_fd(view.nbytes)
            if fd is not None:
                sent.append(fd)
            return _shm.entry(7, declared), -1 if fd is None else fd  # None: no descriptor sent

        kernel._segments.write = hostile  # type: ignore[method-assign]
        UNPICKLED.clear()
        original = kernel._to_segments

        def to_segments(views: list[memoryview]) -> tuple[list[int], list[memoryview], list[int]]:
            table, inband, fds = original(views)
            return table, inband, [fd for fd in fds if fd >= 0]

        kernel._to_segments = to_segments  # type: ignore[method-assign]
        sending = asyncio.ensure_future(kernel.send((Counted(1), np.ones(MiB // 2))))
        with pytest.raises(ChannelAuthError, match=message):
            await runner.recv()
        assert UNPICKLED == []  # the payload was never loaded
        assert runner.closed
        sending.cancel()
        kernel.close()
        for fd in sent:
            try:
                os.close(fd)
            except OSError:
                pass

    run(main())


# -- through real runners ----------------------------------------------------------------------

def total(a: Any) -> float:
    return float(np.asarray(a, dtype=np.float64).sum())


def echo(value: Any) -> Any:
    return value


def test_real_runner_round_trip() -> None:
    with Pool("shm-roundtrip", max=1) as pool:
        arr = np.random.default_rng(1).random(4 * MiB)
        assert pool.call(total, arr) == pytest.approx(float(arr.sum()))
        blob = os.urandom(2 * MiB)
        back = pool.call(echo, {"arr": arr, "blob": blob, "ba": bytearray(blob)})
        assert np.array_equal(back["arr"], arr) and back["blob"] == blob
        assert back["ba"] == bytearray(blob)
        back["arr"][:] = 0  # the kernel's copy is its own
        assert pool.call(total, arr) == pytest.approx(float(arr.sum()))
        try:
            import pandas as pd
        except ImportError:
            return
        df = pd.DataFrame({"a": np.arange(300_000), "b": np.arange(300_000) * 0.5})
        pd.testing.assert_frame_equal(pool.call(echo, df), df)


def dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def slow_total(a: Any) -> float:
    time.sleep(30)
    return total(a)


def test_runner_killed_mid_transfer_leaves_no_segment() -> None:
    shm_before, fds_before = dev_shm(), _shm.memfds_open()
    with Pool("shm-kill", max=1) as pool:
        runner_pid = pool.call(os.getpid)
        big = np.ones(64 * MiB)  # 512 MiB: the kill lands while it is in flight or being used
        fut = pool.submit(slow_total, big)
        threading.Timer(0.3, os.kill, (runner_pid, signal.SIGKILL)).start()
        with pytest.raises(RunnerLostError):
            fut.result(60)
    deadline = time.monotonic() + 10
    while _shm.memfds_open() > fds_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _shm.memfds_open() <= fds_before, "the kernel kept a segment of a dead runner"
    assert dev_shm() == shm_before


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"))
    yield k
    k.run("%flame shutdown --all")
    k.shutdown()


def test_in_place_changes_come_back(kernel: Kernel) -> None:
    res = kernel.run("import numpy as np\na = np.zeros(2**21)\nb = bytearray(2**21)\n")
    assert res.status == "ok", res.traceback_text()
    res = kernel.run("%%flame\na += 1\nb[:3] = b'abc'\nshown = a.__array_interface__['data'][0] != 0\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("float(a.sum())") == 2.0**21
    assert kernel.value("bytes(b[:4])") == b"abc\x00"
    # again: the changed array goes back to the runner and comes home changed again
    assert kernel.run("%%flame\na *= 3\n").status == "ok"
    assert kernel.value("float(a.sum())") == 3 * 2.0**21


def test_a_sigkilled_kernel_leaves_nothing(tmp_path: Path) -> None:
    before = dev_shm()
    k = Kernel(cwd=tmp_path)
    res = k.run("import numpy as np\nfrom jupyter_flame import Pool\np = Pool('k', max=1)\n"
                "x = p.call(np.ones, 2**22)\nfloat(x.sum())\n")
    assert res.status == "ok", res.traceback_text()
    runner = k.value("p.call(__import__('os').getpid)")
    os.kill(k.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(runner, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the runner outlived its SIGKILLed kernel")
    k.km.cleanup_resources()
    assert dev_shm() == before
