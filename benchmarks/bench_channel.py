"""jupyter_flame.channel.channel against the raw floor (benchmarks/rawbase.py), in one run.

    python benchmarks/bench_channel.py [--quick]

A third column, "asyncio, no auth", runs rawbase's framing over ``loop.sock_*`` on both sides:
the floor for any asyncio transport, so the share of the gap that is asyncio's shows.

Both sides use a persistent subprocess on loopback TCP that receives ``(fn, args)`` with the
arrays out of band and returns the result. Raw: blocking sockets, no authentication. Channel: two
asyncio processes speaking ``Call``/``Done`` through :mod:`jupyter_flame.channel.channel` (handshake,
every frame MAC'd: BLAKE2b small frames, Poly1305 large ones). Measured: a warm call after a
~50 ms pause (median, p95), back-to-back calls, and sending a 1 MiB / 100 MiB / 1 GiB uint8 array
and getting its sum back. Samples of the three transports alternate, so they share the load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import operator
import os
import pickle
import platform
import socket
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rawbase import RawBaseline, array_sum, raw_cold_start  # noqa: E402

from jupyter_flame.channel.channel import Channel  # noqa: E402
from jupyter_flame.channel.dial import connect  # noqa: E402
from jupyter_flame.channel.listener import Listener  # noqa: E402
from jupyter_flame.channel.protocol import Call, Done, Packed  # noqa: E402

MiB = 1024**2
SIZES = [("1 MiB", MiB), ("100 MiB", 100 * MiB), ("1 GiB", 1024 * MiB)]


def pack(value: object) -> Packed:
    bufs: list[pickle.PickleBuffer] = []
    payload = cloudpickle.dumps(value, protocol=5, buffer_callback=bufs.append)
    return Packed(payload, tuple(bufs))


def unpack(p: Packed) -> Any:
    return cloudpickle.loads(p.payload, buffers=p.buffers)


# --- the channel runner (subprocess) ---------------------------------------------------------
async def _runner(host: str, port: int, key: bytes) -> None:
    ch = await connect(host, port, key, "bench")
    try:
        while True:
            msg = await ch.recv()
            assert isinstance(msg, Call)
            fn, args, kwargs = unpack(msg.packed)
            value = fn(*args, **kwargs)
            await ch.send(Done(msg.task, True, value=pack(value), has_value=True))
    except ConnectionError:
        pass
    finally:
        ch.close()


# --- asyncio without authentication: rawbase's framing over loop.sock_* (the asyncio floor) ---
async def _a_send(sock: socket.socket, obj: object) -> None:
    loop = asyncio.get_running_loop()
    bufs: list[pickle.PickleBuffer] = []
    payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    head = struct.pack(f"<QI{len(views)}Q", len(payload), len(views), *(v.nbytes for v in views))
    await loop.sock_sendall(sock, head + payload)
    for v in views:
        await loop.sock_sendall(sock, v)


async def _a_recv_into(sock: socket.socket, mv: memoryview) -> None:
    loop = asyncio.get_running_loop()
    pos = 0
    while pos < len(mv):
        k = await loop.sock_recv_into(sock, mv[pos:])
        if not k:
            raise EOFError
        pos += k


async def _a_recv(sock: socket.socket) -> Any:
    head = bytearray(12)
    await _a_recv_into(sock, memoryview(head))
    plen, nbuf = struct.unpack("<QI", head)
    table = bytearray(8 * nbuf)
    await _a_recv_into(sock, memoryview(table))
    payload = bytearray(plen)
    await _a_recv_into(sock, memoryview(payload))
    bufs = [np.empty(n, np.uint8) for n in struct.unpack(f"<{nbuf}Q", table)]
    for b in bufs:
        await _a_recv_into(sock, b.data)
    return cloudpickle.loads(payload, buffers=bufs)


async def _null_runner(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    try:
        while True:
            fn, args = await _a_recv(sock)
            await _a_send(sock, fn(*args))
    except EOFError:
        pass
    finally:
        sock.close()


class NullAsyncBench:
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--null-runner", str(port)
        )
        self.sock, _ = await asyncio.wait_for(loop.sock_accept(lsock), 60)
        lsock.close()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)

    async def call(self, fn: Any, *args: Any) -> Any:
        await _a_send(self.sock, (fn, args))
        return await _a_recv(self.sock)

    async def close(self) -> None:
        self.sock.close()
        await self.proc.wait()


class ChannelBench:
    def __init__(self, encrypt: bool = False) -> None:
        self.task = 0
        self.encrypt = encrypt

    async def start(self) -> None:
        key = os.urandom(32)
        self.listener = await Listener.start("127.0.0.1", key, encrypt=self.encrypt)
        fut = self.listener.expect("bench")
        host, port = self.listener.address
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--runner",
            host,
            str(port),
            env={**os.environ, "K": key.hex()},
        )
        self.ch: Channel = await asyncio.wait_for(fut, 60)
        assert self.ch.encrypted is self.encrypt

    async def call(self, fn: Any, *args: Any) -> Any:
        self.task += 1
        msg = Call(self.task, pack((fn, args, {})))
        await self.ch.send(msg)  # the runner reads concurrently: no deadlock on large frames
        done = await self.ch.recv()
        assert isinstance(done, Done) and done.value is not None
        return unpack(done.value)

    async def close(self) -> None:
        self.ch.close()
        await self.proc.wait()
        await self.listener.close()


async def channel_cold_start() -> float:
    t0 = time.perf_counter()
    b = ChannelBench()
    await b.start()
    await b.call(int, "1")
    dt = time.perf_counter() - t0
    await b.close()
    return dt


# --- measurement (raw and channel samples alternate, so both see the same machine load) ------------
def stats(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(0.95 * len(s)))]


async def measure(
    calls: dict[str, Callable[..., Awaitable[Any]]], n_warm: int, reps: dict[str, int],
    sizes: list[tuple[str, int]] = SIZES,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {name: {} for name in calls}
    samples: dict[str, list[float]] = {name: [] for name in calls}

    async def timed(name: str, fn: Any, *args: Any) -> float:
        t = time.perf_counter()
        await calls[name](fn, *args)
        return time.perf_counter() - t

    for name in calls:
        for _ in range(20):
            await calls[name](operator.add, 1, 2)
    for _ in range(n_warm):
        for name in calls:
            await asyncio.sleep(0.05)
            samples[name].append(await timed(name, operator.add, 1, 2))
    for name in calls:
        out[name]["warm"] = stats(samples[name])
        samples[name] = []
    for _ in range(n_warm * 4):
        for name in calls:
            samples[name].append(await timed(name, operator.add, 1, 2))
    for name in calls:
        out[name]["b2b"] = stats(samples[name])
    for label, size in sizes:
        arr = np.ones(size, np.uint8)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for name in calls:  # first touch of the receive buffers, not measured
            await calls[name](array_sum, arr)
        for _ in range(reps[label]):
            for name in calls:
                gc.collect()
                times[name].append(await timed(name, array_sum, arr))
        for name in calls:
            out[name][label] = size / statistics.median(times[name]) / 1e9
            out[name][label + " best"] = size / min(times[name]) / 1e9
        del arr
    return out


async def run_both(n_warm: int, reps: dict[str, int]) -> dict[str, dict[str, Any]]:
    raw = RawBaseline().start()
    ch = ChannelBench()
    await ch.start()
    null = NullAsyncBench()
    await null.start()

    async def raw_call(fn: Any, *args: Any) -> Any:
        return raw.call(fn, *args)

    try:
        calls = {"raw": raw_call, "channel": ch.call, "null": null.call}
        return await measure(calls, n_warm, reps)
    finally:
        raw.close()
        await ch.close()
        await null.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--runner", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--null-runner", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.null_runner:
        asyncio.run(_null_runner(args.null_runner))
        return
    if args.runner:
        asyncio.run(_runner(args.runner[0], int(args.runner[1]), bytes.fromhex(os.environ["K"])))
        return
    n_warm = 20 if args.quick else 60
    reps = (
        {"1 MiB": 10, "100 MiB": 3, "1 GiB": 2}
        if args.quick
        else {"1 MiB": 40, "100 MiB": 11, "1 GiB": 5}
    )
    cold_raw = statistics.median(raw_cold_start() for _ in range(3))
    cold_ch = statistics.median(asyncio.run(channel_cold_start()) for _ in range(3))
    res = asyncio.run(run_both(n_warm, reps))
    raw, ch, null = res["raw"], res["channel"], res["null"]
    print(
        f"# bench_channel ({platform.python_version()}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"n_warm={n_warm}, reps={reps})"
    )
    print()
    print("| metric | raw | channel | channel / raw | asyncio, no auth | channel / asyncio |")
    print("|---|---|---|---|---|---|")
    for key, name in (("warm", "warm call after 50 ms pause"), ("b2b", "back-to-back call")):
        for i, stat in enumerate(("median", "p95")):
            r, c, n = raw[key][i] * 1e3, ch[key][i] * 1e3, null[key][i] * 1e3
            print(
                f"| {name}, {stat} (ms) | {r:.3f} | {c:.3f} | {c / r:.2f}x time "
                f"| {n:.3f} | {c / n:.2f}x time |"
            )
    for label, _ in SIZES:
        for suffix, what in (("", "median"), (" best", "best")):
            r, c, n = raw[label + suffix], ch[label + suffix], null[label + suffix]
            print(
                f"| {label} array -> sum, {what} (GB/s) | {r:.2f} | {c:.2f} "
                f"| {c / r:.2f}x throughput | {n:.2f} | {c / n:.2f}x throughput |"
            )
    print(
        f"| cold start to first result (s) | {cold_raw:.3f} | {cold_ch:.3f} "
        f"| {cold_ch / cold_raw:.2f}x time | | |"
    )


if __name__ == "__main__":
    main()
