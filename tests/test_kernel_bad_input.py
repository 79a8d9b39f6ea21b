"""Bad input through a real kernel, as a careless user types it: each cell fails before
anything is sent or booted, with an error naming the option, the value and the fix, and leaves
the notebook's namespace, the pools and the process table as they were."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import runner_pids
from .kernel_harness import Kernel

pytestmark = pytest.mark.kernel

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"))
    assert k.run("x = 'untouched'\nfrom jupyter_flame.pool.pool import all_pools").status == "ok"
    yield k
    k.run("%flame shutdown --all")
    k.shutdown()


def names(k: Kernel) -> list[str]:
    return k.value("sorted(n for n in globals() if not n.startswith('_') and n not in "
                   "('In', 'Out', 'exit', 'quit', 'get_ipython'))")


CASES = [
    # (cell, error type, needles every one of which the message must hold)
    ("%%flame --memory 2GB\ny = 1", "ConfigError", ["--memory", "2GB", "Gi"]),
    ("%%flame --cpu -1\ny = 1", "ConfigError", ["--cpu", "-1"]),
    ("%%flame --cpu lots\ny = 1", "ConfigError", ["--cpu", "lots", "500m"]),
    ("%%flame --gpu -1\ny = 1", "ConfigError", ["--gpu", "-1", ">= 0"]),
    ("%%flame --gpu two\ny = 1", "ConfigError", ["--gpu", "two"]),
    ("%%flame --frobnicate\ny = 1", "ConfigError", ["--frobnicate", "%%flame?"]),
    ("%%flame --pool ''\ny = 1", "ConfigError", ["--pool", "''", "pool name"]),
    ("%%flame --timeout -5\ny = 1", "ConfigError", ["--timeout", "-5"]),
    ("%%flame --timeout soon\ny = 1", "ConfigError", ["--timeout", "soon"]),
    ("%%flame --backend nowhere\ny = 1", "ConfigError", ["nowhere", "local"]),
    ("%%flame --env NOEQUALS\ny = 1", "ConfigError", ["--env", "NOEQUALS", "KEY=VALUE"]),
    ("%%flame --toleration gpu:Sometimes\ny = 1", "ConfigError",
     ["--toleration", "Sometimes", "NoSchedule"]),
    ("%%flame\ny = = 1", "SyntaxError", ["invalid syntax"]),
    ("%flame pool p1 --max 0", "ConfigError", ["--max", "0", ">= 1"]),
    ("%flame pool p1 --min -1", "ConfigError", ["--min", "-1", ">= 0"]),
    ("%flame pool p1 --min 5 --max 2", "ConfigError", ["min", "5", "max", "2"]),
    ("%flame pool p1 --max-concurrency 0", "ConfigError", ["--max-concurrency", "0"]),
    ("%flame pool p1 --idle-shutdown-after soon", "ConfigError",
     ["--idle-shutdown-after", "soon", "never"]),
    ("%flame pool p1 --boot-timeout 0", "ConfigError", ["--boot-timeout", "0"]),
    ("%flame pool '' --max 2", "ConfigError", ["''", "pool name"]),
    ("%flame frobnicate", "ConfigError", ["frobnicate", "%flame status"]),
]


@pytest.mark.parametrize("cell,ename,needles", CASES, ids=[c[0].split("\n")[0] for c in CASES])
def test_bad_input_fails_first_and_changes_nothing(kernel: Kernel, cell: str, ename: str,
                                                   needles: list[str]) -> None:
    before_names = names(kernel)
    before_runners = runner_pids()
    res = kernel.run(cell)
    assert res.status == "error", cell
    assert res.error is not None and res.error["ename"] == ename, (cell, res.error)
    text = ANSI.sub("", res.traceback_text())
    missing = [n for n in needles if n not in text]
    assert not missing, f"{cell!r}: the message lacks {missing}:\n{text}"
    assert names(kernel) == before_names
    assert kernel.value("x") == "untouched"
    assert kernel.value("[p.name for p in all_pools()]") == []
    assert runner_pids() == before_runners


def test_then_a_good_cell_runs(kernel: Kernel, tmp_path: Path) -> None:
    res = kernel.run("%%flame\ny = x.upper()\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("y") == "UNTOUCHED"


def test_values_over_the_frame_limit_fail_before_sending_and_results_stay(
        kernel: Kernel) -> None:
    """Pool(max_frame=...) bounds one message both ways: a cell shipping more fails before
    anything is sent (naming the variable, its size, the limit and the fix); a cell whose
    results are larger fails saying so, its results stay on the runner, and the notebook's
    names are untouched."""
    assert kernel.run("from jupyter_flame import Pool\n"
                      "small = Pool('small-frames', 'local', max_frame=1 << 20)\n"
                      "big = b'b' * (2 << 20)\n").status == "ok"
    before = names(kernel)
    res = kernel.run("%%flame --pool small-frames\nn = len(big)\n")
    assert res.status == "error" and res.error is not None
    assert res.error["ename"] == "SerializationError"
    text = ANSI.sub("", res.traceback_text())
    for needle in ("big (2.0 MiB)", "frame limit of 1.0 MiB", "max_frame"):
        assert needle in text, text
    assert names(kernel) == before and kernel.value("small.status()['runners']") == []
    # the other way: the runner's results are over the limit
    res = kernel.run("%%flame --pool small-frames\nout = b'o' * (3 << 20)\nok = 1\n")
    assert res.status == "error" and res.error is not None
    text = ANSI.sub("", res.traceback_text())
    for needle in ("results stay on the runner", "out (3.0 MiB)", "max_frame"):
        assert needle in text, text
    assert names(kernel) == before  # neither out nor ok was bound
    # the same pool still works for what fits, and so does Pool.call
    res = kernel.run("%%flame --pool small-frames\nfits = b'f' * 1000\n")
    assert res.status == "ok", res.traceback_text()
    res = kernel.run("small.call(len, big)")
    assert res.status == "error" and "This call sends" in ANSI.sub("", res.traceback_text())
    kernel.run("small.shutdown()\ndel small, big, fits")
