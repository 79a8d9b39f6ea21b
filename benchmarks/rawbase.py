"""The raw floor every jupyter-flame transport is compared with.

A persistent subprocess receives ``(fn, args)`` pickled with cloudpickle protocol 5, its buffers
out of band, over loopback TCP: blocking sockets, ``recv_into`` preallocated numpy buffers, no
authentication, no framing beyond lengths. It calls ``fn(*args)`` and sends the result back the
same way. Nothing here is jupyter-flame code.

Use from another benchmark::

    sys.path.insert(0, str(Path(__file__).parent))      # the benchmarks folder
    from rawbase import RawBaseline, raw_cold_start

    raw = RawBaseline(); raw.start()
    raw.call(operator.add, 1, 2)        # -> 3
    raw.send_array_sum(np.ones(10, np.uint8))   # -> 10.0
    raw.close()

Run as a script with a port number, this file is the subprocess.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from typing import Any

import cloudpickle
import numpy as np

__all__ = ["RawBaseline", "array_sum", "raw_cold_start"]

_HEAD = struct.Struct("<QI")  # payload length, number of buffers


def array_sum(arr: np.ndarray) -> float:
    """What ``send_array_sum`` runs remotely (importable by reference in the subprocess)."""
    return float(arr.sum(dtype=np.uint64))


def send_msg(sock: socket.socket, obj: object) -> None:
    bufs: list[Any] = []
    payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    lengths = [v.nbytes for v in views]
    sock.sendall(
        _HEAD.pack(len(payload), len(views)) + struct.pack(f"<{len(views)}Q", *lengths) + payload
    )
    for v in views:
        sock.sendall(v)


def _recv_into(sock: socket.socket, mv: memoryview) -> None:
    pos, n = 0, len(mv)
    while pos < n:
        k = sock.recv_into(mv[pos:])
        if not k:
            raise EOFError("peer closed")
        pos += k


def recv_msg(sock: socket.socket) -> Any:
    head = bytearray(_HEAD.size)
    _recv_into(sock, memoryview(head))
    plen, nbuf = _HEAD.unpack(head)
    table = bytearray(8 * nbuf)
    _recv_into(sock, memoryview(table))
    lengths = struct.unpack(f"<{nbuf}Q", table)
    payload = bytearray(plen)
    _recv_into(sock, memoryview(payload))
    bufs = [np.empty(n, np.uint8) for n in lengths]
    for b in bufs:
        _recv_into(sock, b.data)
    return cloudpickle.loads(payload, buffers=bufs)


class RawBaseline:
    """A persistent raw subprocess; ``start()``, ``call()``, ``send_array_sum()``, ``close()``."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self) -> RawBaseline:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(self.timeout)
        port = lsock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, __file__, str(port)])
        try:
            self.sock, _ = lsock.accept()
        finally:
            lsock.close()
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        assert self.sock is not None, "call start() first"
        send_msg(self.sock, (fn, args))
        return recv_msg(self.sock)

    def send_array_sum(self, arr: np.ndarray) -> float:
        return float(self.call(array_sum, arr))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> RawBaseline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_cold_start() -> float:
    """Seconds from spawning the raw subprocess to the first result of a trivial call."""
    t0 = time.perf_counter()
    raw = RawBaseline().start()
    try:
        raw.call(int, "1")
        return time.perf_counter() - t0
    finally:
        raw.close()


def _serve(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            try:
                fn, args = recv_msg(sock)
            except EOFError:
                return
            send_msg(sock, fn(*args))
    finally:
        sock.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
