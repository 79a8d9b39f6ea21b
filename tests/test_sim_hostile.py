"""The stand-in's API server under hostile input, as an attacker on the node would try it:
half-open connections, garbage, a 2^62 Content-Length, a request cut short, a slow client.
Each is dropped or answered with an error; the server's memory stays bounded, it never
crashes, and a real client's requests keep working throughout."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time

import psutil
import pytest

from .sim_harness import Sim

pytestmark = [pytest.mark.sim]


def server(sim: Sim) -> tuple[int, int]:
    info = json.loads((sim.dir / "apiserver.json").read_text())
    return int(info["pid"]), int(info["port"])


def tls(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))


def real_client_works(sim: Sim) -> float:
    t = time.monotonic()
    sim.admin.list_namespaced_pod("default", limit=1)
    return time.monotonic() - t


def test_api_server_survives_hostile_clients(sim: Sim) -> None:
    pid, port = server(sim)
    proc = psutil.Process(pid)
    real_client_works(sim)
    rss0 = proc.memory_info().rss
    # 300 half-open TCP connections (no TLS handshake), held open
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    assert real_client_works(sim) < 5
    # garbage instead of a TLS hello
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(os.urandom(4096))
        try:
            assert s.recv(100) is not None  # an alert or EOF: dropped, not left hanging
        except (ConnectionResetError, TimeoutError):
            pass
        s.close()
    # a request announcing a 2^62-byte body
    s = tls(port)
    s.sendall(b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: 4611686018427387904\r\n\r\n{")
    reply = s.recv(4096)
    assert reply.split(b" ", 2)[1] in (b"400", b"401", b"413"), reply[:200]
    s.close()
    # a request cut short
    s = tls(port)
    s.sendall(b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 1000\r\n\r\n{\"kind\":")
    s.close()
    # a slow client: one byte of its request line every 0.2 s, while the real client works
    slow = tls(port)
    stop = threading.Event()

    def dribble() -> None:
        for b in b"GET /api HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200:
            if stop.is_set():
                return
            try:
                slow.sendall(bytes([b]))
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    for _ in range(5):
        assert real_client_works(sim) < 5
        time.sleep(0.3)
    stop.set()
    t.join(5)
    slow.close()
    for s in held:
        s.close()
    time.sleep(0.5)
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    assert real_client_works(sim) < 5
    growth = proc.memory_info().rss - rss0
    assert growth < 64 * 1024**2, f"the API server grew by {growth >> 20} MiB"
