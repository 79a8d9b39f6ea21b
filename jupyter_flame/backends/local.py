"""The local backend: runners are subprocesses of the kernel, on this machine.

Each runner is ``python -m jupyter_flame.runner`` in a session (process group) of its own, with
the kernel's environment plus :func:`~jupyter_flame.backends.base.runner_env` plus the spec's
``env``, in the kernel's working directory. Its stdout and stderr go to a log file, whose last
lines explain a runner that dies before it connects. ``--gpu N`` runners get N GPUs of their own
through ``CUDA_VISIBLE_DEVICES`` (see :mod:`jupyter_flame.backends.gpu`); ``--gpu 0`` runners
inherit the kernel's environment unchanged.

Every live runner is also recorded as JSON in Jupyter's runtime directory, under
``jupyter-flame/runners/<runner id>-<pid>.json``, so that the server extension and ``jupyter
flame list`` / ``cleanup`` can see runners without talking to the kernel. A record holds::

    {"version": 1, "id": "r1-4242", "runner_id": "r1", "pool": "p", "backend": "local",
     "pid": 4242, "kernel_pid": 4000, "kernel_id": "...", "started": 1763700000.0,
     "gpus": ["GPU-..."], "node": "hostname", "log": "/tmp/.../r1.log"}

(``pid`` is also the runner's process-group id; ``started`` is a Unix time in seconds.)

Events: ``requested`` then ``starting`` from :meth:`LocalBackend.boot`; the pool adds
``connected``/``busy``/``idle``; ``stopping`` from :meth:`LocalBackend.terminate`; finally
``stopped``, or ``failed`` (``reason="exited"``) when the runner died on its own with a non-zero
code or before it connected.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from jupyter_flame.backends.base import (
    LOG_TAIL_LINES,
    PRE_CONNECT,
    Backend,
    BootRequest,
    RunnerHandle,
    describe_exit,
    exit_message,
    runner_env,
)
from jupyter_flame.backends.gpu import GpuAllocator, GpuInfo
from jupyter_flame.errors import BootError

__all__ = ["LocalBackend", "LocalRunnerRecord", "cleanup_local_runners",
           "list_local_runner_records", "runners_dir"]

_RUNNER_MODULE = "jupyter_flame.runner"


class LocalRunnerRecord(TypedDict, total=False):
    """A live local runner, as written to the runtime directory (see the module docstring)."""

    version: int
    id: str
    runner_id: str
    pool: str
    backend: str
    pid: int
    kernel_pid: int
    kernel_id: str
    started: float
    gpus: list[str]
    node: str
    log: str
    action: str  # set by cleanup_local_runners: "killed" or "removed"


def runners_dir(runtime_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where runner records live: ``<jupyter runtime dir>/jupyter-flame/runners``."""
    if runtime_dir is None:
        from jupyter_core.paths import jupyter_runtime_dir
        runtime_dir = jupyter_runtime_dir()
    return Path(runtime_dir) / "jupyter-flame" / "runners"


