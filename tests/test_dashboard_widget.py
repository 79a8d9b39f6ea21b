"""The pool dashboard in a real kernel: rendered from real pools, driven through its widgets'
comm messages as a browser drives them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .kernel_harness import Kernel
from .widget_trace import click, models, set_state

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"))
    yield k
    k.run("%flame shutdown")
    k.shutdown()


def _dashboard_html(k: Kernel) -> list[str]:
    return [m["content"]["data"]["state"]["value"] for m in k.comm_log
            if m["msg_type"] in ("comm_open", "comm_msg")
            and "flame-dashboard" in str(m["content"]["data"].get("state", {}).get("value", ""))]


def _until(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_status_dashboard_lists_runners_live_and_its_controls_act(kernel: Kernel) -> None:
    assert kernel.run("%flame pool dash --max 3 --min 1").status == "ok"
    kernel.comm_log.clear()
    res = kernel.run("%flame status")
    assert res.status == "ok", res.traceback_text()
    shown = res.outputs[0].content["data"]
    assert "application/vnd.jupyter.widget-view+json" in shown
    assert "Pool 'dash'" in shown["text/plain"] and "flame-dashboard" in shown["text/html"]
    # the min runner boots: the dashboard updates by itself (events), no cell runs meanwhile
    assert _until(lambda: bool(kernel.run("1") and any(
        "dash-" in v and ">idle<" in v for v in _dashboard_html(kernel)))), \
        _dashboard_html(kernel)[-1:]
    final = _dashboard_html(kernel)[-1]
    assert "1 runner(s) (0 busy)" in final and "pid " in final and "idle 0/1" in final

    # a --bg cell keeps the runner busy: the dashboard shows what it runs
    assert kernel.run("%%flame --pool dash --bg\nimport time\ntime.sleep(1.5)").status == "ok"
    assert _until(lambda: kernel.run("1") is not None and "cell: import time" in
                  _dashboard_html(kernel)[-1] and "busy 1/1" in _dashboard_html(kernel)[-1])

    ints = {state["description"]: cid for cid, state in models(kernel.comm_log,
                                                               "BoundedIntTextModel")}
    buttons = {state["description"]: cid for cid, state in models(kernel.comm_log,
                                                                  "ButtonModel")}
    set_state(kernel.kc, ints["min"], value=2)
    set_state(kernel.kc, ints["max"], value=5)
    click(kernel.kc, buttons["Resize"])
    assert kernel.run("from jupyter_flame.pool import all_pools, get_pool").status == "ok"
    assert _until(lambda: kernel.value("(get_pool('dash').options.min, "
                                       "get_pool('dash').options.max)") == (2, 5))
    assert _until(lambda: kernel.run("1") is not None and "2 runner(s)" in
                  _dashboard_html(kernel)[-1], 15)

    # terminate the runner the dropdown shows first
    runner = kernel.value("sorted(r['id'] for r in get_pool('dash').status()['runners'])[0]")
    dropdowns = {s["description"]: cid for cid, s in models(kernel.comm_log, "DropdownModel")}
    set_state(kernel.kc, dropdowns["runner"], index=0)
    click(kernel.kc, buttons["Terminate runner"])
    assert _until(lambda: runner not in kernel.value(
        "[r['id'] for r in get_pool('dash').status()['runners']]"), 15)

    click(kernel.kc, buttons["Shut down pool"])
    assert _until(lambda: kernel.value("'dash' not in [p.name for p in all_pools()]"), 15)
    assert _until(lambda: kernel.run("1") is not None and "shut down" in
                  _dashboard_html(kernel)[-1] or "no pools" in _dashboard_html(kernel)[-1], 10)


def test_displaying_a_pool_shows_its_dashboard(kernel: Kernel) -> None:
    kernel.comm_log.clear()
    res = kernel.run("from jupyter_flame import Pool\npool = Pool('shown', max=1)\n"
                     "pool.call(sum, [1, 2])\npool")
    assert res.status == "ok", res.traceback_text()
    data = res.outputs[-1].content["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "<b>shown</b>" in data["text/html"] and "Pool 'shown'" in data["text/plain"]
    subs = "len(pool.backend._subscribers)"
    before = kernel.value(subs)
    assert kernel.run("pool.shutdown()").status == "ok"
    assert _until(lambda: kernel.value(subs) < before, 5)  # the dashboard let go
