"""LocalBackend: the backend contract, GPU allocation and discovery, runner records, cleanup.

Runners are real ``python -m jupyter_flame.runner`` processes dialling a real Listener. Every
runner started here carries a per-test marker in its environment, and a fixture fails the test
if any process with that marker is left when the test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_flame.backends import local_records
from jupyter_flame.backends.base import Backend, BootRequest, RunnerSpec
from jupyter_flame.backends.gpu import GpuAllocator, GpuInfo, SystemGpus, probe_gpus
from jupyter_flame.backends.local import (
    LocalBackend,
    cleanup_local_runners,
    list_local_runner_records,
    runners_dir,
)
from jupyter_flame.channel.listener import Listener
from jupyter_flame.errors import BootError, ConfigError

from .backend_contract import BackendContract, ContractPlumbing
from .conftest import MARK

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

FOUR = [GpuInfo(i, f"GPU-{i}{i}{i}{i}-aaaa", "NVIDIA H100 80GB HBM3", 81559) for i in range(4)]


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return tmp_path / "runtime"


class TestLocalBackendContract(BackendContract):
    @pytest.fixture
    def make_backend(self, runtime: Path, mark: str) -> Callable[[], Backend]:
        return lambda: LocalBackend(runtime_dir=runtime, env={MARK: mark})


def _environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


class TestLocalRunners(ContractPlumbing):
    """LocalBackend specifics, with the contract's plumbing."""

    def test_info_record_and_log(self, runtime: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(
                lambda: LocalBackend(runtime_dir=runtime, env={MARK: mark})
            ) as h:
                handle, channel = await self.boot_and_connect(h)
                pid = handle.info["pid"]
                assert handle.info["gpus"] == [] and handle.info["node"]
                assert Path(handle.info["log"]).is_file()
                assert os.getpgid(pid) == pid  # a session of its own
                assert _environ(pid)["JUPYTER_FLAME_RUNNER_ID"] == handle.id
                (record,) = list_local_runner_records(runtime)
                assert record["id"] == f"{handle.id}-{pid}"
                keys = ("runner_id", "pool", "backend", "pid", "kernel_pid", "gpus")
                assert {k: record.get(k) for k in keys} == {
                    "runner_id": handle.id,
                    "pool": "contract",
                    "backend": "local",
                    "pid": pid,
                    "kernel_pid": os.getpid(),
                    "gpus": [],
                }
                assert abs(record["started"] - time.time()) < 60
                await h.backend.terminate(handle)
                assert list_local_runner_records(runtime) == []
                channel.close()

        self.run(scenario())

    def test_runner_killed_after_connecting(self, runtime: Path, mark: str) -> None:
        async def scenario() -> None:
            async with self.harness(
                lambda: LocalBackend(runtime_dir=runtime, env={MARK: mark})
            ) as h:
                handle, channel = await self.boot_and_connect(h)
                os.kill(handle.info["pid"], signal.SIGKILL)
                assert await asyncio.wait_for(handle.exited, 5) == -signal.SIGKILL
                last = h.events[-1]
                assert (last.phase, last.reason) == ("failed", "exited")
                assert (
                    last.message == f"Runner {handle.id} of pool 'contract' was killed by SIGKILL "
                    "(out of memory, or killed from outside)"
                )
                assert not handle.failed.done()  # it had connected: not a boot failure
                assert list_local_runner_records(runtime) == []
                channel.close()

        self.run(scenario())

    def test_gpu_runners_get_their_own_devices(
        self, runtime: Path, mark: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "kernel-devices")

        async def scenario() -> None:
            backend = LocalBackend(runtime_dir=runtime, env={MARK: mark}, gpus=FOUR)
            async with self.harness(lambda: backend) as h:
                two, ch2 = await self.boot_and_connect(h, gpu=2)
                plain, ch0 = await self.boot_and_connect(h)
                assert (
                    _environ(two.info["pid"])["CUDA_VISIBLE_DEVICES"]
                    == "GPU-0000-aaaa,GPU-1111-aaaa"
                )
                assert _environ(plain.info["pid"])["CUDA_VISIBLE_DEVICES"] == "kernel-devices"
                assert two.info["gpus"] == ["GPU-0000-aaaa", "GPU-1111-aaaa"]
                records = {r["runner_id"]: r for r in list_local_runner_records(runtime)}
                assert records[two.id]["gpus"] == two.info["gpus"]
                with pytest.raises(
                    BootError,
                    match=r"Pool 'contract' asks for 3 GPUs but only 2 "
                    r"of this machine's 4 GPUs are free \(2 in use by runner r1\)",
                ):
                    await backend.boot(h.request(self.spec(gpu=3), self.boot_timeout))
                assert h.phases("r3") == ["requested", "failed"]
                await backend.terminate(two)
                assert backend.allocator.free() == [g.uuid for g in FOUR]
                for ch in (ch2, ch0):
                    ch.close()

        self.run(scenario())

    def test_gpu_discovery_and_records_are_read_off_the_event_loop(
        self, runtime: Path, mark: str
    ) -> None:
        threads: dict[str, threading.Thread] = {}

        def discover() -> list[GpuInfo]:  # nvidia-smi may take seconds: never on the loop
            threads["discover"] = threading.current_thread()
            return FOUR

        async def scenario() -> None:
            backend = LocalBackend(runtime_dir=runtime, env={MARK: mark}, discover=discover)
            read_records = backend._foreign_gpus

            def foreign() -> dict[str, list[str]]:
                threads["records"] = threading.current_thread()
                return read_records()

            backend._foreign_gpus = foreign  # type: ignore[method-assign]
            async with self.harness(lambda: backend) as h:
                handle, channel = await self.boot_and_connect(h, gpu=1)
                assert handle.info["gpus"] == ["GPU-0000-aaaa"]
                channel.close()

        self.run(scenario())
        assert set(threads) == {"discover", "records"}
        assert threading.main_thread() not in threads.values()

    def test_close_during_boot_stops_the_new_runner(self, runtime: Path, mark: str) -> None:
        async def scenario() -> None:
            backend = LocalBackend(runtime_dir=runtime, env={MARK: mark})
            spawn = backend._spawn

            async def spawn_then_close(
                request: BootRequest, gpus: list[str]
            ) -> tuple[asyncio.subprocess.Process, Path]:
                started = await spawn(request, gpus)
                await backend.close()  # overtakes the boot: close() cannot see this runner
                return started

            backend._spawn = spawn_then_close  # type: ignore[method-assign]
            async with self.harness(lambda: backend) as h:
                request = h.request(self.spec(), self.boot_timeout)
                with pytest.raises(BootError, match="is closed") as info:
                    await backend.boot(request)
                assert info.value.reason == "closed"
                assert h.phases(request.runner_id)[-1] == "stopped"
                assert list_local_runner_records(runtime) == []
            # the mark fixture fails the test if the runner process is left

        self.run(scenario())

    def test_no_gpu_machine(
        self, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Runs on GPU machines too: no nvidia-smi on PATH, NVML off (``import pynvml`` fails),
        # and a fresh shared allocator so that discovery happens under these conditions.
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.setitem(sys.modules, "pynvml", None)
        assert probe_gpus() == ([], "nvidia-smi not found")

        async def scenario() -> None:
            backend = LocalBackend(runtime_dir=runtime, system_gpus=SystemGpus())
            request = BootRequest("p", "r1", RunnerSpec(gpu=1), ("127.0.0.1", 1), os.urandom(32))
            with pytest.raises(
                ConfigError,
                match=r"^--gpu 1 asks for a GPU, but this machine "
                r"has none \(nvidia-smi not found\)\. Drop --gpu",
            ):
                await backend.boot(request)
            await backend.close()

        self.run(scenario())


# --- GPU allocation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("held", "ask", "outcome"),
    [
        ({}, 0, []),
        ({}, 1, ["GPU-0000-aaaa"]),
        ({}, 4, [g.uuid for g in FOUR]),
        ({"r1": 1}, 2, ["GPU-1111-aaaa", "GPU-2222-aaaa"]),
        (
            {"r1": 2, "r2": 1},
            2,
            (
                BootError,
                "Pool 'x' asks for 2 GPUs but only 1 of this machine's "
                "4 GPUs is free (3 in use by runners r1, r2). Lower --gpu, or wait "
                "for those runners to finish (`%flame shutdown`).",
            ),
        ),
        (
            {"r1": 4},
            1,
            (BootError, "only 0 of this machine's 4 GPUs are free (4 in use by runner r1)"),
        ),
        ({}, 5, (ConfigError, "Pool 'x' asks for 5 GPUs but this machine has only 4 GPUs")),
    ],
)
def test_allocator(
    held: dict[str, int], ask: int, outcome: list[str] | tuple[type[Exception], str]
) -> None:
    allocator = GpuAllocator(FOUR)
    for runner, n in held.items():
        allocator.allocate(runner, n, pool="x")
    if isinstance(outcome, list):
        assert allocator.allocate("new", ask, pool="x") == outcome
    else:
        kind, text = outcome
        with pytest.raises(kind) as info:
            allocator.allocate("new", ask, pool="x")
        assert text in str(info.value)
        assert "new" not in allocator.held()


def test_allocator_release_and_exclude() -> None:
    allocator = GpuAllocator(FOUR)
    assert allocator.allocate("a", 2) == ["GPU-0000-aaaa", "GPU-1111-aaaa"]
    other_kernel = {"k2-r1": ["GPU-2222-aaaa"]}
    assert allocator.allocate("b", 1, exclude=other_kernel) == ["GPU-3333-aaaa"]
    with pytest.raises(BootError, match="in use by runners a, b, k2-r1"):
        allocator.allocate("c", 1, pool="p", exclude=other_kernel)
    assert allocator.release("a") == ["GPU-0000-aaaa", "GPU-1111-aaaa"]
    assert allocator.release("a") == []
    assert allocator.held() == {"b": ["GPU-3333-aaaa"]}
    with pytest.raises(ConfigError, match="has none \\(nvidia-smi not found\\)"):
        GpuAllocator([], none_reason="nvidia-smi not found").allocate("r", 1)


# --- discovery through a fake nvidia-smi ------------------------------------------------------
SMI_OUTPUT = "".join(f"{g.index}, {g.uuid}, {g.name}, {g.memory_total}\n" for g in FOUR)


def _fake_smi(folder: Path, script: str) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("visible", "indices", "note"),
    [
        (None, [0, 1, 2, 3], "nvidia-smi"),
        ("2,3", [2, 3], "nvidia-smi"),
        ("GPU-1111", [1], "nvidia-smi"),
        ("3,0,nonsense,1", [3, 0], "nvidia-smi"),
        ("", [], "CUDA_VISIBLE_DEVICES='' hides its 4 GPUs"),
        ("-1", [], "CUDA_VISIBLE_DEVICES='-1' hides its 4 GPUs"),
    ],
)
def test_discovery(tmp_path: Path, visible: str | None, indices: list[int], note: str) -> None:
    env = _fake_smi(tmp_path / "bin", f"cat <<'EOF'\n{SMI_OUTPUT}EOF\n")
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    gpus, source = probe_gpus(env, nvml=False)
    assert [g.index for g in gpus] == indices
    assert source == note
    if gpus:
        assert gpus[0] == FOUR[indices[0]]


