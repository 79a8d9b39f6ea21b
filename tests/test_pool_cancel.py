"""Giving up on a task: the future cancels, the runner is interrupted and comes back to the
pool (not leaked, not replaced)."""

from __future__ import annotations

import time

from jupyter_flame import Pool


def sleepy(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def pid() -> int:
    import os

    return os.getpid()


def test_cancelling_a_submitted_call_interrupts_its_runner() -> None:
    with Pool(max=1, interrupt_grace=5) as pool:
        runner = pool.call(pid)
        fut = pool.submit(sleepy, 30)
        time.sleep(1.0)  # running on the runner now
        assert fut.cancel()
        t0 = time.monotonic()
        # the same runner serves the next call as soon as it answered the interrupt
        assert pool.call(pid) == runner
        assert time.monotonic() - t0 < 4.0


def test_resizing_single_use_reaches_the_pool_options() -> None:
    with Pool(max=1) as pool:
        first = pool.call(pid)
        pool.resize(single_use=True, boot_timeout=30)
        assert pool.options.single_use is True and pool.options.boot_timeout == 30
        # the warm runner serves one more task, then retires (it is single use now)
        assert pool.call(pid) == first
        assert pool.call(pid) != first
