"""The runner process, end to end: real ``python -m jupyter_flame.runner`` processes."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from jupyter_flame.channel.protocol import (
    ClearOutput,
    Display,
    IdleReply,
    IdleRequest,
    Interrupt,
    Ping,
    Pong,
    Shutdown,
)
from jupyter_flame.values.shipping import pack, unpack

from .conftest import pid_alive
from .runner_harness import RunnerHarness

pytestmark = pytest.mark.timeout(60)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


_SCALE = 3


def _scaled(v: int) -> int:
    return v * _SCALE


# --- cells --------------------------------------------------------------------------------------
@run_async
async def test_value_prints_and_startup_time() -> None:
    async with RunnerHarness() as h:
        r = await h.execute("print(x + 1)\nx * 2", {"x": 20})
        first_done = time.monotonic() - h.spawned_at
        assert r.done.ok, r.error_text()
        assert r.stdout == "21\n"
        assert r.done.has_value and r.value() == 40
        assert h.connected_at - h.spawned_at < 2.0  # typically ~0.15 s
        assert first_done < 5.0  # typically ~0.35 s
        r = await h.execute("y = 1\ny;")
        assert r.done.ok and not r.done.has_value and set(r.names()) == {"y"}
        r = await h.execute("x = 1")
        assert r.done.ok and not r.done.has_value


@run_async
async def test_streams_arrive_live_and_in_order() -> None:
    async with RunnerHarness() as h:
        src = (
            "import sys, time\n"
            "for i in range(4):\n"
            "    print('out', i)\n"
            "    print('err', i, file=sys.stderr)\n"
            "    time.sleep(0.3)\n"
            "sys.stdout.write('partial')\n"
        )
        r = await h.execute(src)
        assert r.done.ok, r.error_text()
        texts = "".join(f"[{o.msg.name}]{o.msg.text}" for o in r.outputs)
        expected = "".join(f"[stdout]out {i}\n[stderr]err {i}\n" for i in range(4))
        assert texts == expected + "[stdout]partial"
        firsts = [o.at - r.sent_at for o in r.outputs if o.msg.text.startswith("out")]
        assert firsts[-1] - firsts[0] > 0.6  # spread in time, not one burst at the end
        assert all(b - a > 0.15 for a, b in zip(firsts, firsts[1:], strict=False))


@run_async
async def test_displays_html_updates_and_figures() -> None:
    async with RunnerHarness() as h:
        src = (
            "from IPython.display import HTML, display, clear_output, update_display\n"
            "display(HTML('<b>hi</b>'))\n"
            "display('v1', display_id='d1')\n"
            "update_display('v2', display_id='d1')\n"
            "clear_output(wait=True)\n"
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 2, 3])\n"
        )
        r = await h.execute(src)
        assert r.done.ok, r.error_text()
        kinds = [type(o.msg).__name__ for o in r.outputs]
        assert kinds == ["Display", "Display", "Display", "ClearOutput", "Display"], kinds
        html, first, update, clear, fig = (o.msg for o in r.outputs)
        assert isinstance(html, Display) and html.data["text/html"] == "<b>hi</b>"
        assert first.display_id == "d1" and not first.update
        assert update.display_id == "d1" and update.update and "v2" in update.data["text/plain"]
        assert isinstance(clear, ClearOutput) and clear.wait
        assert isinstance(fig, Display) and "image/png" in fig.data


@run_async
async def test_bound_names_in_place_changes_and_deletes() -> None:
    import types

    import numpy as np

    async with RunnerHarness() as h:
        shipped = {
            "lst": [0], "d": {"a": 1}, "obj": types.SimpleNamespace(attr=1),
            "arr": np.zeros(3), "same": [1, 2], "gone": 5, "rebound": 1, "scaled": _scaled,
        }
        src = (
            "lst.append(1)\nd['b'] = 2\nobj.attr = 2\narr[0] = 7\n"
            "new = len(same) + scaled(0)\ndel gone\nrebound = 2\n_private = 3\n"
            "import math\n_ = 1\n__ = 2\n"
            "def f(v):\n    return v + new\n"
        )
        r = await h.execute(src, shipped)
        assert r.done.ok, r.error_text()
        names = r.names()
        assert set(names) == {"lst", "d", "obj", "arr", "new", "rebound", "_private", "math", "f"}
        assert names["lst"] == [0, 1] and names["d"] == {"a": 1, "b": 2}
        assert names["obj"].attr == 2 and names["arr"][0] == 7
        assert names["f"](1) == 3
        assert r.done.deleted == ("gone",)
        assert "same" in r.done.cache and "gone" not in r.done.cache
        assert "scaled" in r.done.cache  # unchanged, although its pickle is not byte-stable


@run_async
async def test_unpicklable_binding_is_skipped_with_warning() -> None:
    async with RunnerHarness() as h:
        r = await h.execute("import threading\ng = (i for i in range(3))\nlock = threading.Lock()\nok = 1")
        assert r.done.ok, r.error_text()
        assert set(r.names()) == {"ok", "threading"}
        lines = r.stderr.splitlines()
        assert any(ln.startswith("jupyter-flame: 'g' (generator) stays on the runner: cannot pickle")
                   for ln in lines), lines
        assert any("'lock'" in ln for ln in lines), lines


@run_async
async def test_failure_returns_error_with_cell_lines_and_no_names() -> None:
    async with RunnerHarness() as h:
        src = "a = 1\nlst.append(2)\ndef f():\n    raise ValueError('bad value')\nf()\n"
        r = await h.execute(src, {"lst": [1]})
        assert not r.done.ok and r.done.names == {} and r.done.deleted == ()
        err = r.done.error
        assert err is not None and err.ename == "ValueError" and err.evalue == "bad value"
        assert err.module == "builtins"
        text = "\n".join(err.traceback)
        assert 'File "<flame-cell-1>", line 5, in <module>' in text
        assert 'File "<flame-cell-1>", line 4, in f' in text
        assert "raise ValueError('bad value')" in text  # the cell's own source lines
        assert "runner.py" not in text and "_execution.py" not in text
        assert err.exc is not None
        exc = unpack(err.exc)
        assert isinstance(exc, ValueError) and exc.args == ("bad value",)
        assert "lst" not in r.done.cache  # changed in place by a failed cell: stale

        r = await h.execute("x = (\n")
        assert not r.done.ok and r.done.error is not None
        assert r.done.error.ename == "SyntaxError"


@run_async
async def test_value_cache_serves_and_reports_misses() -> None:
    async with RunnerHarness() as h:
        p = pack([1, 2, 3], name="data")
        r = await h.execute("total = sum(data)", packed={"data": p})
        assert r.done.ok and r.done.cache["data"] == p.digest
        total_digest = r.done.cache["total"]
        r = await h.execute("print(sum(data), total)", cached={"data": p.digest, "total": total_digest})
        assert r.done.ok, r.error_text()
        assert r.stdout == "6 6\n" and r.done.names == {}

        r = await h.execute("print('ran')\nnope", cached={"data": p.digest, "nope": "0" * 32,
                                                             "stale": "1" * 32})
        assert not r.done.ok and r.stdout == ""
        assert r.done.error is not None and r.done.error.ename == "FlameCacheMiss"
        assert r.done.error.evalue == "nope, stale" and r.done.error.traceback == []

        r = await h.execute("data.append(4)\nraise RuntimeError", cached={"data": p.digest})
        assert not r.done.ok and "data" not in r.done.cache and "total" in r.done.cache


@run_async
async def test_call() -> None:
    async with RunnerHarness() as h:
        r = await h.call(divmod, 17, 5)
        assert r.done.ok and r.value() == (3, 2)
        r = await h.call(int, "x")
        assert not r.done.ok and r.done.error is not None and r.done.error.ename == "ValueError"
        assert isinstance(unpack(r.done.error.exc), ValueError)  # type: ignore[arg-type]


@run_async
async def test_magics_shell_and_top_level_await() -> None:
    async with RunnerHarness() as h:
        r = await h.execute("%time z = 1 + 1\n!echo hi\n")
        assert r.done.ok, r.error_text()
        assert "Wall time" in r.stdout and "hi" in r.stdout and r.names() == {"z": 2}
        r = await h.execute("import asyncio\nawait asyncio.sleep(0.05)\nw = 3\nawait asyncio.sleep(0, 'v')")
        assert r.done.ok, r.error_text()
        assert r.value() == "v" and r.names()["w"] == 3
        r = await h.execute("%%timeit -n1 -r1\nsum(range(10))\n")
        assert r.done.ok and "per loop" in r.stdout, r.error_text()


@run_async
async def test_input_fails_and_key_is_not_inherited() -> None:
    async with RunnerHarness() as h:
        r = await h.execute("import os\nkey = os.environ.get('JUPYTER_FLAME_KEY')\nkey")
        assert r.done.ok and r.value() is None
        r = await h.execute("input('name? ')")
        assert not r.done.ok and r.done.error is not None
        assert "input() is not available on a runner" in r.done.error.evalue


@run_async
async def test_thread_and_child_process_output_reach_the_task() -> None:
    async with RunnerHarness() as h:
        src = (
            "import subprocess, threading, time\n"
            "threading.Thread(target=lambda: print('from thread')).start()\n"
            "time.sleep(0.2)\n"
            "subprocess.run(['echo', 'from child'])\n"
            "time.sleep(0.2)\n"
        )
        r = await h.execute(src)
        assert r.done.ok, r.error_text()
        assert "from thread\n" in r.stdout and "from child\n" in r.stdout


@run_async
async def test_unpicklable_value_is_displayed_instead() -> None:
    async with RunnerHarness() as h:
        r = await h.execute("import threading\nthreading.Lock()")
        assert r.done.ok and not r.done.has_value
        assert "stays on the runner" in r.stderr
        assert any("lock" in d.data["text/plain"] for d in r.displays)


# --- concurrency and interrupts -----------------------------------------------------------------
@run_async
async def test_interrupt_main_thread_sleep() -> None:
    async with RunnerHarness() as h:
        task = h.next_task()
        from jupyter_flame.channel.protocol import Execute

        await h.submit(Execute(task, "import time\nprint('start', flush=True)\ntime.sleep(30)\n"))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await h.send(Interrupt(task))
        r = await h.result(task, timeout=5)
        assert time.monotonic() - t0 < 2.0
        assert not r.done.ok and r.done.error is not None
        assert r.done.error.ename == "KeyboardInterrupt" and r.stdout == "start\n"
        text = "\n".join(r.done.error.traceback)
        assert 'File "<flame-cell>", line 3' in text and "_lifecycle.py" not in text, text
        r = await h.execute("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n1 + 1")
        assert r.value() == 2  # the runner is fine afterwards, and takes its SIGINT back:
        task = h.next_task()
        await h.submit(Execute(task, "import time\ntime.sleep(30)\n"))
        await asyncio.sleep(0.3)
        await h.send(Interrupt(task))
        r = await h.result(task, timeout=3)
        assert r.done.error is not None and r.done.error.ename == "KeyboardInterrupt"


@run_async
async def test_concurrent_tasks_and_worker_interrupt() -> None:
    from jupyter_flame.channel.protocol import Execute

    async with RunnerHarness(configure={"max_concurrency": 2}) as h:
        a, b = h.next_task(), h.next_task()
        t0 = time.monotonic()
        loop = "import time\nfor i in range(4):\n    print({!r}, i)\n    time.sleep(0.25)\n"
        await h.submit(Execute(a, loop.format("a")))
        await h.submit(Execute(b, loop.format("b")))
        ra, rb = await h.result(a), await h.result(b)
        assert time.monotonic() - t0 < 1.7  # side by side (one after the other: over 2 s)
        assert ra.stdout == "a 0\na 1\na 2\na 3\n" and rb.stdout == "b 0\nb 1\nb 2\nb 3\n"

        busy = "n = 0\nwhile True:\n    n += 1\n"
        a, b = h.next_task(), h.next_task()
        await h.submit(Execute(a, "import time\ntime.sleep(30)"))
        await h.submit(Execute(b, busy))  # runs in a worker thread
        await asyncio.sleep(0.3)
        for task in (b, a):
            await h.send(Interrupt(task))
        for task in (a, b):
            r = await h.result(task, timeout=3)
            assert r.done.error is not None and r.done.error.ename == "KeyboardInterrupt"


# --- lifecycle ----------------------------------------------------------------------------------
@run_async
async def test_exits_when_parent_closes_and_kills_children() -> None:
    from jupyter_flame.channel.protocol import Execute

    async with RunnerHarness() as h:
        task = h.next_task()
        src = ("import subprocess, time\np = subprocess.Popen(['sleep', '60'])\n"
               "print(p.pid, flush=True)\ntime.sleep(60)\n")
        await h.submit(Execute(task, src))
        while not h._outputs[task]:
            await asyncio.sleep(0.05)
        child = int(h._outputs[task][0].msg.text)
        assert h.channel is not None
        h.channel.close()
        assert await h.wait_exit(5) == 5
        assert await _wait_dead(child, 3)


@run_async
async def test_exits_when_pings_stop() -> None:
    from jupyter_flame.channel.protocol import Execute

    async with RunnerHarness(heartbeat=None, configure={"parent_timeout": 1.5}) as h:
        await h.send(Ping(42.0))
        while not h.pongs:
            await asyncio.sleep(0.02)
        pong = h.pongs[0].msg
        assert isinstance(pong, Pong) and pong.sent == 42.0
        # the heartbeat reply carries the runner's own resource use (psutil)
        assert pong.stats["rss"] > 10_000_000 and pong.stats["cpu_percent"] >= 0
        assert pong.stats["gpus"] == []  # no CUDA_VISIBLE_DEVICES here
        await h.submit(Execute(h.next_task(), "import time\ntime.sleep(60)"))  # main thread stuck
        t0 = time.monotonic()
        assert await h.wait_exit(6) == 5
        assert time.monotonic() - t0 < 4.0
        assert any("parent_timeout" in line for line in h.log), h.log


@run_async
async def test_idle_request_and_exit() -> None:
    async with RunnerHarness(configure={"idle_shutdown_after": 0.5}) as h:
        req = await h.expect_control(IdleRequest, timeout=5)
        assert req.idle_for >= 0.5
        await h.send(IdleReply(False))  # not now: the idle clock restarts
        t0 = time.monotonic()
        await h.expect_control(IdleRequest, timeout=5)
        assert time.monotonic() - t0 >= 0.4
        await h.send(IdleReply(True))
        assert await h.wait_exit(5) == 0


@run_async
async def test_single_use_exits_after_its_task() -> None:
    async with RunnerHarness(configure={"single_use": True}) as h:
        r = await h.execute("7")
        assert r.value() == 7
        assert await h.wait_exit(5) == 0


@run_async
async def test_shutdown_interrupts_and_exits() -> None:
    from jupyter_flame.channel.protocol import Execute

    async with RunnerHarness() as h:
        task = h.next_task()
        await h.submit(Execute(task, "import time\ntime.sleep(30)"))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await h.send(Shutdown("test"))
        r = await h.result(task, timeout=5)
        assert r.done.error is not None and r.done.error.ename == "KeyboardInterrupt"
        assert await h.wait_exit(5) == 0
        assert time.monotonic() - t0 < 3.0


@run_async
async def test_sigterm_exits_even_when_main_thread_is_busy() -> None:
    import signal

    from jupyter_flame.channel.protocol import Execute

    async with RunnerHarness() as h:
        await h.submit(Execute(h.next_task(), "import time\ntime.sleep(60)"))
        await asyncio.sleep(0.3)
        assert h.proc is not None
        h.proc.send_signal(signal.SIGTERM)
        assert await h.wait_exit(5) == 0


@run_async
async def test_exit_3_when_parent_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    h = RunnerHarness(boot_timeout=0.5)
    try:
        env = {**os.environ, "JUPYTER_FLAME_PARENT": f"127.0.0.1:{port}",
               "JUPYTER_FLAME_RUNNER_ID": h.runner_id, "JUPYTER_FLAME_POOL": "test",
               "JUPYTER_FLAME_KEY": h.key.hex(), "JUPYTER_FLAME_BOOT_TIMEOUT": "0.5"}
        t0 = time.monotonic()
        await h.spawn(env)
        assert await h.wait_exit(10) == 3
        assert time.monotonic() - t0 < 5.0
        await asyncio.sleep(0.1)
        assert any("cannot reach the parent" in line for line in h.log), h.log
    finally:
        await h.close()


@run_async
async def test_exit_4_on_wrong_key() -> None:
    h = RunnerHarness(env={"JUPYTER_FLAME_KEY": os.urandom(32).hex()})
    try:
        await h.start(connect=False)
        assert await h.wait_exit(10) == 4
    finally:
        await h.close()


def test_value_cache_is_lru_by_bytes_and_drops_stale_aliases() -> None:
    from jupyter_flame.runner.value_cache import Entry as _Entry
    from jupyter_flame.runner.value_cache import ValueCache

    cache = ValueCache(max_bytes=100)
    a, b, c = [1], [2], [3]
    cache.put("a", _Entry("da", a, 40, "da"))
    cache.put("b", _Entry("db", b, 40, "db"))
    assert cache.take({"a": "da"})[1] == []  # a is now the most recently used
    cache.put("c", _Entry("dc", c, 40, "dc"))
    assert cache.view() == {"a": "da", "c": "dc"} and cache.nbytes == 80
    found, missing = cache.take({"a": "da", "b": "db", "c": "other"})
    assert list(found) == ["a"] and missing == ["b", "c"]
    cache.put("alias", _Entry("dx", a, 10, "dx"))  # a changed in place under another name
    assert "a" not in cache.view() and cache.view()["alias"] == "dx"
    cache.put("huge", _Entry("dh", [], 1000, "dh"))
    assert "huge" not in cache.view()


@run_async
async def test_cache_bound_from_environment() -> None:
    async with RunnerHarness(env={"JUPYTER_FLAME_CACHE_BYTES": "2000"}) as h:
        r = await h.execute("small = b'x' * 100\nbig = b'x' * 5000")
        assert r.done.ok and "small" in r.done.cache and "big" not in r.done.cache
        assert set(r.names()) == {"small", "big"}


# --- the runner's internals, in process ---------------------------------------------------------
def _in_process_runner() -> Any:
    from jupyter_flame.runner._lifecycle import Runner
    from jupyter_flame.runner.env import RunnerEnv

    return Runner(RunnerEnv("127.0.0.1", 1, "r-in-process", "test", b"k" * 32))


def test_done_on_a_closed_channel_is_dropped_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_flame.channel.protocol import Done, Execute
    from jupyter_flame.errors import ChannelClosedError
    from jupyter_flame.runner.jobs import Job

    runner = _in_process_runner()
    try:
        class Router:
            def task_started(self, task: int) -> None:
                pass

            task_finished = task_started

        class Executor:
            def execute(self, msg: Execute, job: Job) -> Done:
                return Done(msg.task, ok=True)

        runner._router, runner._executor = Router(), Executor()
        runner._ready.set()
        calls: list[tuple[Done, int]] = []

        def closed(msg: Done, timeout: float | None = None) -> None:
            calls.append((msg, runner._finishing))
            raise ChannelClosedError("closed")

        monkeypatch.setattr(runner, "_post_wait", closed)
        runner._running = 1  # as _start_locked counts it
        runner._run_job(Job(Execute(1, "pass")))  # returns: no retry, nothing raised
        # the Done was sent while still counted (a Shutdown waits for it), then uncounted
        assert [(m.task, m.ok, finishing) for m, finishing in calls] == [(1, True, 1)]
        assert runner._running == 0 and runner._finishing == 0

        calls.clear()

        def unpicklable(msg: Done, timeout: float | None = None) -> None:
            calls.append((msg, runner._finishing))
            if msg.ok:
                raise TypeError("cannot pickle the value")

        monkeypatch.setattr(runner, "_post_wait", unpicklable)
        runner._running = 1
        runner._run_job(Job(Execute(2, "pass")))  # other failures still send an error Done
        assert [(m.ok, finishing) for m, finishing in calls] == [(True, 1), (False, 1)]
        error = calls[1][0].error
        assert error is not None and error.ename == "TypeError"
        assert runner._finishing == 0
    finally:
        runner._loop.close()


def test_text_posted_from_the_io_thread_is_counted_like_any_other() -> None:
    import asyncio as aio

    from jupyter_flame.channel.protocol import Stream

    runner = _in_process_runner()
    sent: list[object] = []

    class FakeChannel:
        closed = False

        async def send(self, msg: object, *, encoded: object = None) -> int:
            sent.append(msg)
            return 0

    runner._channel = FakeChannel()
    runner._io.start()
    try:
        async def start_sender() -> aio.Task[None]:
            runner._outbox = aio.Queue()
            return aio.ensure_future(runner._sender())

        sender = aio.run_coroutine_threadsafe(start_sender(), runner._loop).result(5)
        runner.post(Stream(1, "stdout", "abc"))  # from another thread
        runner._loop.call_soon_threadsafe(runner.post, Stream(1, "stderr", "de"))  # I/O thread
        deadline = time.monotonic() + 5
        while len(sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [m.text for m in sent] == ["abc", "de"]  # type: ignore[attr-defined]
        with runner._space:
            assert runner._queued_text == 0  # not -2: the I/O thread's text was counted too
            assert runner._posted == runner._sent == 2

        async def stop_sender() -> None:
            sender.cancel()
            await aio.gather(sender, return_exceptions=True)

        aio.run_coroutine_threadsafe(stop_sender(), runner._loop).result(5)
    finally:
        runner._loop.call_soon_threadsafe(runner._loop.stop)
        runner._io.join(5)
        runner._loop.close()


def test_binary_writes_keep_utf8_characters_split_across_them() -> None:
    from jupyter_flame.runner._outputs import TaskStream

    class Router:
        def __init__(self) -> None:
            self.text: list[str] = []

        def write(self, name: str, text: str) -> None:
            self.text.append(text)

        def flush(self) -> None:
            pass

    router = Router()
    stream = TaskStream(router, "stdout", None)  # type: ignore[arg-type]
    data = "héllo → 🐍\n".encode()
    for i in range(len(data)):  # one byte per write: every multi-byte character is split
        assert stream.buffer.write(data[i : i + 1]) == 1
    assert "".join(router.text) == "héllo → 🐍\n"
    assert stream.buffer.write(bytearray(b"\xff ok")) == 4  # invalid bytes are still replaced
    assert "".join(router.text).endswith("\ufffd ok")