@pytest.mark.parametrize(
    ("script", "note"),
    [
        (None, "nvidia-smi not found"),
        ("exit 0\n", "nvidia-smi reported no devices"),
        (
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\n"
            "exit 9\n",
            "nvidia-smi failed: NVIDIA-SMI has failed because it could not communicate",
        ),
    ],
)
def test_discovery_without_gpus(tmp_path: Path, script: str | None, note: str) -> None:
    env = {"PATH": str(tmp_path)} if script is None else _fake_smi(tmp_path / "bin", script)
    gpus, source = probe_gpus(env, nvml=False)
    assert gpus == [] and source.startswith(note)


# --- cleanup of runners whose kernel died -----------------------------------------------------
_KERNEL = textwrap.dedent("""
    import asyncio, os, sys
    from jupyter_flame.backends.base import BootRequest, RunnerSpec
    from jupyter_flame.backends.local import LocalBackend

    async def main():
        host, port, runtime, mark = sys.argv[1:5]
        backend = LocalBackend(runtime_dir=runtime, env={"JUPYTER_FLAME_TEST_MARK": mark})
        request = BootRequest("orphans", "r1", RunnerSpec(), (host, int(port)),
                              bytes.fromhex(os.environ["KEY"]), boot_timeout=20.0)
        handle = await backend.boot(request)
        print(handle.info["pid"], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_cleanup_kills_orphans_only(runtime: Path, mark: str) -> None:
    async def scenario() -> None:
        key = os.urandom(32)
        listener = await Listener.start("127.0.0.1", key)
        connected = listener.expect("r1")
        host, port = listener.address
        kernel = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KERNEL,
            host,
            str(port),
            str(runtime),
            mark,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "KEY": key.hex()},
        )
        try:
            assert kernel.stdout is not None
            pid = int(await asyncio.wait_for(kernel.stdout.readline(), 20))
            channel = await asyncio.wait_for(connected, 20)
            assert cleanup_local_runners(runtime_dir=runtime) == []  # its kernel lives
            # the whole group hung (its sentinel too, which would otherwise kill it along
            # with its kernel): only cleanup can end it now
            os.killpg(pid, signal.SIGSTOP)
        finally:
            kernel.kill()
            await kernel.wait()
        (record,) = list_local_runner_records(runtime)
        assert (record["pid"], record["kernel_pid"]) == (pid, kernel.pid)

        # a record whose pid now belongs to some other program: removed, never killed
        bystander = subprocess.Popen(["sleep", "30"])
        stale = dict(record, id="r9-1", runner_id="r9", pid=bystander.pid)
        (runners_dir(runtime) / "r9-1.json").write_text(json.dumps(stale))
        try:
            done = {r["runner_id"]: r["action"] for r in cleanup_local_runners(runtime_dir=runtime)}
            assert done == {"r1": "killed", "r9": "removed"}
            assert bystander.poll() is None
        finally:
            bystander.kill()
            bystander.wait()
        assert list_local_runner_records(runtime) == []
        channel.close()
        await listener.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


# --- killing process groups -------------------------------------------------------------------
_CHILD = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "print(os.getpid(), flush=True); time.sleep(60)")
_LEADER = ("import subprocess, sys, time; "
           f"subprocess.Popen([sys.executable, '-c', {_CHILD!r}]); time.sleep(60)")


def _group_with_a_stubborn_child(mark: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    """A session whose leader dies on SIGTERM and whose child ignores it: (leader, child)."""
    leader = subprocess.Popen([sys.executable, "-c", _LEADER], stdout=subprocess.PIPE,
                              text=True, start_new_session=True,
                              env={**os.environ, MARK: mark, **env})
    assert leader.stdout is not None
    return leader, int(leader.stdout.readline())


def test_kill_group_kills_children_that_ignore_sigterm(mark: str) -> None:
    leader, child = _group_with_a_stubborn_child(mark)
    try:
        local_records._kill_group(leader.pid, grace=1.0)
        assert leader.wait(5) == -signal.SIGTERM
        assert not local_records.alive(child)  # SIGKILLed once the grace period passed
    finally:
        leader.kill()
        leader.wait()


def test_cleanup_kills_what_a_dead_runner_left_in_its_group(runtime: Path, mark: str) -> None:
    leader, child = _group_with_a_stubborn_child(mark, JUPYTER_FLAME_RUNNER_ID="r7")
    leader.kill()
    leader.wait()  # the runner itself is gone; its child lives on in its process group
    folder = runners_dir(runtime)
    folder.mkdir(parents=True)
    for runner_id, started in (("r8", 1.0), ("r7", 2.0)):  # r8: same group, not its env
        record = {"version": 1, "id": f"{runner_id}-{leader.pid}", "runner_id": runner_id,
                  "pool": "p", "backend": "local", "pid": leader.pid, "started": started}
        (folder / f"{record['id']}.json").write_text(json.dumps(record))
    done = {r["runner_id"]: r["action"] for r in cleanup_local_runners(runtime_dir=runtime,
                                                                     grace=1.0)}
    assert done == {"r8": "removed", "r7": "killed"}
    assert not local_records.alive(child)
    assert list_local_runner_records(runtime) == []


def test_the_channel_key_is_nowhere_the_cell_can_read_it() -> None:
    """Local runners get the pool key through an inherited pipe: not in their environment, not
    in /proc/<pid>/environ (the environment a process started with), not in the cell's child
    processes."""
    from jupyter_flame import Pool

    def look() -> dict[str, object]:
        import os
        import subprocess

        environ = open(f"/proc/{os.getpid()}/environ", "rb").read()
        child = subprocess.run(["env"], capture_output=True, text=True).stdout
        return {"env": {k: v for k, v in os.environ.items() if "KEY" in k},
                "proc": environ, "child": child, "pid": os.getpid()}

    with Pool("keyless") as pool:
        seen = pool.call(look)
        key = pool._live.key.hex()  # the pool's channel key, for the check only
    assert seen["env"] == {}
    assert b"JUPYTER_FLAME_KEY=" not in seen["proc"] and key.encode() not in seen["proc"]
    assert "JUPYTER_FLAME_KEY" not in seen["child"] and key not in seen["child"]
