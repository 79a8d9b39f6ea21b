"""FLAME pool semantics through the public Python API, with real local runner processes
(no IPython involved: scripts and libraries use Pool the same way)."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

from jupyter_flame import (
    BootError,
    FlameTimeoutError,
    Pool,
    RemoteError,
    RunnerLostError,
    RunnerSpec,
)
from jupyter_flame.errors import ConfigError

from .conftest import pid_alive, wait_gone


def sleepy_pid(seconds: float) -> tuple[int, float]:
    import os
    import time

    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start


def pid() -> int:
    import os

    return os.getpid()


def test_call_submit_map_and_shutdown() -> None:
    with Pool(max=1) as pool:
        assert pool.call(lambda a, b=0: a + b, 40, b=2) == 42
        fut = pool.submit(pow, 2, 10)
        assert fut.result(30) == 1024
        assert list(pool.map(lambda v: v * v, range(5))) == [0, 1, 4, 9, 16]
        runner = pool.call(pid)
        assert runner != os.getpid()
    assert not wait_gone({runner}, 10)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pid)


def test_pool_is_an_executor() -> None:
    pool = Pool(max=1)
    try:
        assert isinstance(pool, concurrent.futures.Executor)
    finally:
        pool.shutdown()


def test_growth_one_runner_per_max_concurrency_waiters() -> None:
    with Pool(max=3, max_concurrency=2) as pool:
        futs = [pool.submit(sleepy_pid, 1.5) for _ in range(4)]
        pids = [f.result(60)[0] for f in futs]
        # 4 waiters at max_concurrency=2: exactly two runners, each running two at once
        assert len(set(pids)) == 2
        assert sorted(pids.count(p) for p in set(pids)) == [2, 2]
        status = pool.status()
        assert status["boots"] == 2


def test_fifo_queue_and_resize() -> None:
    with Pool(max=1) as pool:
        futs = [pool.submit(sleepy_pid, 0.3) for _ in range(4)]
        starts = [f.result(60)[1] for f in futs]
        assert starts == sorted(starts)  # served in arrival order
        assert len({f.result()[0] for f in futs}) == 1
        pool.resize(max=2)
        futs = [pool.submit(sleepy_pid, 1.0) for _ in range(2)]
        assert len({f.result(60)[0] for f in futs}) == 2


def test_idle_shutdown_and_min_kept_warm() -> None:
    with Pool(max=2, idle_shutdown_after=1.0, heartbeat_interval=0.5,
              parent_timeout=5) as pool:
        runner = pool.call(pid)
        assert wait_gone({runner}, 10) == set()
        deadline = time.monotonic() + 5
        while pool.status()["runners"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.status()["runners"] == []
    with Pool(min=1, max=2, idle_shutdown_after=1.0) as warm:
        warm.start()
        first = warm.call(pid)
        time.sleep(2.5)
        assert pid_alive(first)
        assert warm.call(pid) == first


def test_failed_boot_reaches_the_caller_with_the_reason() -> None:
    spec = RunnerSpec(env=(("JUPYTER_FLAME_PARENT", "127.0.0.1:9"),
                           ("JUPYTER_FLAME_BOOT_TIMEOUT", "1")))
    with Pool(spec=spec, boot_timeout=20) as pool:
        t0 = time.monotonic()
        with pytest.raises(BootError) as info:
            pool.call(pid)
        assert time.monotonic() - t0 < 15
        text = str(info.value)
        assert "exited with code 3" in text
        assert pool.status()["runners"] == []


def test_a_runner_of_another_version_refuses_and_says_what_to_install() -> None:
    """The backend tells the runner the notebook's version; a runner image with another
    jupyter-flame exits at once, and the boot error carries its words (here the variable is
    overridden, as a runner image with another version would see it)."""
    spec = RunnerSpec(env=(("JUPYTER_FLAME_VERSION", "0.0.1"),))
    with Pool(spec=spec, boot_timeout=20) as pool:
        with pytest.raises(BootError) as info:
            pool.call(pid)
    text = str(info.value) + str(getattr(info.value, "log_tail", ""))
    assert "version mismatch" in text and "jupyter-flame==0.0.1" in text, text


def test_single_use_runners() -> None:
    with Pool(max=1, single_use=True) as pool:
        a = pool.call(pid)
        b = pool.call(pid)
        assert a != b
        assert not wait_gone({a}, 10)


def test_timeout() -> None:
    with Pool(max=1, timeout=1.0) as pool:
        runner = pool.call(pid)
        with pytest.raises(FlameTimeoutError, match="timeout"):
            pool.call(sleepy_pid, 20)
        # the runner was interrupted, not replaced: the same process runs the next call
        assert pool.call(pid) == runner
        assert pid_alive(runner)


def test_remote_error_keeps_its_type() -> None:
    def boom() -> None:
        raise ValueError("bad value 7")

    with Pool(max=1) as pool:
        with pytest.raises(ValueError, match="bad value 7") as info:
            pool.call(boom)
        assert isinstance(info.value, RemoteError)
        assert any("boom" in line for line in info.value.remote_traceback)


def test_killed_runner_is_reported_and_replaced() -> None:
    def die() -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    with Pool(min=1, max=1) as pool:
        first = pool.start().call(pid)
        t0 = time.monotonic()
        with pytest.raises(RunnerLostError, match="SIGKILL") as info:
            pool.call(die)
        assert time.monotonic() - t0 < 2.0
        assert info.value.exit_code == -9
        # the pool refills to min=1 on its own, before any new demand
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            live = [r for r in pool.status()["runners"] if r["phase"] == "idle"]
            if live:
                break
            time.sleep(0.05)
        assert live and live[0]["pid"] not in (first, None)
        second = pool.call(pid)
        assert second != first


def test_channel_key_is_fresh_per_pool_and_never_in_argv() -> None:
    from pathlib import Path

    with Pool(max=1) as a, Pool(max=1) as b:
        runner = a.call(pid)
        b.call(pid)
        key_a, key_b = a._core.key, b._core.key
        assert len(key_a) == 32 and key_a != key_b
        cmdline = Path(f"/proc/{runner}/cmdline").read_bytes()
        assert key_a.hex().encode() not in cmdline and key_a not in cmdline
        # the runner dropped it from its environment before running any user code
        assert a.call(os.environ.get, "JUPYTER_FLAME_KEY") is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"max": 0}, "max=0"), ({"min": 3, "max": 2}, "min"), ({"max_concurrency": 0}, "max_concurrency"),
     ({"idle_shutdown_after": -1}, "idle_shutdown_after"), ({"timeout": 0}, "timeout"),
     ({"backend": "cloud"}, "Unknown backend 'cloud'")],
)
def test_bad_options(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Pool(**kwargs)  # type: ignore[arg-type]


def test_a_silent_runner_is_lost_within_the_heartbeat_timeout() -> None:
    """A SIGSTOPped runner (as hung, or cut off by the network) fails its task with
    RunnerLostError within heartbeat_timeout, is killed, and the next task gets a new one."""
    import os
    import signal

    with Pool(max=1, heartbeat_timeout=5.0) as pool:
        runner = pool.call(pid)
        fut = pool.submit(sleepy_pid, 60)
        time.sleep(0.5)
        os.killpg(runner, signal.SIGSTOP)  # the runner and its sentinel: nothing answers
        t0 = time.monotonic()
        with pytest.raises(RunnerLostError) as info:
            fut.result(timeout=30)
        took = time.monotonic() - t0
        assert took < 5.0 + 2 * 2.0 + 2, took  # the timeout, plus a heartbeat or two
        assert "sent nothing for" in str(info.value) and "heartbeat_timeout=5" in str(info.value)
        assert not wait_gone({runner}, 15), "the stopped runner was not killed"
        assert pool.call(pid) != runner


def half_a_frame_then_silence() -> None:
    """Runner side: start a frame, send half of it, then hold the channel's write side so
    nothing else (no pong, no output) ever goes out."""
    import gc
    import time

    from jupyter_flame.channel import _framing
    from jupyter_flame.channel.channel import Channel

    ch = next(o for o in gc.get_objects() if isinstance(o, Channel))
    ch._wire.acquire()
    frame = _framing.FIXED.pack(ch._sealer.seq, 1000, 0) + b"x" * 300  # of 1016 body bytes
    ch._conn.sock.send(frame)
    time.sleep(600)


def test_half_a_frame_then_silence_is_lost_within_the_heartbeat_timeout() -> None:
    """The kernel reading a frame that never completes: the task fails with RunnerLostError
    within heartbeat_timeout (not after the 270 s and more it once took), the runner is
    killed, and the pool serves the next task with a new runner."""
    with Pool(max=1, heartbeat_timeout=5.0) as pool:
        runner = pool.call(pid)
        t0 = time.monotonic()
        with pytest.raises(RunnerLostError) as info:
            pool.call(half_a_frame_then_silence)
        took = time.monotonic() - t0
        assert took < 5.0 + 2 * 2.0 + 2, took
        assert "sent nothing for" in str(info.value)
        assert not wait_gone({runner}, 15), "the silent runner was not killed"
        assert pool.call(pid) != runner


def _peak_rss_mib() -> tuple[int, int]:
    import os

    fields = dict(line.split(":", 1) for line in open(f"/proc/{os.getpid()}/status"))
    return os.getpid(), int(fields["VmHWM"].split()[0]) // 1024


def _bytes_result(n: int) -> bytes:
    return b"r" * n


def test_big_bytes_results_do_not_multiply_the_runner_s_memory() -> None:
    """A 256 MiB bytes result leaves the runner from the object's own memory: the runner's
    peak grows by about the object (it once took 3x: the pickle, and the message's pickle)."""
    n = 256 << 20
    with Pool(max=1) as pool:
        _, before = pool.call(_peak_rss_mib)
        value = pool.call(_bytes_result, n)
        assert type(value) is bytes and len(value) == n and value[-1:] == b"r"
        _, after = pool.call(_peak_rss_mib)
    assert after - before < 1.3 * (n >> 20), (before, after)


def _ones(n: int) -> object:
    import numpy as np

    return np.ones(n, np.uint8)


@pytest.mark.parametrize("direction", ["to the runner", "back from the runner"])
def test_runner_sigkilled_mid_transfer(direction: str) -> None:
    """The runner dies while a 1 GiB frame is on the wire, either way: the task fails with
    RunnerLostError saying it was killed, nothing half-received is used, and the pool serves
    the next task on a new runner."""
    import signal

    import numpy as np

    n = 1 << 30
    # encrypted: the frame goes through the socket (a local channel's shared memory would make
    # it one memcpy; tests/test_shared_memory.py kills runners mid-transfer there)
    with Pool(max=1, encrypt=True) as pool:
        runner = pool.call(pid)
        (slot,) = pool._core.slots.values()  # type: ignore[union-attr]
        channel = slot.link.channel
        if direction == "to the runner":
            fut = pool.submit(len, np.ones(n, np.uint8))
            busy = lambda: channel._wire_busy  # noqa: E731  a frame is going out
        else:
            fut = pool.submit(_ones, n)
            busy = lambda: channel.mid_frame and channel.bytes_received < 1e6  # noqa: E731
        deadline = time.monotonic() + 30
        while not busy():
            assert time.monotonic() < deadline and not fut.done(), "never saw the transfer"
            time.sleep(0.001)
        os.killpg(runner, signal.SIGKILL)
        with pytest.raises(RunnerLostError) as info:
            fut.result(timeout=30)
        assert "SIGKILL" in str(info.value) or "connection" in str(info.value), info.value
        assert not wait_gone({runner}, 15)
        assert pool.call(pid) != runner


def test_heartbeat_timeout_is_checked() -> None:
    with pytest.raises(ConfigError, match="heartbeat_timeout"):
        Pool(heartbeat_timeout=1.0)  # not above twice heartbeat_interval (2 s)
