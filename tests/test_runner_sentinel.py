"""A local runner dies with its kernel even when its cell is stuck in C code holding the GIL
(its Python-level liveness checks cannot run then): the sentinel kills the runner's whole
process group, the cell's own child processes included."""

from __future__ import annotations

import time

import pytest

from .conftest import pid_alive, wait_dead
from .kernel_harness import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

STUCK = """%%flame --bg --pool stuck
import os, re, subprocess
child = subprocess.Popen(['sleep', '600'])
with open('pids.txt', 'w') as f:
    f.write(f'{os.getpid()} {child.pid}')
re.match(r'(a+)+$', 'a' * 40 + 'b')   # catastrophic backtracking: minutes in C, GIL held
"""


def test_runner_stuck_in_c_dies_with_its_sigkilled_kernel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kernel = Kernel(cwd=tmp_path)
    killed = False
    try:
        assert kernel.run(STUCK).status == "ok"
        deadline = time.monotonic() + 60
        while not (tmp_path / "pids.txt").exists() or not (tmp_path / "pids.txt").read_text():
            assert time.monotonic() < deadline, "the cell never started"
            time.sleep(0.1)
        runner, child = map(int, (tmp_path / "pids.txt").read_text().split())
        time.sleep(1.0)  # well inside the regex now
        assert pid_alive(runner) and pid_alive(child)
        kernel.kill()
        killed = True
        left = wait_dead({runner, child}, 15)
        assert runner not in left, "the runner outlived its kernel"
        assert child not in left, "the cell's child outlived its kernel"
    finally:
        if not killed:
            kernel.shutdown()
