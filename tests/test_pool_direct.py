"""The direct lane of ``Pool.call``: a warm call is sent and its reply read by the calling
thread (see ``jupyter_flame.pool._direct``). These check that it keeps the pool's semantics: the
loop's queue, interrupts, timeouts, busy/idle, and calls from many threads at once."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jupyter_flame import Pool


def pid() -> int:
    import os

    return os.getpid()


def sleepy(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def test_warm_calls_take_the_direct_lane_and_say_so() -> None:
    with Pool(max=1) as pool:
        first = pool.call(pid)  # boots the runner: through the loop
        assert [pool.call(pid) for _ in range(20)] == [first] * 20
        st = pool.status()
        assert st["direct_calls"] == 20 and st["tasks_done"] == 21
        assert st["runners"][0]["phase"] == "idle" and st["runners"][0]["load"] == 0
        from jupyter_flame.pool.status import render_text

        assert "20 calls sent by the calling thread itself" in render_text([st])


def test_ctrl_c_in_a_direct_call_interrupts_the_runner_and_keeps_it() -> None:
    with Pool(max=1, interrupt_grace=5) as pool:
        runner = pool.call(pid)
        main = threading.get_ident()
        timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pool.call(sleepy, 30)
        assert time.monotonic() - t0 < 2.0
        # the runner answered the interrupt and serves the next call: not replaced
        assert pool.call(pid) == runner
        assert pool.status()["runners"][0]["pid"] == runner


def test_a_long_direct_call_shows_busy_and_hands_over_to_the_queue() -> None:
    with Pool(max=1) as pool:
        runner = pool.call(pid)
        with ThreadPoolExecutor(1) as ex:
            long = ex.submit(pool.call, sleepy, 1.5)
            time.sleep(0.6)
            st = pool.status()
            assert st["runners"][0]["phase"] == "busy" and st["runners"][0]["load"] == 1
            queued = pool.submit(pid)  # no free runner: it waits in the loop's queue
            time.sleep(0.2)
            assert not queued.done() and pool.status()["waiting"] == 1
            assert long.result(10) == runner
            assert queued.result(10) == runner
        deadline = time.monotonic() + 5
        while pool.status()["runners"][0]["phase"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.status()["runners"][0]["phase"] == "idle"


def square(x: int) -> int:
    return x * x


def test_many_threads_calling_at_once_get_their_own_results() -> None:
    with Pool(max=2, max_concurrency=2) as pool:
        pool.call(pid)
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda x: pool.call(square, x), range(400)))
        assert results == [x * x for x in range(400)]
        st = pool.status()
        assert st["tasks_done"] == 401 and st["waiting"] == 0
        assert all(r["load"] == 0 for r in st["runners"])


def test_idle_shutdown_still_happens_after_direct_calls() -> None:
    with Pool(max=1, idle_shutdown_after=1, heartbeat_interval=0.5) as pool:
        runner = pool.call(pid)
        assert pool.call(pid) == runner  # direct: the kernel's loop stops reading meanwhile
        deadline = time.monotonic() + 10
        while pool.status()["runners"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.status()["runners"] == []  # the runner's idle request was read and granted
        assert pool.call(pid) != runner
