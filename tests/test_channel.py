"""The authenticated channel, through real loopback sockets (and one real subprocess peer)."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from jupyter_flame.channel import _framing
from jupyter_flame.channel.channel import DEFAULT_MAX_FRAME, Channel, ChannelClosedError
from jupyter_flame.channel.dial import connect
from jupyter_flame.channel.listener import Listener
from jupyter_flame.channel.protocol import Call, Done, Packed, Ping, Stream
from jupyter_flame.errors import ChannelAuthError

HOST = "127.0.0.1"
ENCRYPT = False  # set per test by the ``mode`` fixture: every test runs MAC-only and encrypted


@pytest.fixture(autouse=True, params=[False, True], ids=["mac", "aead"])
def mode(request: pytest.FixtureRequest) -> bool:
    global ENCRYPT
    ENCRYPT = request.param
    return ENCRYPT


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 15))

    return wrapper


@asynccontextmanager
async def pair(
    key: bytes | None = None, *, max_frame: int = DEFAULT_MAX_FRAME
) -> AsyncIterator[tuple[Listener, Channel, Channel]]:
    """(listener, parent channel, runner channel) connected over loopback."""
    key = key or os.urandom(32)
    lst = await Listener.start(HOST, key, max_frame=max_frame, encrypt=ENCRYPT)
    fut = lst.expect("r1")
    runner = await connect(*lst.address, key, "r1")
    parent = await asyncio.wait_for(fut, 5)
    assert parent.encrypted is runner.encrypted is ENCRYPT
    try:
        yield lst, parent, runner
    finally:
        parent.close()
        runner.close()
        await lst.close()


def pack(value: object) -> Packed:
    bufs: list[pickle.PickleBuffer] = []
    payload = cloudpickle.dumps(value, protocol=5, buffer_callback=bufs.append)
    return Packed(payload, tuple(bufs))


def unpack(p: Packed) -> Any:
    return pickle.loads(p.payload, buffers=p.buffers)


def seal(ch: Channel, msg: object) -> tuple[bytes, int]:
    """Encode one frame exactly as ``send`` does; return it and its header size."""
    bufs: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(msg, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    if not views and len(payload) <= _framing.SMALL:
        return ch._sealer.small(payload), _framing.FIXED.size
    head, body = ch._sealer.header(len(payload), [v.nbytes for v in views])
    sealed = b"".join(
        bytes(body.seal(part, memoryview(bytearray(len(part)))))  # 'out' is used by AEAD only
        for part in (payload, *views))
    return head + sealed + body.finish(), len(head)


class Evil:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


# --- round trips --------------------------------------------------------------------------------
@async_test
async def test_round_trip_messages_both_ways() -> None:
    async with pair() as (_, parent, runner):
        msgs = [Ping(1.5), Stream(3, "stdout", "hi"), {"a": [1, 2]}, None, b"x" * 100_000]
        for m in msgs:
            await parent.send(m)
            assert await runner.recv() == m
            await runner.send(m)
            assert await parent.recv() == m
        assert parent.frames_sent == runner.frames_received == len(msgs)
        assert parent.bytes_sent == runner.bytes_received > 100_000
        assert runner.peer_id == parent.peer_id == "r1"


@async_test
async def test_arrays_arrive_equal_and_writable() -> None:
    async with pair() as (_, parent, runner):
        a = np.arange(3_000_000, dtype=np.float64)
        f = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
        small = np.arange(7, dtype=np.uint8)
        msg = Call(7, pack((sum, (a, f, small), {})))
        n, got = await asyncio.gather(parent.send(msg), runner.recv())
        assert n > a.nbytes and isinstance(got, Call)
        assert all(isinstance(b, pickle.PickleBuffer) for b in got.packed.buffers)
        _, (a2, f2, s2), _ = unpack(got.packed)
        for x, y in ((a, a2), (f, f2), (small, s2)):
            np.testing.assert_array_equal(x, y)
            assert y.flags.writeable
        a2[0] = 42.0  # writable in place, no copy needed
        # a bare array in a message travels out of band too
        _, back = await asyncio.gather(runner.send(Done(7, True, value=pack(a2))), parent.recv())
        assert isinstance(back, Done) and back.value is not None
        assert unpack(back.value)[0] == 42.0
        _, direct = await asyncio.gather(runner.send(a), parent.recv())
        np.testing.assert_array_equal(direct, a)
        assert direct.flags.writeable


@async_test
async def test_concurrent_sends_never_interleave() -> None:
    async with pair() as (_, parent, runner):
        rng = np.random.default_rng(0)
        arrays = [
            rng.integers(0, 255, int(n), dtype=np.uint8) for n in rng.integers(0, 300_000, 60)
        ]

        async def sender(i: int) -> None:
            await parent.send((i, pack(arrays[i]), "x" * (i * 1000)))

        async def receiver() -> dict[int, np.ndarray]:
            out = {}
            for _ in arrays:
                i, p, text = await runner.recv()
                assert text == "x" * (i * 1000)
                out[i] = unpack(p)
            return out

        got, *_ = await asyncio.gather(receiver(), *(sender(i) for i in range(len(arrays))))
        assert sorted(got) == list(range(len(arrays)))
        for i, arr in got.items():
            np.testing.assert_array_equal(arr, arrays[i])


@async_test
async def test_subprocess_peer_round_trip() -> None:
    key = os.urandom(32)
    lst = await Listener.start(HOST, key, encrypt=ENCRYPT)
    fut = lst.expect("sub")
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        from jupyter_flame.channel.dial import connect
        from jupyter_flame.errors import ChannelClosedError
        async def main():
            ch = await connect(sys.argv[1], int(sys.argv[2]), bytes.fromhex(os.environ["K"]), "sub")
            try:
                while True:
                    msg = await ch.recv()
                    await ch.send(("echo", msg))
            except ChannelClosedError:
                pass
        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *map(str, lst.address), env={**os.environ, "K": key.hex()}
    )
    try:
        ch = await asyncio.wait_for(fut, 10)
        arr = np.arange(1_000_000, dtype=np.int64)
        _, reply = await asyncio.gather(ch.send(pack(arr)), ch.recv())
        assert reply[0] == "echo"
        np.testing.assert_array_equal(unpack(reply[1]), arr)
        await ch.send(Ping(2.0))
        assert await ch.recv() == ("echo", Ping(2.0))
        ch.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await lst.close()


# --- handshake ----------------------------------------------------------------------------------
@async_test
async def test_runner_with_wrong_key_is_refused() -> None:
    lst = await Listener.start(HOST, os.urandom(32))
    fut = lst.expect("r1")
    with pytest.raises(ChannelAuthError, match="key"):
        await connect(*lst.address, os.urandom(32), "r1")
    await asyncio.sleep(0.05)
    assert not fut.done()  # a bad peer cannot fail or steal the expectation
    assert lst.rejected and lst.rejected[-1][1] == "r1"
    await lst.close()


@async_test
async def test_parent_with_wrong_key_is_refused() -> None:
    """The runner checks the parent first: a parent without the key learns nothing."""
    lst = await Listener.start(HOST, os.urandom(32))
    lst.expect("r1")
    with pytest.raises(ChannelAuthError, match="does not hold"):
        await connect(*lst.address, os.urandom(32), "r1")
    await lst.close()


@async_test
async def test_unknown_runner_id_is_rejected() -> None:
    key = os.urandom(32)
    lst = await Listener.start(HOST, key)
    lst.expect("r1")
    with pytest.raises(ChannelAuthError, match="does not expect"):
        await connect(*lst.address, key, "intruder")
    assert lst.rejected[-1][1:] == ("intruder", "runner id not expected")
    await lst.close()


@async_test
async def test_pickle_without_handshake_is_never_loaded(tmp_path: Path) -> None:
    """A peer without the key sends a hello then a malicious pickle: nothing executes."""
    key = os.urandom(32)
    lst = await Listener.start(HOST, key)
    lst.expect("r1")
    target = tmp_path / "pwned"
    evil = pickle.dumps(Evil(str(target)), protocol=5)
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(lst.address)
    sock.setblocking(False)
    hello = _framing.HELLO.pack(_framing.MAGIC, _framing.VERSION, 2) + b"r1" + os.urandom(32)
    await loop.sock_sendall(sock, hello)
    await loop.sock_sendall(sock, os.urandom(32) + evil * 10)  # a bogus tag, then the pickle
    while await loop.sock_recv(sock, 4096):  # the listener closes on us
        pass
    sock.close()
    assert not target.exists()
    assert "wrong key" in lst.rejected[-1][2]
    await lst.close()


@async_test
async def test_malicious_frame_with_bad_mac_is_never_loaded(tmp_path: Path) -> None:
    """After a good handshake, a frame MAC'd with other keys is refused before unpickling."""
    async with pair() as (_, parent, runner):
        forged = _framing.DirectionKeys(os.urandom(32), os.urandom(32),
                                        os.urandom(32) if ENCRYPT else None)
        runner._sealer = _framing.FrameSealer(forged)
        target = tmp_path / "pwned"
        await runner.send(Evil(str(target)))
        with pytest.raises(ChannelAuthError, match="MAC|AEAD"):
            await parent.recv()
        assert parent.closed and not target.exists()
        with pytest.raises(ChannelClosedError):
            await parent.recv()


