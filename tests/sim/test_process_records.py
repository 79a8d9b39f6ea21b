"""Container process records of the stand-in's agent (psutil; no stand-in started)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from jupyter_flame.sim.agent.process import kill_recorded, proc_start_time


def test_start_time_identifies_a_live_process_and_not_a_zombie() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        first = proc_start_time(proc.pid)
        assert first is not None and proc_start_time(proc.pid) == first
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while proc_start_time(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # killed, not reaped yet: a zombie
    assert proc_start_time(proc.pid) is None
    proc.wait()
    assert proc_start_time(proc.pid) is None  # reaped: gone


def test_kill_recorded_kills_only_the_recorded_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        (tmp_path / str(proc.pid)).write_text(str(proc_start_time(proc.pid)))
        (tmp_path / str(other.pid)).write_text("not-its-start-time")  # a reused pid
        assert kill_recorded(tmp_path) == [proc.pid]
        assert proc.wait(5) == -9
        assert other.poll() is None
        assert list(tmp_path.iterdir()) == []
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()
