"""Warm starts: local runners forked from the runner template (``LocalBackend(template=True)``).

Everything here runs real processes: a real template (``python -m
jupyter_flame.runner.template``), real forked runners dialling a real Listener or serving a real
Pool, and, for the kernel's death, a real process acting as the kernel.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame import Pool
from jupyter_flame.backends.base import BootRequest
from jupyter_flame.backends.gpu import GpuInfo
from jupyter_flame.backends.local import LocalBackend, list_local_runner_records
from jupyter_flame.channel.listener import Listener
from jupyter_flame.channel.protocol import EXIT_AUTH
from jupyter_flame.errors import RunnerLostError
from jupyter_flame.pool import loop as flame_loop

from .backend_contract import ContractPlumbing
from .conftest import MARK, pid_alive, runner_pids, wait_dead

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfds, /proc")

GPUS = [GpuInfo(i, f"GPU-{i}{i}{i}{i}-bbbb", "NVIDIA H100 80GB HBM3", 81559) for i in range(2)]




def _environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


def _cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def whoami() -> dict[str, Any]:
    """Runs on a runner: what tells runners apart."""
    import random

    import numpy

    return {"pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid(),
            "random": random.random(), "numpy": float(numpy.random.random()),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "cwd": os.getcwd(),
            "key_in_env": any(k == "JUPYTER_FLAME_KEY" for k in os.environ),
            "runner_id": os.environ.get("JUPYTER_FLAME_RUNNER_ID")}


def slow_whoami() -> dict[str, Any]:
    time.sleep(0.8)
    return whoami()


class TestForkedRunners(ContractPlumbing):
    def backend(self, runtime: Path, mark: str, **options: Any) -> Any:
        return lambda: LocalBackend(runtime_dir=runtime, env={MARK: mark}, **options)

    def test_forked_runner_is_a_runner_from_outside(self, tmp_path: Path, mark: str) -> None:
        runtime = tmp_path / "runtime"

        async def scenario() -> None:
            async with self.harness(self.backend(runtime, mark)) as h:
                backend = h.backend
                assert isinstance(backend, LocalBackend)
                assert await backend.warm_up()
                one, c1 = await self.boot_and_connect(h)
                two, c2 = await self.boot_and_connect(h)
                assert one.info["forked"] and two.info["forked"]
                template = _ppid(one.info["pid"])
                assert template == _ppid(two.info["pid"]) != os.getpid()
                assert "jupyter_flame.runner.template" in _cmdline(template)
                assert _threads(template) == 1  # no threads, no event loop thread
                for handle in (one, two):
                    pid = handle.info["pid"]
                    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
                    assert _cmdline(pid) == [sys.executable, "-m", "jupyter_flame.runner"]
                    environ = _environ(pid)
                    assert environ["JUPYTER_FLAME_RUNNER_ID"] == handle.id
                    assert environ["JUPYTER_FLAME_KERNEL_PID"] == str(os.getpid())
                    assert "JUPYTER_FLAME_KEY" not in environ
                    assert h.key.hex() not in Path(f"/proc/{pid}/environ").read_text()
                    assert Path(handle.info["log"]).read_text().startswith(
                        f"jupyter-flame runner {handle.id} of pool 'contract': pid {pid}")
                assert h.key.hex() not in Path(f"/proc/{template}/environ").read_text()
                assert pid in runner_pids()  # the test session's leftover check sees them
                records = {r["pid"] for r in list_local_runner_records(runtime)}
                assert records == {one.info["pid"], two.info["pid"]}
                await backend.terminate(one)
                assert one.exited.result() == 0
                assert h.phases(one.id)[-1] == "stopped"
                c1.close()
                c2.close()
            assert wait_dead({template, two.info["pid"]}, 5) == set()
            assert list_local_runner_records(runtime) == []

        self.run(scenario())

    def test_each_runner_has_its_own_key(self, tmp_path: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(self.backend(tmp_path, mark)) as h:
                assert isinstance(h.backend, LocalBackend)
                assert await h.backend.warm_up()
                good = h.request(self.spec(), self.boot_timeout)
                bad = BootRequest(pool="contract", runner_id="r-wrong-key", spec=self.spec(),
                                  parent_address=h.listener.address, key=os.urandom(32),
                                  boot_timeout=self.boot_timeout, kernel_id="k")
                connected = h.listener.expect(good.runner_id)
                refused = await h.backend.boot(bad)
                accepted = await h.backend.boot(good)
                assert refused.info["forked"] and accepted.info["forked"]
                assert await asyncio.wait_for(refused.exited, 20) == EXIT_AUTH
                error = await asyncio.wait_for(refused.failed, 1)
                assert "could not authenticate" in str(error)
                channel = await asyncio.wait_for(connected, 20)
                assert channel.peer_id == good.runner_id
                channel.close()

        self.run(scenario())

    def test_gpu_runner_gets_its_devices(self, tmp_path: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(self.backend(tmp_path, mark, gpus=GPUS)) as h:
                assert isinstance(h.backend, LocalBackend)
                assert await h.backend.warm_up()
                first, c1 = await self.boot_and_connect(h, gpu=1)
                second, c2 = await self.boot_and_connect(h, gpu=1)
                assert first.info["forked"] and second.info["forked"]
                seen = {_environ(hd.info["pid"])["CUDA_VISIBLE_DEVICES"] for hd in (first, second)}
                assert seen == {g.uuid for g in GPUS}
                for channel in (c1, c2):
                    channel.close()

        self.run(scenario())

    def test_exit_code_reaches_the_backend(self, tmp_path: Path, mark: str) -> None:
        """A runner that cannot reach its kernel exits 3 before connecting: the template's
        report carries the code into the boot error and the event."""
        async def scenario() -> None:
            async with self.harness(self.backend(tmp_path, mark)) as h:
                assert isinstance(h.backend, LocalBackend)
                assert await h.backend.warm_up()
                handle = await h.backend.boot(self.unreachable_request(h, boot_timeout=0.5))
                assert handle.info["forked"]
                assert await asyncio.wait_for(handle.exited, 20) == 3
                error = await asyncio.wait_for(handle.failed, 1)
                assert "could not reach the kernel at 127.0.0.1:1" in str(error)
                assert "cannot reach the parent" in (error.log_tail or "")

        self.run(scenario())

    def test_killed_template_falls_back_to_spawn(self, tmp_path: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(self.backend(tmp_path, mark)) as h:
                assert isinstance(h.backend, LocalBackend)
                assert await h.backend.warm_up()
                forked, c1 = await self.boot_and_connect(h)
                template = _ppid(forked.info["pid"])
                os.kill(template, signal.SIGKILL)
                # its runner dies with it, and the kernel hears of it through a pidfd
                assert await asyncio.wait_for(forked.exited, 10) == -signal.SIGKILL
                assert h.events[-1].phase == "failed"
                spawned, c2 = await self.boot_and_connect(h)
                assert spawned.info["forked"] is False
                assert _ppid(spawned.info["pid"]) == os.getpid()
                for channel in (c1, c2):
                    channel.close()

        self.run(scenario())

    def test_template_off(self, tmp_path: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(self.backend(tmp_path, mark, template=False)) as h:
                assert isinstance(h.backend, LocalBackend)
                assert not await h.backend.warm_up()
                for _ in range(2):
                    handle, channel = await self.boot_and_connect(h)
                    assert handle.info["forked"] is False
                    channel.close()

        self.run(scenario())


def test_pool_on_forked_runners(tmp_path: Path, mark: str) -> None:
    backend = LocalBackend(runtime_dir=tmp_path, env={MARK: mark})
    events: list[Any] = []
    backend.subscribe(events.append)
    try:
        assert flame_loop.run_sync(backend.warm_up(), 60)
        backend.cwd = str(tmp_path)  # forked runners chdir (the template started elsewhere)
        with Pool(max=2, max_concurrency=1, backend=backend, idle_shutdown_after=60) as pool:
            a, b = pool.submit(slow_whoami), pool.submit(slow_whoami)
            one, two = a.result(60), b.result(60)
            assert one["pid"] != two["pid"]
            for info in (one, two):
                assert info["pgid"] == info["pid"] and info["ppid"] != os.getpid()
                assert info["cwd"] == str(tmp_path) and not info["key_in_env"]
            assert one["random"] != two["random"]
            assert one["numpy"] != two["numpy"]
            assert pool.call(sum, [1, 2, 3]) == 6
            with pytest.raises(RunnerLostError):
                pool.call(os._exit, 7)
            deadline = time.monotonic() + 10
            while not [e for e in events if e.details.get("exit_code") == 7]:
                assert time.monotonic() < deadline, [e.phase for e in events]
                time.sleep(0.05)
            (gone,) = [e for e in events if e.details.get("exit_code") == 7]
            assert gone.phase == "failed" and "exited with code 7" in gone.message
    finally:
        flame_loop.run_sync(backend.close(), 30)


_KERNEL = textwrap.dedent("""
    import asyncio, os, sys
    from jupyter_flame.backends.base import BootRequest, RunnerSpec
    from jupyter_flame.backends.local import LocalBackend

    async def main():
        host, port, mark = sys.argv[1:4]
        backend = LocalBackend(env={"JUPYTER_FLAME_TEST_MARK": mark})
        assert await backend.warm_up()
        for rid in ("r1", "r2"):
            request = BootRequest("orphans", rid, RunnerSpec(), (host, int(port)),
                                  bytes.fromhex(os.environ["KEY"]), boot_timeout=20.0)
            handle = await backend.boot(request)
            print(handle.info["pid"], handle.info["forked"], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_kernel_sigkill_leaves_nothing(mark: str) -> None:
    async def scenario() -> None:
        key = os.urandom(32)
        listener = await Listener.start("127.0.0.1", key)
        connected = [listener.expect("r1"), listener.expect("r2")]
        host, port = listener.address
        kernel = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KERNEL, host, str(port), mark,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "KEY": key.hex()})
        try:
            assert kernel.stdout is not None
            pids = set()
            for _ in range(2):
                pid, forked = (await asyncio.wait_for(kernel.stdout.readline(), 30)).split()
                assert forked == b"True"
                pids.add(int(pid))
            channels = await asyncio.wait_for(asyncio.gather(*connected), 20)
            template = {_ppid(p) for p in pids}
            assert len(template) == 1 and template != {kernel.pid}
            everything = pids | template
            assert all(pid_alive(p) for p in everything)
        finally:
            kernel.kill()
            await kernel.wait()
        assert await asyncio.to_thread(wait_dead, everything, 10) == set()
        for channel in channels:
            channel.close()
        await listener.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