@async_test
async def test_slow_or_garbage_peers_do_not_block_the_listener() -> None:
    key = os.urandom(32)
    lst = await Listener.start(HOST, key, handshake_timeout=0.3)
    fut = lst.expect("r1")
    silent = socket.create_connection(lst.address)  # says nothing
    garbage = socket.create_connection(lst.address)
    garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
    runner = await connect(*lst.address, key, "r1", timeout=2)
    parent = await asyncio.wait_for(fut, 2)
    await asyncio.sleep(0.5)
    reasons = [r[2] for r in lst.rejected]
    assert any("not a jupyter-flame runner" in r for r in reasons)
    assert any("within 0.3 s" in r for r in reasons)
    assert silent.recv(10) == b""  # dropped
    silent.close()
    garbage.close()
    runner.close()
    parent.close()
    await lst.close()


# --- frames -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where",
    [
        "seq",
        "header",
        "table",
        "payload",
        "buffer",
        "tag",
        "small-length",
        "small-payload",
        "small-tag",
    ],
)
@async_test
async def test_tampered_byte_is_detected(where: str) -> None:
    async with pair() as (_, parent, runner):
        await runner.send("warm-up")
        assert await parent.recv() == "warm-up"
        if where.startswith("small"):
            frame, hsize = seal(runner, ("hello", "x" * 1000))
            plen = len(frame) - hsize - _framing.SMALL_TAG_SIZE
        else:
            frame, hsize = seal(runner, ("hello", pack(np.arange(1000, dtype=np.uint8))))
            plen = _framing.FIXED.unpack_from(frame)[1]
        offset = {
            "seq": 0,
            "header": 9,  # payload length
            "table": _framing.FIXED.size + 2,
            "payload": hsize + plen // 2,
            "buffer": hsize + plen + 500,
            "tag": len(frame) - 3,
            "small-length": 8,
            "small-payload": hsize + 100,
            "small-tag": len(frame) - 1,
        }[where]
        bad = bytearray(frame)
        bad[offset] ^= 0x01
        await runner._conn.sendall(bytes(bad) + bytes(64))  # more traffic follows
        with pytest.raises(ChannelAuthError):
            await asyncio.wait_for(parent.recv(), 5)
        assert parent.closed


