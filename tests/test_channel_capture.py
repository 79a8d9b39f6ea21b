"""What someone capturing the pod network sees of a %%flame cell: a real kernel in the stand-in's
notebook pod ships a marked value to a runner pod and gets it back, while tcpdump records the
loopback interface (where the stand-in's pod traffic flows). Encrypted by default: the marker is
nowhere in the capture; a pool with ``encrypt=False`` is the control that shows the capture
would catch it. Then the runner pod sends a tampered ciphertext over the same real connection:
the kernel drops it, the cell fails saying so, and the next cell runs on a new runner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel_harness import Kernel
from .sim_harness import Sim

pytestmark = [pytest.mark.kernel, pytest.mark.sim]

MARK = "Q7-CONFIDENTIAL-9d2e"


def _tcpdump_usable() -> str | None:
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed (.ci/run installs it with apt-get)"
    if os.geteuid() != 0:
        return "capturing on lo needs root (CAP_NET_RAW)"
    return None


class Capture:
    """``tcpdump -i lo`` of some TCP ports into a pcap file, until :meth:`stop`."""

    def __init__(self, path: Path, ports: list[int]) -> None:
        self.path = path
        flt = " or ".join(f"tcp port {p}" for p in ports)
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-U", "-n", "-s", "0", "-w", str(path), flt],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "tcpdump: listening on lo, ..."
        assert "listening" in line, line

    def stop(self) -> bytes:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        return self.path.read_bytes()


@pytest.fixture(scope="module")
def kernel(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"), env=sim.env)
    yield k
    k.run("%flame shutdown --all")
    k.shutdown()


@pytest.mark.skipif(_tcpdump_usable() is not None, reason=str(_tcpdump_usable()))
def test_pod_channel_shows_nothing_on_the_wire_and_drops_tampering(
        sim: Sim, kernel: Kernel, tmp_path: Path) -> None:
    setup = kernel.run(
        "from jupyter_flame import Pool\n"
        f"small = {MARK!r} * 3\n"
        f"big = ({MARK!r} * 20000).encode()\n"  # 400 KB: a large frame
        "enc = Pool('wire-enc', 'kubernetes', boot_timeout=60)\n"
        "clear = Pool('wire-clear', 'kubernetes', boot_timeout=60, encrypt=False)\n"
        "enc.call(int, '1'), clear.call(int, '1')\n")
    assert setup.status == "ok", setup.traceback_text()
    assert kernel.value("(enc.status()['channel'], clear.status()['channel'])") == (
        "encrypted", "authenticated")
    ports = {name: kernel.value(f"{name}._core.listener.address[1]") for name in ("enc", "clear")}
    cell = ("%%flame --pool {pool}\n"
            "echo_small = small + '!'\n"
            "echo_big = big + b'!'\n"
            "len(big)\n")
    caps = {name: Capture(tmp_path / f"{name}.pcap", [port]) for name, port in ports.items()}
    try:
        for pool in ("wire-enc", "wire-clear"):
            res = kernel.run(cell.format(pool=pool))
            assert res.status == "ok", res.traceback_text()
            assert kernel.value("(echo_small == small + '!' and echo_big == big + b'!')")
        time.sleep(0.5)
    finally:
        pcap = {name: cap.stop() for name, cap in caps.items()}
    mark = MARK.encode()
    # the control: without encryption the capture holds the marker, both ways
    assert pcap["clear"].count(mark) > 100
    # encrypted: about as many bytes went by, none of them the marker (nor part of it)
    assert len(pcap["enc"]) > 0.8 * len(pcap["clear"])
    assert mark not in pcap["enc"] and mark[:10] not in pcap["enc"]

    # A tampered ciphertext over the real pod connection: the runner flips one byte of its
    # next large frame (its reply, binding a 200 KB value) before it goes out.
    before = kernel.value("enc.status()['boots']")
    tampered = kernel.run(
        "%%flame --pool wire-enc\n"
        "import gc\n"
        "from jupyter_flame.channel.channel import Channel\n"
        "ch = next(o for o in gc.get_objects() if isinstance(o, Channel))\n"
        "real = ch._conn.try_sendv\n"
        "def flip(parts):\n"
        "    parts = [bytes(p) for p in parts]\n"
        "    i = max(range(len(parts)), key=lambda j: len(parts[j]))\n"
        "    if len(parts[i]) > 100_000:\n"
        "        b = bytearray(parts[i]); b[len(b) // 2] ^= 1; parts[i] = bytes(b)\n"
        "        ch._conn.try_sendv = real\n"
        "    return real(parts)\n"
        "ch._conn.try_sendv = flip\n"
        "poisoned = b'p' * 200_000\n")
    assert tampered.status == "error"
    text = tampered.traceback_text()
    assert "AEAD" in text or "tamper" in text, text
    assert kernel.value("'poisoned' in dir()") is False  # nothing of the frame was bound
    res = kernel.run("%%flame --pool wire-enc\nimport os\nos.getpid()\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("enc.status()['boots']") == before + 1  # a new runner took over
