"""The channel as seen by an attacker on the path: a proxy (tests/wire_proxy.py) records a real
session and replays, reorders, drops, duplicates, corrupts or cuts its frames, or rewrites the
handshake. Every variant fails closed: the good prefix arrives, the first bad frame is refused
before it is unpickled, and nothing after it is read. Run MAC-only and encrypted."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from jupyter_flame.channel.channel import Channel
from jupyter_flame.channel.dial import connect
from jupyter_flame.channel.listener import Listener
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError
from tests.channel_fuzz import UNPICKLED, Counted
from tests.wire_proxy import HandshakeRewrite, Policy, WireProxy

HOST = "127.0.0.1"
MARKER = b"SECRET-MARKER-7f3a9c"
def message(i: int) -> tuple[Counted, bytes, np.ndarray | None]:
    """Alternately small frames and large ones (an out-of-band buffer), marker inside both."""
    big = np.frombuffer(MARKER * 4000, np.uint8).copy() if i % 2 else None
    return Counted(i), MARKER + b" #%d" % i, big


async def proxied_pair(encrypt: bool, policy: Policy | None = None,
                       handshake: HandshakeRewrite | None = None
                       ) -> tuple[bytes, Listener, WireProxy, Channel, Channel]:
    """(key, listener, proxy, runner, parent): runner "r1" connected through a fresh proxy."""
    key = os.urandom(32)
    lst = await Listener.start(HOST, key, encrypt=encrypt)
    proxy = await WireProxy(lst.address, policy, handshake).start()
    fut = lst.expect("r1")
    runner = await connect(*proxy.address, key, "r1", timeout=5)
    parent: Channel = await asyncio.wait_for(fut, 5)
    return key, lst, proxy, runner, parent


async def session(encrypt: bool, policy: Policy | None = None, n: int = 6,
                  handshake: Callable[[str, bytes], bytes] | None = None,
                  hang_up: bool = False) -> tuple[list[int], BaseException | None, WireProxy]:
    """A runner sends ``n`` messages through the proxy; return what the parent loaded and
    the error that stopped it (None if all arrived)."""
    UNPICKLED.clear()
    _, lst, proxy, runner, parent = await proxied_pair(encrypt, policy, handshake)
    got: list[int] = []
    error: BaseException | None = None
    try:
        for i in range(n):
            await runner.send(message(i))
        if hang_up:
            runner.close()
        for _ in range(n):
            got.append((await asyncio.wait_for(parent.recv(), 5))[0])
    except (ChannelAuthError, ChannelClosedError, asyncio.TimeoutError) as exc:
        error = exc
    runner.close()
    parent.close()
    await proxy.close()
    await lst.close()
    return got, error, proxy


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture(params=[False, True], ids=["mac", "aead"])
def encrypt(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_clean_session_and_what_the_wire_shows(encrypt: bool) -> None:
    got, error, proxy = run(session(encrypt))
    assert error is None and got == list(range(6)) and UNPICKLED == got
    wire = bytes(proxy.wire["r2p"])
    if encrypt:  # neither the small frames' nor the buffers' bytes are readable
        assert MARKER not in wire
        assert MARKER[:8] not in wire
    else:  # MAC only: authenticated, readable (what Pool(encrypt=False) means)
        assert wire.count(MARKER) >= 6


def forward_twice(k: int) -> Policy:
    return lambda i, f: [f, f] if i == k else [f]


def drop(k: int) -> Policy:
    return lambda i, f: [] if i == k else [f]


def swap(k: int) -> Policy:
    held: list[bytes] = []

    def policy(i: int, f: bytes) -> list[bytes]:
        if i == k:
            held.append(f)
            return []
        if i == k + 1:
            return [f, *held]
        return [f]

    return policy


def flip(k: int, where: Callable[[bytes], int]) -> Policy:
    def policy(i: int, f: bytes) -> list[bytes]:
        if i != k:
            return [f]
        bad = bytearray(f)
        bad[where(f)] ^= 0x20
        return [bytes(bad)]

    return policy


def cut(k: int) -> Policy:
    return lambda i, f: [f[: len(f) // 2]] if i == k else ([] if i > k else [f])


@pytest.mark.parametrize("name,policy,good,match", [
    ("replayed frame", forward_twice(2), [0, 1, 2], "sequence"),
    ("replayed large frame", forward_twice(3), [0, 1, 2, 3], "sequence"),
    ("reordered frames", swap(2), [0, 1], "sequence"),
    ("dropped frame", drop(2), [0, 1], "sequence"),
    ("flipped ciphertext byte (small)", flip(2, lambda f: len(f) // 2), [0, 1], "MAC|AEAD"),
    ("flipped buffer byte (large)", flip(3, lambda f: len(f) - 100), [0, 1, 2], "MAC|AEAD"),
    ("flipped tag", flip(1, lambda f: len(f) - 1), [0], "MAC|AEAD"),
    ("flipped clear header", flip(1, lambda f: 12), [0], "header|MAC|AEAD|exceeds"),
])
def test_tampered_sessions_fail_closed(encrypt: bool, name: str, policy: Policy,
                                       good: list[int], match: str) -> None:
    got, error, _ = run(session(encrypt, policy))
    assert got == good, name
    assert UNPICKLED == good, f"{name}: a bad frame was unpickled"
    assert isinstance(error, ChannelAuthError), (name, error)
    assert __import__("re").search(match, str(error)), (name, str(error))


def test_cut_frame_then_close_is_a_closed_channel(encrypt: bool) -> None:
    """Half a frame and then the connection ends: the reader sees a closed channel, having
    loaded nothing of the cut frame."""
    got, error, _ = run(session(encrypt, cut(3), hang_up=True))
    assert got == [0, 1, 2] and UNPICKLED == [0, 1, 2]
    assert isinstance(error, ChannelClosedError), error


def test_recorded_session_replayed_to_a_new_connection_is_refused(encrypt: bool) -> None:
    """Every byte the runner sent in a real session, replayed to the same parent expecting the
    same runner: the handshake fails (fresh parent nonce), so no channel, nothing unpickled."""
    async def go() -> None:
        key, lst, proxy, runner, parent = await proxied_pair(encrypt)
        await runner.send(message(1))
        assert (await parent.recv())[0] == 1
        runner.close()
        parent.close()
        recording = bytes(proxy.wire["r2p"])
        await proxy.close()
        UNPICKLED.clear()
        fut = lst.expect("r1")
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(lst.address)
        sock.setblocking(False)
        await loop.sock_sendall(sock, recording)
        while await loop.sock_recv(sock, 4096):  # the listener drops us
            pass
        sock.close()
        assert not fut.done() and UNPICKLED == []
        assert "runner failed the handshake" in lst.rejected[-1][2]
        # ...and the real runner still gets in afterwards
        runner = await connect(*lst.address, key, "r1", timeout=5)
        parent = await asyncio.wait_for(fut, 5)
        await runner.send("fine")
        assert await parent.recv() == "fine"
        runner.close()
        parent.close()
        await lst.close()

    run(go())


def test_recorded_parent_reply_does_not_fool_a_new_runner(encrypt: bool) -> None:
    """A fake parent replays the real parent's handshake reply to a fresh runner: the runner
    refuses it (its own nonce is in the transcript) and sends nothing of value."""
    async def go() -> None:
        key, lst, proxy, runner, _ = await proxied_pair(encrypt)
        runner.close()
        reply = bytes(proxy.handshakes["p2r"])
        await proxy.close()
        await lst.close()

        async def fake_parent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(reply)
            await writer.drain()
            await reader.read(100)
            writer.close()

        server = await asyncio.start_server(fake_parent, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ChannelAuthError, match="does not hold"):
            await connect(HOST, port, key, "r1", timeout=5)
        server.close()

    run(go())


def test_mode_byte_cannot_be_downgraded() -> None:
    """An attacker flipping the parent's 'encrypt' byte to 0 breaks the parent's tag: the
    runner refuses the parent, and the listener records the failed handshake."""
    def downgrade(direction: str, reply: bytes) -> bytes:
        b = bytearray(reply)
        b[32] ^= 1  # encrypt -> MAC only
        return bytes(b)

    async def go() -> None:
        key = os.urandom(32)
        lst = await Listener.start(HOST, key, encrypt=True)
        proxy = await WireProxy(lst.address, handshake=downgrade).start()
        lst.expect("r1")
        with pytest.raises(ChannelAuthError, match="does not hold"):
            await connect(*proxy.address, key, "r1", timeout=5)
        await proxy.close()
        await lst.close()

    run(go())


def test_frames_of_one_session_do_not_open_in_another(encrypt: bool) -> None:
    """Two sessions under the same pool key: a frame recorded from the first, injected into the
    second at the right sequence number, fails (keys are per connection)."""
    async def go() -> None:
        key, lst, proxy, r1, p1 = await proxied_pair(encrypt)
        await r1.send(pickle.dumps("first session"))
        await p1.recv()
        frame0 = proxy.frames[0]
        fut = lst.expect("r2")
        r2 = await connect(*lst.address, key, "r2", timeout=5)
        p2 = await asyncio.wait_for(fut, 5)
        await r2._conn.sendall(frame0)  # seq 0, as p2 expects
        with pytest.raises(ChannelAuthError):
            await asyncio.wait_for(p2.recv(), 5)
        for ch in (r1, p1, r2, p2):
            ch.close()
        await proxy.close()
        await lst.close()

    run(go())