@async_test
async def test_small_frame_posing_as_large_is_detected() -> None:
    """Claiming buffers on a small frame switches the MAC; the forgery still fails."""
    async with pair() as (_, parent, runner):
        frame, _ = seal(runner, "small")
        bad = bytearray(frame)
        bad[16] = 1  # number of buffers: 0 -> 1
        await runner._conn.sendall(bytes(bad) + bytes(64))
        with pytest.raises(ChannelAuthError, match="header"):
            await asyncio.wait_for(parent.recv(), 5)


@async_test
async def test_replayed_frame_is_detected() -> None:
    async with pair() as (_, parent, runner):
        frame, _ = seal(runner, "once")
        await runner._conn.sendall(frame)
        assert await parent.recv() == "once"
        await runner._conn.sendall(frame)
        with pytest.raises(ChannelAuthError, match="sequence"):
            await parent.recv()


@async_test
async def test_reflected_frame_is_detected() -> None:
    """A frame of one direction sent back to its sender fails (per-direction keys)."""
    async with pair() as (_, parent, runner):
        frame, _ = seal(parent, "to runner")
        parent._sealer.seq -= 1  # as if the frame had gone to the runner; keep sequences aligned
        await runner._conn.sendall(frame)
        with pytest.raises(ChannelAuthError):
            await parent.recv()


@async_test
async def test_oversize_frame_is_refused_before_allocation() -> None:
    async with pair(max_frame=1 << 20) as (_, parent, runner):
        await runner.send(np.zeros(1000, np.uint8))  # within the limit
        assert (await parent.recv()).sum() == 0
        head, _ = runner._sealer.header(10, [1 << 35])  # declares a 32 GiB buffer
        await runner._conn.sendall(head)  # ...and sends nothing more
        with pytest.raises(ChannelAuthError, match="exceeds max_frame"):
            await asyncio.wait_for(parent.recv(), 2)  # refused at once, not after 32 GiB


@async_test
async def test_too_many_buffers_is_refused_before_reading_the_table() -> None:
    async with pair() as (_, parent, runner):
        await runner._conn.sendall(_framing.FIXED.pack(0, 0, 0xFFFFFFFF))
        with pytest.raises(ChannelAuthError, match="buffers"):
            await asyncio.wait_for(parent.recv(), 2)


