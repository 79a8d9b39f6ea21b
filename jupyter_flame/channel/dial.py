"""The runner's side of the channel: dial the parent's listener and authenticate."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from jupyter_flame.channel._conn import Conn, nodelay
from jupyter_flame.channel._framing import MAX_RUNNER_ID, check_key, runner_handshake, session_keys
from jupyter_flame.channel.channel import DEFAULT_MAX_FRAME, Channel
from jupyter_flame.errors import FlameTimeoutError

__all__ = ["connect"]


async def connect(
    host: str,
    port: int,
    key: bytes,
    runner_id: str,
    *,
    timeout: float = 30.0,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> Channel:
    """Dial the parent's :class:`~jupyter_flame.channel.listener.Listener` and authenticate (runner side).

    Raises :class:`ChannelAuthError` if the parent does not prove it holds ``key`` or rejects
    this runner, :class:`~jupyter_flame.errors.FlameTimeoutError` after ``timeout`` seconds,
    ``OSError`` if the address cannot be reached.
    """
    key = check_key(key)
    rid = runner_id.encode("utf-8")
    if not 0 < len(rid) <= MAX_RUNNER_ID:
        raise ValueError(f"runner id must be 1..{MAX_RUNNER_ID} utf-8 bytes, got {runner_id!r}")
    try:
        return await asyncio.wait_for(_dial(host, port, key, rid, max_frame), timeout)
    except asyncio.TimeoutError as exc:
        raise FlameTimeoutError(
            f"could not connect and authenticate to {host if host.startswith('unix:') else f'{host}:{port}'} "
            f"within {timeout:.3g} s",
            runner=runner_id,
        ) from exc


async def _dial(host: str, port: int, key: bytes, rid: bytes, max_frame: int) -> Channel:
    loop = asyncio.get_running_loop()
    addr: Any
    if host.startswith("unix:"):  # the pool's Unix socket (a local runner)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = host[len("unix:"):]
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
    try:
        nodelay(sock)
        await loop.sock_connect(sock, addr)
        conn = Conn(sock)
        where = host if host.startswith("unix:") else f"{host}:{port}"
        transcript, encrypt = await runner_handshake(conn, key, rid, where)
    except BaseException:
        sock.close()
        raise
    p2r, r2p = session_keys(key, transcript, encrypt)
    return Channel(conn, rid.decode(), tx=r2p, rx=p2r, max_frame=max_frame)
