"""The lifecycle widget under %%flame cells, in real kernels with real local runners, read from
the comm messages a frontend receives (no browser)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel_harness import Kernel
from .widget_trace import cancel_button, click, html_values, models, steps

pytestmark = pytest.mark.kernel

ORDER = ["queued", "booting", "shipping", "running", "returning", "merging", "done"]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"))
    yield k
    k.run("%flame shutdown")
    k.shutdown()


def _widget_shown(log: list[dict[str, object]]) -> bool:
    return any("application/vnd.jupyter.widget-view+json" in m["content"].get("data", {})
               for m in log if "display_data" in m["msg_type"])  # type: ignore[index, union-attr]


def _in_order(seen: list[str]) -> bool:
    idx = [ORDER.index(s) for s in seen]
    return idx == sorted(idx)


def test_phases_in_order_then_one_line_summary(kernel: Kernel) -> None:
    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wphase\nimport time\ntime.sleep(1.5)\nprint('out')\nz = 7\n")
    assert res.status == "ok", res.traceback_text()
    seen = steps(html_values(kernel.comm_log))
    # a fresh pool: the cell waits for a runner to boot, then runs for 1.5 s (ticking)
    assert seen[0] in ("queued", "booting") and seen[-1] == "done", seen
    assert "booting" in seen and "running" in seen and _in_order(seen), seen
    final = html_values(kernel.comm_log)[-1]
    assert "done in" in final and "boot" in final and "run 1." in final and "process" in final
    # the widget is displayed before the cell's own output, and updated in place
    kinds = [o.kind for o in res.outputs]
    assert kinds[0] == "display_data" and "stream" in kinds
    assert kinds.index("display_data") < kinds.index("stream")
    assert res.outputs[0].content["data"]["text/plain"].startswith("flame: queued")
    # a cell still going after 0.25 s gets the live widget in the same output
    upgrades = [o.content["data"] for o in res.outputs if o.kind == "update_display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in d for d in upgrades)
    assert upgrades[-1]["text/plain"].startswith("flame: done in")
    assert kernel.value("z") == 7


def test_running_cell_ticks_and_shows_runner_stats(kernel: Kernel) -> None:
    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wphase\nimport time\nt = time.time()\n"
                     "while time.time() - t < 4.5: pass\n")
    assert res.status == "ok", res.traceback_text()
    running = [v for v in html_values(kernel.comm_log) if "running on" in v]
    assert len({v for v in running}) >= 3  # the elapsed seconds tick while it runs
    # a heartbeat (every 2 s) brought the runner's own CPU and memory readings
    assert any("cpu " in v and "rss " in v for v in running), running[-1]


def test_cancel_button_interrupts_a_foreground_cell(kernel: Kernel) -> None:
    kernel.comm_log.clear()
    msg_id = kernel.start("%%flame --pool wphase\nimport time\ntime.sleep(60)\n")
    deadline = time.monotonic() + 30
    button = None
    while time.monotonic() < deadline:  # read IOPub as a browser does until it runs
        try:
            msg = kernel.kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["msg_type"].startswith("comm_") or "display_data" in msg["msg_type"]:
            kernel.comm_log.append(msg)
        button = cancel_button(kernel.comm_log)
        # a browser can click only once the output shows the widget (its view displayed)
        if button and "running" in steps(html_values(kernel.comm_log)) and _widget_shown(
                kernel.comm_log):
            break
    assert button is not None
    t0 = time.monotonic()
    click(kernel.kc, button)  # the kernel's main thread is busy in the cell meanwhile
    res = kernel.collect(msg_id, timeout=30)
    assert res.status == "error" and res.error is not None
    assert res.error["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 10
    assert steps(html_values(kernel.comm_log))[-1] == "cancelled"
    assert kernel.run("%%flame --pool wphase\nprint('next')").stdout.strip() == "next"


def test_quiet_and_widgets_off(kernel: Kernel, tmp_path: Path) -> None:
    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wphase --quiet\nprint(1)")
    assert [o.kind for o in res.outputs] == ["stream"] and not html_values(kernel.comm_log)
    assert not models(kernel.comm_log, "HTMLModel")
    k = Kernel(cwd=tmp_path, env={"JUPYTER_FLAME_WIDGETS": "0"})
    try:
        res = k.run("%%flame\nprint('hello')")
        assert res.status == "ok", res.traceback_text()
        assert not [m for m in k.comm_log if m["msg_type"].startswith("comm")]  # no widget
        first = res.outputs[0].content["data"]
        assert set(first) == {"text/plain", "text/html"}
        updates = [o for o in res.outputs if o.kind == "update_display_data"]
        assert updates and "done in" in updates[-1].content["data"]["text/plain"]
    finally:
        k.run("%flame shutdown")
        k.shutdown()


def test_a_quick_cell_stays_html(kernel: Kernel) -> None:
    kernel.run("%%flame --pool wphase\n1")
    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wphase\nv = 5")
    assert res.status == "ok" and not models(kernel.comm_log, "HTMLModel")  # no widget models
    final = [o for o in res.outputs if o.kind == "update_display_data"][-1].content["data"]
    assert set(final) == {"text/plain", "text/html"} and "done in" in final["text/html"]


def test_no_growth_in_listeners_or_comms(kernel: Kernel) -> None:
    kernel.run("%%flame --pool wphase\n1")
    probe = ("from jupyter_flame.pool.registry import get_pool\n"
             "print(repr((len(get_pool('wphase').backend._subscribers), "
             "len(get_ipython().kernel.comm_manager.comms))))")
    res = kernel.run(probe)
    subs0, comms0 = eval(res.stdout.strip())
    for i in range(200):  # most quick, some long enough for the widget
        code = "%%flame --pool wphase\nimport time\ntime.sleep(0.3)" if i % 20 == 0 else \
            "%%flame --pool wphase\n1"
        assert kernel.run(code).status == "ok"
    subs1, comms1 = eval(kernel.run(probe).stdout.strip())
    assert subs1 == subs0 and comms1 <= comms0, (subs0, comms0, subs1, comms1)


def test_bg_cell_widget_follows_and_cancels(kernel: Kernel) -> None:
    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wbg --bg\nimport time\ntime.sleep(60)\n")
    assert res.status == "ok"
    deadline = time.monotonic() + 30
    while not (cancel_button(kernel.comm_log) and _widget_shown(kernel.comm_log) and "running"
               in steps(html_values(kernel.comm_log))) and time.monotonic() < deadline:
        kernel.run("pass")  # the notebook is free meanwhile; IOPub keeps the widget current
    button = cancel_button(kernel.comm_log)
    assert button is not None
    click(kernel.kc, button)
    deadline = time.monotonic() + 20
    while steps(html_values(kernel.comm_log))[-1] != "cancelled" and time.monotonic() < deadline:
        kernel.run("import time; time.sleep(0.2)")
    seen = steps(html_values(kernel.comm_log))
    assert seen[-1] == "cancelled", seen


def test_terminal_ipython_prints_a_line_per_phase(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("get_ipython().run_line_magic('load_ext', 'jupyter_flame'); "
            "get_ipython().run_cell_magic('flame', '', 'import time; time.sleep(1.2); "
            "print(\"out\")')")
    proc = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "-c", code],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("flame: ")]
    assert proc.stdout.strip().endswith("out"), (proc.stdout, proc.stderr)
    assert lines[0].startswith("flame: queued") and lines[-1].startswith("flame: done in")
    assert any(ln.startswith("flame: booting a runner") for ln in lines), lines
    assert any(ln.startswith("flame: running on") for ln in lines), lines
