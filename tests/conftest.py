"""Shared fixtures. The session fails if any runner process outlives the tests."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .sim_harness import Sim

pytest_plugins = ["pytest_jupyter.jupyter_server"]

#: Every process this test session starts inherits this marker, so the leftover check only
#: looks at runners of this session (another session may run tests beside it).
SESSION_MARKER = f"JUPYTER_FLAME_TEST_SESSION={uuid.uuid4().hex}"
os.environ["JUPYTER_FLAME_TEST_SESSION"] = SESSION_MARKER.split("=", 1)[1]


def _ours(entry: Path) -> bool:
    try:
        return SESSION_MARKER.encode() in (entry / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def runner_pids(session_only: bool = True) -> set[int]:
    """Pids of live ``python -m jupyter_flame.runner`` processes (of this test session)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyter_flame.runner" in cmd and b"-m" in cmd:
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: already dead
                continue
            if session_only and not _ours(entry):
                continue
            pids.add(int(entry.name))
    return pids


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # exists but /proc could not tell more (raced with its exit: unlikely)
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


#: Environment variable carrying a test's marker into the processes it starts (see ``mark``).
MARK = "JUPYTER_FLAME_TEST_MARK"


def marked_processes(token: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``MARK=token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARK}={token}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        if pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def mark() -> Iterator[str]:
    """A marker for the environment of this test's processes; fails the test if any of them
    is still running 5 s after it (and kills them)."""
    token = uuid.uuid4().hex
    yield token
    deadline = time.monotonic() + 5.0
    while (left := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive &= runner_pids(session_only=False)
        if alive:
            time.sleep(0.1)
    return alive


def wait_dead(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of ``pids`` runs (any process, not only runners); those still alive."""
    deadline = time.monotonic() + timeout
    alive = {p for p in pids if pid_alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if pid_alive(p)}
    return alive


@pytest.fixture(scope="session", autouse=True)
def no_runner_left_behind() -> Iterator[None]:
    yield
    leftover = wait_gone(runner_pids(), timeout=20)
    for pid in leftover:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not leftover, f"runner processes left behind: {sorted(leftover)}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The local Kubernetes stand-in, one per test module that asks for it."""
    s = Sim(tmp_path_factory.mktemp("sim"))
    yield s
    s.down()


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "nb"
    d.mkdir()
    return d
