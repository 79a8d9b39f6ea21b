"""%%flame cells in a real kernel, as a notebook user runs them (local backend)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import runner_pids, wait_gone
from .kernel_harness import Kernel

pytestmark = pytest.mark.kernel

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

SETUP = '''
import sys, json as j
import numpy as np
sys.path.insert(0, "lib")          # helpers.py is not installed anywhere
import helpers as h
from helpers import triple
import jupyter_flame
from jupyter_flame.pool.pool import get_pool
x = 20
data = [1, 2, 3]
table = {"a": 1}
def add(a, b):
    return a + b
class Point:
    def __init__(self, x):
        self.x = x
    def norm(self):
        return abs(self.x)
square = lambda v: v * v
def make_counter(start):
    def bump():
        return start + 1
    return bump
bump = make_counter(41)
unused_big = np.zeros(64 * 2**20, dtype=np.uint8)
'''


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    d = tmp_path_factory.mktemp("notebook")
    (d / "lib").mkdir()
    (d / "lib" / "helpers.py").write_text(
        "FACTOR = 7\n\ndef triple(x):\n    return 3 * x\n")
    k = Kernel(cwd=d)
    res = k.run(SETUP)
    assert res.status == "ok", res.traceback_text()
    yield k
    k.run("%flame shutdown --all")
    k.shutdown()


def test_help_shows_every_option(kernel: Kernel) -> None:
    res = kernel.run("%%flame?\n")
    text = "".join(p.get("data", {}).get("text/plain", "") for p in res.payload)
    for option in ("--pool", "--backend", "--gpu", "--gpu-type", "--cpu", "--memory", "--image",
                   "--node-selector", "--toleration", "--env", "--volume", "--timeout", "--bg",
                   "--skip", "--quiet", "%flame status", "%flame pool", "%flame shutdown",
                   "--max-concurrency", "--idle-shutdown-after"):
        assert option in text, option


def test_cell_reads_notebook_state_and_results_come_back(kernel: Kernel) -> None:
    res = kernel.run(
        "%%flame\n"
        "import os, importlib.util\n"
        "r1 = add(x, 1)\n"
        "r2 = Point(-3).norm()\n"
        "r3 = square(4)\n"
        "r4 = bump()\n"
        "r5 = h.triple(2) + h.FACTOR\n"
        "r6 = triple(5)\n"
        "r7 = j.dumps(table)\n"
        "r8 = int(np.arange(4).sum())\n"
        "helpers_installed = importlib.util.find_spec('helpers') is not None\n"
        "runner_pid = os.getpid()\n"
        "data.append(4)\n"
        "table['b'] = 2\n"
        "for i in range(3):\n"
        "    pass\n"
        "def shout(s):\n"
        "    return s.upper()\n"
        "r1 + r6\n")
    assert res.status == "ok", res.traceback_text()
    assert res.result == "36"  # the last expression is Out[n]
    got = kernel.value("(r1, r2, r3, r4, r5, r6, r7, r8, i, helpers_installed, data, table, "
                       "shout('hi'), runner_pid != os.getpid())")
    assert got == (21, 3, 16, 42, 13, 15, '{"a": 1}', 6, 2, False, [1, 2, 3, 4],
                   {"a": 1, "b": 2}, "HI", True)
    shipped = kernel.value("sorted(get_pool('default').last_transfer['shipped'])")
    assert "unused_big" not in shipped  # only what the cell needs travels
    assert {"add", "x", "h", "triple", "bump", "data", "table"} <= set(shipped)


def test_output_streams_live(kernel: Kernel) -> None:
    res = kernel.run(
        "%%flame\n"
        "import time\n"
        "for i in range(4):\n"
        "    print('tick', i)\n"
        "    time.sleep(0.5)\n")
    assert res.status == "ok", res.traceback_text()
    ticks = [o for o in res.outputs if o.kind == "stream" and "tick" in o.content["text"]]
    assert res.stdout == "".join(f"tick {i}\n" for i in range(4))
    assert len(ticks) >= 3
    assert ticks[-1].at - ticks[0].at > 1.0  # arrived as they happened, not at the end


def test_stderr_streams_into_the_cell(kernel: Kernel) -> None:
    res = kernel.run("%%flame\nimport sys\nprint('to err', file=sys.stderr)\nprint('to out')\n")
    assert res.status == "ok", res.traceback_text()
    assert "to err\n" in res.stderr and "to err" not in res.stdout
    assert res.stdout == "to out\n"


def test_objects_and_classes_come_back(kernel: Kernel) -> None:
    assert kernel.run("class Box:\n    def __init__(self):\n        self.attr = 1\n"
                      "obj = Box()").status == "ok"
    res = kernel.run("%%flame\nobj.attr = 2\nclass C:\n    def twice(self, v):\n"
                     "        return 2 * v\nc = C()\n")
    assert res.status == "ok", res.traceback_text()
    # the name comes back bound to the changed object (other aliases are not updated)
    assert kernel.value("(obj.attr, type(obj).__name__)") == (2, "Box")
    assert kernel.value("(c.twice(21), type(c).__name__, C().twice(1))") == (42, "C", 2)


def test_rich_outputs_and_matplotlib(kernel: Kernel) -> None:
    res = kernel.run(
        "%%flame\n"
        "from IPython.display import display, HTML\n"
        "display(HTML('<b>bold move</b>'))\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 3, 2])\n"
        "plt.show()\n")
    assert res.status == "ok", res.traceback_text()
    displays = res.displays()
    assert any("<b>bold move</b>" in d["data"].get("text/html", "") for d in displays)
    assert any("image/png" in d["data"] for d in displays)


def test_failure_raises_remote_traceback_and_nothing_lands(kernel: Kernel) -> None:
    res = kernel.run(
        "%%flame\n"
        "partial = 1\n"
        "def inner():\n"
        "    raise ValueError('boom 42')\n"
        "inner()\n")
    assert res.status == "error"
    err = res.error
    assert err is not None and err["ename"] == "ValueError"
    tb = res.traceback_text()
    assert "boom 42" in tb
    assert "raise ValueError('boom 42')" in tb and "inner()" in tb  # the cell's own lines
    plain = ANSI.sub("", tb)
    # the frame of inner() names the cell's line 4, where the raise is
    assert re.search(r'File "<flame-cell-\d+>", line 4\b', plain), plain
    assert kernel.value("'partial' in dir() or 'inner' in dir()") is False
    res = kernel.run(
        "try:\n"
        "    get_ipython().run_cell_magic('flame', '', 'raise KeyError(\"k\")')\n"
        "except KeyError as e:\n"
        "    caught = (type(e).__name__, isinstance(e, jupyter_flame.RemoteError))\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("caught") == ("KeyError", True)


@pytest.mark.parametrize(
    ("setup", "name", "type_name"),
    [
        ("fh = open('scratch.txt', 'w')", "fh", "TextIOWrapper"),
        ("open('lines.txt', 'w').write('a\\nb\\n'); rfh = open('lines.txt')", "rfh",
         "TextIOWrapper"),
        ("import threading; lock = threading.Lock()", "lock", "lock"),
        ("gen = (i for i in range(3))", "gen", "generator"),
        ("import socket; sock = socket.socket()", "sock", "socket"),
    ],
)
def test_unpicklable_variable_fails_before_sending(kernel: Kernel, setup: str, name: str,
                                                    type_name: str) -> None:
    assert kernel.run(setup).status == "ok"
    before = kernel.value("get_pool('default').status()['tasks_done']")
    res = kernel.run(f"%%flame\nmarker_{name} = 1\nprint({name})\n")
    assert res.status == "error"
    assert res.error is not None and res.error["ename"] == "SerializationError"
    text = res.traceback_text()
    assert f"'{name}'" in text and type_name in text and f"--skip {name}" in text
    assert kernel.value("get_pool('default').status()['tasks_done']") == before  # nothing sent
    assert kernel.value(f"'marker_{name}' in dir()") is False
    ok = kernel.run(f"%%flame --skip {name}\nskipped_ok = 1\n")
    assert ok.status == "ok", ok.traceback_text()
    if name == "rfh":  # a read-mode file: still the notebook's own file object, unread
        assert kernel.value("(type(rfh).__name__, rfh.tell(), rfh.readline())") == (
            "TextIOWrapper", 0, "a\n")


def test_interrupt_stops_the_remote_cell(kernel: Kernel) -> None:
    kernel.run("%%flame\nwarm = 1\n")
    msg = kernel.start("%%flame\nimport time\ntime.sleep(30)\n")
    time.sleep(1.5)
    t0 = time.monotonic()
    kernel.interrupt()
    res = kernel.collect(msg, timeout=30)
    assert res.status == "error"
    assert res.error is not None and res.error["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 3.0
    assert kernel.run("%%flame\nafter = 5\n").status == "ok"
    assert kernel.value("after") == 5


def test_runner_ignoring_interrupt_is_killed_and_replaced(kernel: Kernel) -> None:
    assert kernel.run("stubborn = jupyter_flame.Pool('stubborn', interrupt_grace=1.5)").status == "ok"
    first = kernel.run("%%flame --pool stubborn\nimport os\nos.getpid()\n")
    assert first.status == "ok", first.traceback_text()
    first_pid = int(first.result or 0)
    assert first_pid in runner_pids(session_only=False)  # a live runner, so wait_gone means it
    msg = kernel.start(
        "%%flame --pool stubborn\n"
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n"
        "    time.sleep(0.05)\n")
    time.sleep(1.5)
    t0 = time.monotonic()
    kernel.interrupt()
    res = kernel.collect(msg, timeout=30)
    assert res.status == "error"
    assert "did not stop" in res.traceback_text()
    assert time.monotonic() - t0 < 6.0
    assert not wait_gone({first_pid}, 10)
    again = kernel.run("%%flame --pool stubborn\nimport os\nos.getpid()\n")
    assert again.status == "ok", again.traceback_text()
    assert int(again.result or 0) != first_pid


def test_killed_runner_surfaces_as_runner_lost(kernel: Kernel) -> None:
    kernel.run("%%flame\nwarm = 1\n")
    t0 = time.monotonic()
    res = kernel.run("%%flame\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert res.status == "error"
    assert res.error is not None and res.error["ename"] == "RunnerLostError"
    assert "SIGKILL" in res.traceback_text()
    assert time.monotonic() - t0 < 2.0
    assert kernel.run("%%flame\nrecovered = 1\n").status == "ok"


def test_background_cell(kernel: Kernel) -> None:
    res = kernel.run(
        "%%flame --bg\n"
        "import time\n"
        "print('bg started')\n"
        "time.sleep(2)\n"
        "bg_value = 99\n"
        "shared = 'runner'\n"
        "print('bg done')\n"
        "'bg result'\n")
    assert res.status == "ok", res.traceback_text()
    assert res.finished - res.started < 1.5
    assert "FlameJob" in (res.result or "")
    # the notebook stays usable meanwhile
    assert kernel.run("shared = 'notebook'; 1 + 1").result == "2"
    assert kernel.value("'bg_value' in dir()") is False
    assert kernel.value("jupyter_flame.notebook.job._jobs[-1].wait(30).status") == "done"
    assert kernel.value("bg_value") == 99
    assert kernel.value("shared") == "notebook"  # rebound meanwhile: the notebook's value stays
    assert kernel.value("jupyter_flame.notebook.job._jobs[-1].conflicts") == {"shared": "runner"}
    assert kernel.value("jupyter_flame.notebook.job._jobs[-1].result()") == "bg result"
    outputs = kernel.value("[o.get('text', '') for o in jupyter_flame.notebook.job._jobs[-1].area.widget.outputs]")
    assert "bg started" in "".join(outputs) and "bg done" in "".join(outputs)


def test_incremental_shipping(kernel: Kernel) -> None:
    assert kernel.run("arr = np.ones(16 * 2**20 // 8)").status == "ok"
    cell = "%%flame\ntotal = float(arr.sum())\n"
    assert kernel.run(cell).status == "ok"
    first = kernel.value("get_pool('default').last_transfer")
    assert "arr" in first["shipped"] and first["shipped"]["arr"] >= 16 * 2**20
    assert kernel.run(cell).status == "ok"
    second = kernel.value("get_pool('default').last_transfer")
    assert "arr" not in second["shipped"] and "arr" in second["cached"]
    assert kernel.run("arr[0] = 5").status == "ok"
    assert kernel.run(cell).status == "ok"
    third = kernel.value("get_pool('default').last_transfer")
    assert "arr" in third["shipped"]
    assert kernel.value("total") == 16 * 2**20 // 8 + 4
    status = kernel.run("%flame status")
    assert "last cell shipped: arr" in status.text


def test_large_variable_warns_before_sending(kernel: Kernel) -> None:
    assert kernel.run("%config FlameMagics.warn_bytes = 1_000_000\n"
                      "warn_me = np.zeros(2_000_000, dtype=np.uint8)").status == "ok"
    res = kernel.run("%%flame\nn = warn_me.size\n")
    assert res.status == "ok", res.traceback_text()
    assert "Sending 'warn_me' (numpy.ndarray, 1.9 MiB) to the runner" in res.stderr
    assert kernel.run("%config FlameMagics.warn_bytes = 1 << 30").status == "ok"


def test_kubernetes_outside_a_pod_says_what_to_add(kernel: Kernel) -> None:
    res = kernel.run("%%flame --backend kubernetes\n1\n")
    assert res.status == "error"
    text = res.traceback_text()
    assert "POD_NAME" in text and "fieldRef" in text and "metadata.name" in text


def test_jupyter_flame_list_shows_local_runners(kernel: Kernel) -> None:
    import json
    import subprocess

    res = kernel.run("%%flame\nimport os\nos.getpid()\n")
    runner = int(res.result or 0)
    out = subprocess.run(["jupyter", "flame", "list", "--local-only", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert any(row["pid"] == runner and row["pool"] == "default" for row in rows)


def test_status_pool_and_shutdown_commands(kernel: Kernel) -> None:
    res = kernel.run("%flame pool crew --max 2 --max-concurrency 2 --idle-shutdown-after 60")
    assert res.status == "ok", res.traceback_text()
    assert kernel.run("%%flame --pool crew\nz = 1\n").status == "ok"
    status = kernel.run("%flame status").text
    assert "Pool 'crew'" in status and "max=2 max_concurrency=2" in status
    assert kernel.run("%flame pool crew --max 3").status == "ok"
    assert "max=3" in kernel.run("%flame status").text
    assert kernel.run("%flame shutdown crew").status == "ok"
    assert "Pool 'crew'" not in kernel.run("%flame status").text
    bad = kernel.run("%flame pool crew2 --max 0")
    assert bad.status == "error" and "--max '0'" in bad.traceback_text()


def test_gpu_request_without_gpus_says_so(tmp_path: Path) -> None:
    """Runs on GPU machines too: the kernel gets a PATH without nvidia-smi and no NVML."""
    empty = tmp_path / "no-gpu-bin"
    empty.mkdir()
    k = Kernel(cwd=tmp_path, env={"PATH": str(empty)})
    try:
        assert k.run("import sys\nsys.modules['pynvml'] = None  # NVML off").status == "ok"
        res = k.run("%%flame --gpu 1\nimport os\n")
        assert res.status == "error"
        assert res.error is not None and res.error["ename"] == "ConfigError"
        text = ANSI.sub("", res.traceback_text())
        assert "--gpu 1 asks for a GPU, but this machine has none (nvidia-smi not found)" in text
        # the pool the failed cell made is gone, not left in %flame status
        status = ANSI.sub("", k.run("%flame status").text)
        assert "gpu=1" not in status, status
        assert k.value("__import__('jupyter_flame').pool.pool.all_pools()") == []
        k.run("%flame shutdown --all")
    finally:
        k.shutdown()


def test_runner_exits_when_kernel_is_killed(tmp_path: Path) -> None:
    k = Kernel(cwd=tmp_path)
    res = k.run("%%flame\nimport os\nos.getpid()\n")
    assert res.status == "ok", res.traceback_text()
    runner = int(res.result or 0)
    k.kill()
    assert wait_gone({runner}, 15) == set()


FAKE_SMI = """#!/bin/sh
cat <<'EOF'
0, GPU-aaaa0000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559
1, GPU-bbbb1111-1111-1111-1111-111111111111, NVIDIA H100 80GB HBM3, 81559
EOF
"""


def test_local_gpus_are_exclusive(tmp_path: Path) -> None:
    """A (fake, external) nvidia-smi reports two GPUs: runners get them exclusively."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    k = Kernel(cwd=tmp_path, env=env)
    try:
        one = k.run("%%flame --gpu 1\nimport os\nos.environ['CUDA_VISIBLE_DEVICES']\n")
        assert one.status == "ok", one.traceback_text()
        assert one.result == "'GPU-aaaa0000-0000-0000-0000-000000000000'"
        # the idle gpu=1 runner still holds its GPU: two more cannot be had
        two = k.run("%%flame --gpu 2\nimport os\n")
        assert two.status == "error"
        text = two.traceback_text()
        assert "asks for 2 GPUs but only 1" in text and "%flame shutdown" in text
        k.run("%flame shutdown --all")
        both = k.run("%%flame --gpu 2\nimport os\nos.environ['CUDA_VISIBLE_DEVICES']\n")
        assert both.status == "ok", both.traceback_text()
        assert both.result is not None and "aaaa" in both.result and "bbbb" in both.result
        plain = k.run("%%flame\nimport os\nos.environ.get('CUDA_VISIBLE_DEVICES')\n")
        assert plain.status == "ok" and plain.result is None  # no --gpu: env unchanged (unset)
        k.run("%flame shutdown --all")
    finally:
        k.shutdown()