# --- lifecycle ----------------------------------------------------------------------------------
@async_test
async def test_eof_raises_channel_closed() -> None:
    async with pair() as (_, parent, runner):
        pending = asyncio.ensure_future(parent.recv())
        await asyncio.sleep(0.05)
        runner.close()
        await runner.wait_closed()
        with pytest.raises(ChannelClosedError):
            await pending
        with pytest.raises(ChannelClosedError):
            await parent.send("x")
        assert isinstance(ChannelClosedError("x"), ConnectionError)


@async_test
async def test_local_close_wakes_pending_recv_and_releases_socket() -> None:
    async with pair() as (_, parent, _runner):
        pending = asyncio.ensure_future(parent.recv())
        await asyncio.sleep(0.05)
        parent.close()
        with pytest.raises(ChannelClosedError):
            await pending
        await asyncio.wait_for(parent.wait_closed(), 2)


@async_test
async def test_idle_recv_timeout_keeps_channel_usable() -> None:
    async with pair() as (_, parent, runner):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(parent.recv(), 0.05)
        assert not parent.closed
        await runner.send("still here")
        assert await parent.recv() == "still here"


@async_test
async def test_forget_cancels_and_rejects_later_connection() -> None:
    key = os.urandom(32)
    lst = await Listener.start(HOST, key)
    fut = lst.expect("r1")
    lst.forget("r1")
    assert fut.cancelled()
    with pytest.raises(ChannelAuthError):
        await connect(*lst.address, key, "r1")
    # each expectation admits one connection
    fut2 = lst.expect("r2")
    ch = await connect(*lst.address, key, "r2")
    assert (await fut2).peer_id == "r2"
    with pytest.raises(ChannelAuthError):
        await connect(*lst.address, key, "r2")
    ch.close()
    (await fut2).close()
    await lst.close()


@async_test
async def test_listener_close_fails_pending_expectations() -> None:
    key = os.urandom(32)
    lst = await Listener.start(HOST, key)
    fut = lst.expect("r1")
    await lst.close()
    with pytest.raises(ChannelClosedError):
        await fut
    with pytest.raises(ConnectionError):  # nobody listens any more
        await connect(*lst.address, key, "r1", timeout=2)


def test_bad_keys_are_config_errors() -> None:
    from jupyter_flame.errors import ConfigError

    with pytest.raises(ConfigError, match="os.urandom"):
        asyncio.run(Listener.start(HOST, b"short"))


def test_header_layout_is_fixed() -> None:
    # seq (u64), payload length (u64), buffer count (u32), little-endian, no padding
    assert _framing.FIXED.format == "<QQI"
    assert _framing.FIXED.size == 20
    assert _framing.FIXED.pack(1, 2, 3) == (
        (1).to_bytes(8, "little") + (2).to_bytes(8, "little") + (3).to_bytes(4, "little"))


@async_test
async def test_cancelled_large_send_still_completes_the_frame() -> None:
    async with pair() as (_, parent, runner):
        arr = np.arange(20_000_000, dtype=np.uint8)  # larger than the socket buffers
        sending = asyncio.ensure_future(parent.send(arr))
        await asyncio.sleep(0.01)
        sending.cancel()
        got = await runner.recv()
        np.testing.assert_array_equal(got, arr)
        await parent.send("next")
        assert await runner.recv() == "next"


@async_test
async def test_cancelled_recv_mid_frame_closes_the_channel() -> None:
    async with pair() as (_, parent, runner):
        frame, _ = seal(runner, np.zeros(200_000, np.uint8))
        await runner._conn.sendall(frame[: len(frame) // 2])
        reading = asyncio.ensure_future(parent.recv())
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert parent.closed


class _CountsPickles:
    """Counts how often it is pickled."""

    pickled = 0

    def __init__(self, size: int) -> None:
        self.data = b"x" * size

    def __reduce__(self) -> Any:
        type(self).pickled += 1
        return (bytes, (self.data,))


@async_test
async def test_refused_send_now_reuses_the_encoding() -> None:
    async with pair() as (_, parent, runner):
        for size, small in ((10, True), (_framing.SMALL + 1, False)):
            _CountsPickles.pickled = 0
            msg = _CountsPickles(size)
            enc = Channel.encode(msg)
            assert enc.small is small
            if small:
                assert runner.send_now(msg, encoded=enc)
            else:
                assert not runner.send_now(msg, encoded=enc)  # too large: nothing sent
                await runner.send(msg, encoded=enc)
            assert _CountsPickles.pickled == 1  # encoded once, never again
            assert await parent.recv() == b"x" * size
        # without an encoding, both still pickle the message themselves
        assert runner.send_now(Ping(2.0))
        await runner.send(Ping(3.0))
        assert await parent.recv() == Ping(2.0)
        assert await parent.recv() == Ping(3.0)
