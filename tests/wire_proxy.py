"""A TCP proxy between a runner and its parent that sees the channel as an attacker on the path
would: it records every byte, and it can replay, reorder, drop, corrupt or cut the runner's
frames, or rewrite the handshake (tests only).

It knows the wire format only as far as any observer can: the handshake's fixed sizes and each
frame's clear header (sequence number, sizes).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from jupyter_flame.channel import _framing

#: policy(index, frame) -> the byte strings to forward now in its place
Policy = Callable[[int, bytes], list[bytes]]
#: handshake(direction, bytes) -> the bytes to forward instead ("p2r": the parent's reply)
HandshakeRewrite = Callable[[str, bytes], bytes]


def frame_size(fixed: bytes) -> int:
    """Bytes after ``fixed`` up to the end of the frame's table (0 for a small frame)."""
    _, plen, nbuf = _framing.FIXED.unpack(fixed)
    if not nbuf and plen <= _framing.SMALL:
        return 0
    return 8 * nbuf + _framing.HEADER_TAG_SIZE


class WireProxy:
    def __init__(self, target: tuple[str, int], policy: Policy | None = None,
                 handshake: HandshakeRewrite | None = None) -> None:
        self.target = target
        self.policy = policy
        self.handshake = handshake
        self.wire = {"r2p": bytearray(), "p2r": bytearray()}  # what passed, as forwarded
        self.frames: list[bytes] = []  # the runner's frames as they arrived (before the policy)
        self.handshakes = {"r2p": bytearray(), "p2r": bytearray()}
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = ("", 0)

    async def start(self) -> WireProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    async def close(self) -> None:
        self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, r_reader: asyncio.StreamReader, r_writer: asyncio.StreamWriter) -> None:
        p_reader, p_writer = await asyncio.open_connection(*self.target)
        for coro in (self._runner_to_parent(r_reader, p_writer),
                     self._parent_to_runner(p_reader, r_writer)):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)

    async def _put(self, writer: asyncio.StreamWriter, direction: str, data: bytes) -> None:
        self.wire[direction] += data
        writer.write(data)
        await writer.drain()

    async def _runner_to_parent(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        try:
            hello = await reader.readexactly(_framing.HELLO.size)
            idlen = struct.unpack_from("<H", hello, 6)[0]
            hello += await reader.readexactly(idlen + _framing.NONCE_SIZE)
            self.handshakes["r2p"] += hello
            await self._put(writer, "r2p", hello)
            tag = await reader.readexactly(_framing.TAG_SIZE)
            self.handshakes["r2p"] += tag
            await self._put(writer, "r2p", tag)
            index = 0
            while True:
                fixed = await reader.readexactly(_framing.FIXED.size)
                rest = await reader.readexactly(frame_size(fixed))
                _, plen, nbuf = _framing.FIXED.unpack(fixed)
                if rest:
                    lengths = struct.unpack_from(f"<{nbuf}Q", rest)
                    body = plen + sum(lengths) + _framing.FRAME_TAG_SIZE
                else:
                    body = plen + _framing.SMALL_TAG_SIZE
                frame = fixed + rest + await reader.readexactly(body)
                self.frames.append(frame)
                for out in (self.policy(index, frame) if self.policy else [frame]):
                    await self._put(writer, "r2p", out)
                index += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _parent_to_runner(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        try:
            reply = await reader.readexactly(_framing.NONCE_SIZE + 1 + _framing.TAG_SIZE)
            self.handshakes["p2r"] += reply
            if self.handshake is not None:
                reply = self.handshake("p2r", reply)
            await self._put(writer, "p2r", reply)
            while data := await reader.read(1 << 16):
                await self._put(writer, "p2r", data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
