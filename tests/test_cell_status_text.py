"""The text status of a cell that waits for a runner, and ``--quiet`` (real kernel)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernel_harness import Kernel

from jupyter_flame.notebook.cell import waiting_line


def status(runners: list[dict[str, object]], waiting: int = 1) -> dict[str, object]:
    return {"name": "p", "runners": runners, "max": 2, "waiting": waiting}


def runner(state: str, phase: str, reason: str = "", message: str = "") -> dict[str, object]:
    return {"id": "p-1", "state": state, "phase": phase, "reason": reason, "message": message}


@pytest.mark.parametrize(("st", "expected"), [
    (status([]), "waiting for pool 'p' to boot a runner"),
    (status([runner("booting", "scheduling", "Unschedulable", "0/1 nodes are available")]),
     "waiting for a runner of pool 'p': p-1 scheduling (Unschedulable: 0/1 nodes are available)"),
    (status([runner("booting", "pulling", "Pulling")]),
     "waiting for a runner of pool 'p': p-1 pulling (Pulling)"),
    (status([runner("live", "connected")], waiting=2),
     "waiting for a runner of pool 'p': 1 of max 2 runner(s), all busy; 2 cell(s)/call(s) queued"),
])
def test_waiting_line(st: dict[str, object], expected: str) -> None:
    assert waiting_line(st) == expected


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.shutdown()


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_a_cell_that_waits_says_so_unless_quiet(kernel: Kernel, quiet: bool) -> None:
    name = f"one{int(quiet)}"
    assert kernel.run(f"%flame pool {name} --max 1").status == "ok"
    assert kernel.run(f"%%flame --pool {name}\nx = 1\n").status == "ok"  # boot it: warm now
    busy = kernel.run(f"%%flame --pool {name} --bg\nimport time\ntime.sleep(3)\n")
    assert busy.status == "ok", busy.traceback_text()
    flag = " --quiet" if quiet else ""
    res = kernel.run(f"%%flame --pool {name}{flag}\ny = 2\n")
    assert res.status == "ok", res.traceback_text()
    lines = [line for line in res.stderr.splitlines() if line.startswith("jupyter-flame:")]
    if quiet:
        assert lines == []
    else:
        assert lines[0].startswith(f"jupyter-flame: waiting for a runner of pool '{name}': "
                                   "1 of max 1 runner(s), all busy")
        assert lines[-1].startswith(f"jupyter-flame: runner {name}-")
        assert "took the cell after" in lines[-1]
    assert kernel.run(f"%flame shutdown {name}").status == "ok"


@pytest.mark.kernel
def test_a_warm_cell_prints_no_status(kernel: Kernel) -> None:
    assert kernel.run("%%flame\na = 1\n").status == "ok"
    res = kernel.run("%%flame\nb = a + 1\n")
    assert res.status == "ok" and "jupyter-flame:" not in res.stderr