def _write_record(path: Path, record: LocalRunnerRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_runner(pid: int, runner_id: str) -> bool:
    """Whether ``pid`` really is the jupyter-flame runner ``runner_id`` (guards pid reuse)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        if Path("/proc/self").exists():
            return False
        try:  # no /proc (macOS): ask ps
            argv = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)],
                                  capture_output=True, timeout=5, check=False).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return False
        return _RUNNER_MODULE.encode() in argv
    if _RUNNER_MODULE.encode() not in argv:
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return True  # not ours to read: the command line has to do
    return f"JUPYTER_FLAME_RUNNER_ID={runner_id}".encode() in environ


def list_local_runner_records(
        runtime_dir: str | os.PathLike[str] | None = None) -> list[LocalRunnerRecord]:
    """Every runner record of this machine (unreadable files skipped), oldest first."""
    records: list[LocalRunnerRecord] = []
    folder = runners_dir(runtime_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("pid"), int):
            data.setdefault("id", path.stem)
            records.append(data)  # type: ignore[arg-type]
    return sorted(records, key=lambda r: r.get("started", 0.0))


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except OSError:
        return False


def _group_members(pgid: int) -> list[int] | None:
    """The live (not zombie) processes of process group ``pgid``; ``None`` without /proc."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _group_alive(pgid: int) -> bool:
    """Whether any live process is left in process group ``pgid`` (the leader or not)."""
    try:
        os.killpg(pgid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    members = _group_members(pgid)
    return True if members is None else bool(members)


def _runner_group(pid: int, runner_id: str) -> bool:
    """Whether process group ``pid`` is the runner ``runner_id``'s: its leader is that runner,
    or, the leader gone, a process left in the group carries the runner's environment."""
    if _alive(pid):
        return _is_runner(pid, runner_id)
    wanted = f"JUPYTER_FLAME_RUNNER_ID={runner_id}".encode()
    for member in _group_members(pid) or []:
        try:
            if wanted in Path(f"/proc/{member}/environ").read_bytes().split(b"\0"):
                return True
        except OSError:
            continue
    return False


def _kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, then SIGKILL what is left of it after ``grace`` seconds (the whole
    group counts, not only its leader: a child may ignore SIGTERM or outlive the leader)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(pgid, sig):
            return
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(pgid):
            return


def cleanup_local_runners(dead_parent_only: bool = True, *,
                          runtime_dir: str | os.PathLike[str] | None = None,
                          grace: float = 3.0) -> list[LocalRunnerRecord]:
    """Kill leftover local runners and remove their records.

    A runner is killed (SIGTERM to its process group, then SIGKILL after ``grace`` seconds to
    whatever is left of the group) when its kernel process is gone, or always with
    ``dead_parent_only=False``, and only once ``/proc/<pid>`` shows it really is that
    jupyter-flame runner (or, its process gone, that processes it left in its group carry its
    environment). Records of runners that no longer exist are removed. Returns the records
    acted on, each with ``action`` set to ``"killed"`` or ``"removed"``.
    """
    done: list[LocalRunnerRecord] = []
    folder = runners_dir(runtime_dir)
    for record in list_local_runner_records(runtime_dir):
        pid, kernel_pid = record["pid"], record.get("kernel_pid", 0)
        if not _runner_group(pid, record.get("runner_id", "")):
            record["action"] = "removed"
        elif dead_parent_only and kernel_pid and _alive(kernel_pid):
            continue
        else:
            _kill_group(pid, grace)
            record["action"] = "killed"
        (folder / f"{record['id']}.json").unlink(missing_ok=True)
        done.append(record)
    return done


_SHARED: list[GpuAllocator] = []  # the discovered GPUs, shared by this process's backends
_SHARED_LOCK = threading.Lock()


def _shared_allocator() -> GpuAllocator:
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(GpuAllocator.from_system())
        return _SHARED[0]


_LIVE: dict[int, Path] = {}  # pgid -> record, for runners still alive at interpreter exit


@atexit.register
def _kill_live_runners() -> None:
    for pgid, record in list(_LIVE.items()):
        _signal_group(pgid, signal.SIGTERM)
        record.unlink(missing_ok=True)


@dataclass
class _Runner:
    handle: RunnerHandle
    process: asyncio.subprocess.Process
    record: Path
    log: Path
    parent: str
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class LocalBackend(Backend):
    """Runners as subprocesses of the kernel.

    Parameters
    ----------
    python:
        The interpreter that runs ``-m jupyter_flame.runner`` (default: ``sys.executable``).
    env:
        Extra environment for every runner (below ``runner_env`` and the spec's ``env``).
    cwd:
        The runners' working directory (default: the kernel's, at boot time).
    gpus:
        The GPUs runners may get. Default: discovered (by :func:`~.gpu.discover_gpus`, through
        :meth:`~.gpu.GpuAllocator.from_system`) on the first ``--gpu`` request and shared by
        every LocalBackend of this process; GPUs held by runners of other kernels (per their
        runner records) are never handed out.
    discover:
        A callable returning the GPUs, used instead of :func:`~.gpu.discover_gpus`. Backends
        given ``gpus`` or ``discover`` have an allocator of their own.
    runtime_dir:
        Jupyter's runtime directory, for runner records (default: ``jupyter_runtime_dir()``).
    log_dir:
        Where runner logs go (default: a private temporary directory removed by ``close()``).
    """

    name = "local"

    def __init__(self, *, python: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None,
                 gpus: Iterable[GpuInfo] | None = None,
                 discover: Callable[[], Sequence[GpuInfo]] | None = None,
                 runtime_dir: str | os.PathLike[str] | None = None,
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.runtime_dir = runtime_dir
        self._gpus = None if gpus is None else list(gpus)
        self._discover = discover
        self._allocator: GpuAllocator | None = None
        self._allocator_lock = threading.Lock()
        self._log_dir = None if log_dir is None else Path(log_dir)
        self._own_log_dir = log_dir is None
        self._runners: dict[str, _Runner] = {}
        self._closed = False
        self._node = socket.gethostname()

    @property
    def allocator(self) -> GpuAllocator:
        """The GPU allocator (discovers GPUs on first use: blocking, thread-safe)."""
        if self._allocator is None:
            with self._allocator_lock:
                if self._allocator is None:
                    self._allocator = self._make_allocator()
        return self._allocator

    def _get_allocator(self) -> GpuAllocator:
        return self.allocator

    def _make_allocator(self) -> GpuAllocator:
        if self._gpus is not None:
            return GpuAllocator(self._gpus, none_reason="no GPUs were configured")
        if self._discover is not None:
            return GpuAllocator(self._discover(), none_reason="GPU discovery found none")
        return _shared_allocator()

    async def _allocate(self, request: BootRequest) -> list[str]:
        """GPUs for ``request``; discovery and the other kernels' records are read in a
        thread (nvidia-smi may take seconds), the allocation itself on the loop."""
        allocator = self._allocator
        if allocator is None:
            allocator = await asyncio.to_thread(self._get_allocator)
        foreign = await asyncio.to_thread(self._foreign_gpus)
        return allocator.allocate(request.runner_id, request.spec.gpu, pool=request.pool,
                                  exclude=foreign)

    def _foreign_gpus(self) -> dict[str, list[str]]:
        """GPUs held by live runners of other kernels on this machine (from their records)."""
        held = {}
        for rec in list_local_runner_records(self.runtime_dir):
            if rec.get("kernel_pid") != os.getpid() and rec.get("gpus") and _alive(rec["pid"]):
                held[rec["id"]] = list(rec.get("gpus", []))
        return held

    def _logs(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="jupyter-flame-logs-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    async def boot(self, request: BootRequest) -> RunnerHandle:
        self.check_boot(request, closed=self._closed, known=self._runners)
        handle = RunnerHandle(request.runner_id, request.pool, {"node": self._node, "gpus": []})
        self.emit(handle, "requested")
        gpus: list[str] = []
        try:
            if request.spec.gpu > 0:
                gpus = await self._allocate(request)
                if self._closed:  # close() ran while GPUs were discovered
                    raise self.closed_error(request)
            process, log = await self._spawn(request, gpus)
        except Exception as exc:
            if gpus:
                self.allocator.release(request.runner_id)
            self.emit(handle, "failed", reason=getattr(exc, "reason", None) or "boot",
                      message=str(exc))
            if isinstance(exc, BootError) or not isinstance(exc, OSError):
                raise
            raise BootError(f"Could not start runner {request.runner_id} of pool "
                            f"{request.pool!r} with {self.python!r}: {exc}. Check the "
                            "LocalBackend's python option.", reason="spawn",
                            pool=request.pool, runner=request.runner_id) from exc
        handle.info.update(pid=process.pid, log=str(log), gpus=gpus)
        record_path = runners_dir(self.runtime_dir) / f"{request.runner_id}-{process.pid}.json"
        host, port = request.parent_address
        parent = dict(request.spec.env).get("JUPYTER_FLAME_PARENT", f"{host}:{port}")
        runner = _Runner(handle, process, record_path, log, parent)
        self._runners[handle.id] = runner
        _LIVE[process.pid] = record_path
        try:
            _write_record(record_path, {
                "version": 1, "id": record_path.stem, "runner_id": handle.id,
                "pool": handle.pool, "backend": self.name, "pid": process.pid,
                "kernel_pid": os.getpid(), "kernel_id": request.kernel_id,
                "started": time.time(), "gpus": gpus, "node": self._node, "log": str(log)})
        except OSError:
            pass  # records help the UI; a read-only runtime dir must not stop the runner
        runner.watcher = asyncio.get_running_loop().create_task(self._watch(runner))
        if self._closed:  # close() ran while the process started, and did not see it
            await self.terminate(handle, grace=2.0)
            raise self.closed_error(request)
        self.emit(handle, "starting", pid=process.pid, log=str(log), gpus=gpus, node=self._node)
        return handle

    async def _spawn(self, request: BootRequest,
                     gpus: list[str]) -> tuple[asyncio.subprocess.Process, Path]:
        env = {**os.environ, **self.env, **runner_env(request), **dict(request.spec.env)}
        env.setdefault("PYTHONUNBUFFERED", "1")
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.runner_id)
        log = self._logs() / f"{safe}-{os.getpid()}-{time.monotonic_ns()}.log"
        with open(log, "wb") as out:
            process = await asyncio.create_subprocess_exec(
                self.python, "-m", _RUNNER_MODULE, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
                cwd=self.runner_cwd(), start_new_session=True)
        return process, log

    async def _watch(self, runner: _Runner) -> None:
        handle, pid = runner.handle, runner.process.pid
        try:
            code = await runner.process.wait()
        finally:
            _signal_group(pid, signal.SIGKILL)  # whatever the cell left behind in its group
            _LIVE.pop(pid, None)
            runner.record.unlink(missing_ok=True)
            if handle.info.get("gpus"):
                self.allocator.release(handle.id)
        handle.info["exit_code"] = code
        before = handle.phase in PRE_CONNECT
        if runner.stopping or handle.phase == "stopping" or (code == 0 and not before):
            what = describe_exit(code).removeprefix("it ")
            self.emit(handle, "stopped", message=f"Runner {handle.id} {what}", exit_code=code)
        else:
            tail = handle.info["log_tail"] = _log_tail(runner.log)
            message = exit_message(handle.id, handle.pool, code, before_connecting=before,
                                   parent=runner.parent)
            if before:
                handle.set_failed(BootError(f"{message}. Log: {runner.log}", reason="exited",
                                            log_tail=tail, pool=handle.pool, runner=handle.id))
            self.emit(handle, "failed", reason="exited", message=message, exit_code=code,
                      log_tail=tail)
        handle.set_exited(code)
        if self._runners.get(handle.id) is runner:
            del self._runners[handle.id]

    async def terminate(self, handle: RunnerHandle, grace: float = 5.0) -> None:
        runner = self._runners.get(handle.id)
        if runner is None or runner.handle is not handle:
            return
        if not handle.exited.done():
            if not runner.stopping:
                runner.stopping = True
                self.emit(handle, "stopping", grace=grace)
            _signal_group(runner.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(handle.exited), grace)
            except asyncio.TimeoutError:
                _signal_group(runner.process.pid, signal.SIGKILL)
                await asyncio.shield(handle.exited)
        if runner.watcher is not None:
            await asyncio.shield(runner.watcher)

    async def close(self) -> None:
        self._closed = True
        runners = list(self._runners.values())
        await asyncio.gather(*(self.terminate(r.handle, grace=2.0) for r in runners),
                             return_exceptions=True)
        if self._own_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def runner_cwd(self) -> str:
        """The runners' working directory: ``cwd``, else the kernel's (now)."""
        return self.cwd or os.getcwd()

    def describe(self) -> str:
        if self._allocator is None:
            return "local"
        return f"local ({len(self._allocator.gpus)} GPUs)"
