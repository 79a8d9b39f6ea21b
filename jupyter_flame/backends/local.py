"""The local backend: runners are subprocesses of the kernel, on this machine.

Each runner is ``python -m jupyter_flame.runner`` in a session (process group) of its own, with
the kernel's environment plus :func:`~jupyter_flame.backends.base.runner_env` plus the spec's
``env``, in the kernel's working directory. Its stdout and stderr go to a log file, whose last
lines explain a runner that dies before it connects. ``--gpu N`` runners get N GPUs of their own
through ``CUDA_VISIBLE_DEVICES`` (see :mod:`jupyter_flame.backends.gpu`); ``--gpu 0`` runners
inherit the kernel's environment unchanged.

Warm starts (``template=True``, the default): next to its first runner the backend starts a
runner template, a process that has imported the runner and IPython, and later runners are
forks of it (:mod:`jupyter_flame.backends.local_template`; ~0.2 s less to a first result).
A forked runner is indistinguishable from a spawned one from outside (pid and process group of
its own, environment, ``/proc/<pid>/cmdline``, log, exit codes, records); whenever the template
cannot serve a runner the runner is spawned as above (``handle.info["forked"]`` tells which).

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
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable as CallableType
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Callable, Dict, Instance, List, Unicode
from traitlets.config import Config

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
from jupyter_flame.backends.gpu import SYSTEM_GPUS, GpuAllocator, GpuInfo, SystemGpus
from jupyter_flame.backends.local_records import (
    RUNNER_MODULE,
    LocalRunnerRecord,
    alive,
    cleanup_local_runners,
    list_local_runner_records,
    log_tail,
    runners_dir,
    signal_group,
    write_record,
)
from jupyter_flame.backends.local_template import RunnerProcess, RunnerTemplate, template_log
from jupyter_flame.backends.published import LiveState, StatePublisher
from jupyter_flame.config import given
from jupyter_flame.errors import BootError

__all__ = ["LocalBackend", "LocalRunnerRecord", "cleanup_local_runners",
           "list_local_runner_records", "runners_dir"]

TEMPLATE_DELAY = 1.0
"""Seconds after its first runner connected that a backend starts its runner template."""

_LIVE: dict[int, Path] = {}  # pgid -> record, for runners still alive at interpreter exit


@atexit.register
def _kill_live_runners() -> None:
    for pgid, record in list(_LIVE.items()):
        signal_group(pgid, signal.SIGTERM)
        record.unlink(missing_ok=True)


@dataclass
class _Runner:
    handle: RunnerHandle
    process: RunnerProcess
    record: Path
    log: Path
    parent: str
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False
    data: LocalRunnerRecord | None = None  # the record as written (the live state added to it)


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


class LocalBackend(Backend):
    """Runners as subprocesses of the kernel.

    Every option is a configurable trait (``c.LocalBackend.env = {...}`` in
    ``ipython_config.py``), listed with its help below and in docs/configuration.md; a keyword
    given here wins (paths may be ``os.PathLike``). GPUs: given ``gpus`` or ``discover``, a
    backend has an allocator of its own; otherwise GPUs are discovered on the first ``--gpu``
    request and shared by every LocalBackend of the process (``system_gpus``), and GPUs held by
    runners of other kernels (per their runner records) are never handed out.
    """

    name = "local"
    same_host = True  # a Unix-socket channel with shared memory (jupyter_flame.channel._shm)

    python = Unicode(None, allow_none=True, help=(
        "The interpreter that runs -m jupyter_flame.runner. None: the kernel's own "
        "(sys.executable).")).tag(config=True)
    env = Dict(value_trait=Unicode(), help=(
        "Extra environment for every runner (below the runner's own variables and the "
        "cell's --env).")).tag(config=True)
    cwd = Unicode(None, allow_none=True, help=(
        "The runners' working directory. None: the kernel's, at boot time.")).tag(config=True)
    gpus = List(Instance(GpuInfo), default_value=None, allow_none=True, help=(
        "The GPUs runners may get (GpuInfo values). None: discovered with nvidia-smi on the "
        "first --gpu request and shared by every LocalBackend of this process.")
    ).tag(config=True)
    discover = Callable(None, allow_none=True, help=(
        "A function returning the GPUs, used instead of nvidia-smi discovery; a backend given "
        "gpus or discover has a GPU allocator of its own.")).tag(config=True)
    system_gpus = Instance(SystemGpus, allow_none=True, help=(
        "Where discovered GPUs are shared. None: the process-wide discovery (every "
        "LocalBackend of this process shares it); a SystemGpus() of its own discovers afresh."
    )).tag(config=True)
    runtime_dir = Unicode(None, allow_none=True, help=(
        "Where runner records go (jupyter flame list/cleanup read them). None: Jupyter's "
        "runtime directory.")).tag(config=True)
    log_dir = Unicode(None, allow_none=True, help=(
        "Where runner logs go. None: a private temporary directory removed by close().")
    ).tag(config=True)
    template = Bool(True, help=(
        "Warm starts: fork runners from a template process that has imported the runner and "
        "IPython (started next to the first runner). Runners are spawned when off, and "
        "whenever the template cannot serve one (another python, start-time variables such as "
        "PYTHONPATH that differ).")).tag(config=True)

    def __init__(self, *, python: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None,
                 gpus: Iterable[GpuInfo] | None = None,
                 discover: CallableType[[], Sequence[GpuInfo]] | None = None,
                 runtime_dir: str | os.PathLike[str] | None = None,
                 log_dir: str | os.PathLike[str] | None = None,
                 system_gpus: SystemGpus | None = None, template: bool | None = None,
                 config: Config | None = None) -> None:
        super().__init__(**given(
            python=python, env=None if env is None else dict(env), cwd=_path(cwd),
            gpus=None if gpus is None else list(gpus), discover=discover,
            runtime_dir=_path(runtime_dir), log_dir=_path(log_dir), system_gpus=system_gpus,
            template=template, config=config))
        self.python = self.python or sys.executable
        self._gpus = None if self.gpus is None else list(self.gpus)
        self._discover = self.discover
        self._allocator: GpuAllocator | None = None
        self._allocator_lock = threading.Lock()
        self._own_log_dir = self.log_dir is None
        self._log_dir = None if self.log_dir is None else Path(self.log_dir)
        self._runners: dict[str, _Runner] = {}
        self._closed = False
        self._node = socket.gethostname()
        self.publisher = StatePublisher(self._publish)
        self._template: RunnerTemplate | None = None
        self._spawned = 0

    def _publish(self, runner_id: str, state: LiveState) -> None:
        """Add the runner's live state (busy/idle, CPU, memory) to its record, for the server."""
        runner = self._runners.get(runner_id)
        if runner is None or runner.data is None or runner.stopping or not state:
            return
        runner.data["live"] = state
        try:
            write_record(runner.record, runner.data)
        except OSError:
            pass

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
        return (self.system_gpus or SYSTEM_GPUS).allocator()

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
            if rec.get("kernel_pid") != os.getpid() and rec.get("gpus") and alive(rec["pid"]):
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
        handle.info.update(pid=process.pid, log=str(log), gpus=gpus,
                           forked=not isinstance(process, asyncio.subprocess.Process))
        record_path = runners_dir(self.runtime_dir) / f"{request.runner_id}-{process.pid}.json"
        host, port = request.parent_address
        parent = dict(request.spec.env).get("JUPYTER_FLAME_PARENT", f"{host}:{port}")
        runner = _Runner(handle, process, record_path, log, parent)
        self._runners[handle.id] = runner
        _LIVE[process.pid] = record_path
        spec = request.spec
        runner.data = {
            "version": 1, "id": record_path.stem, "runner_id": handle.id,
            "pool": handle.pool, "backend": self.name, "pid": process.pid,
            "kernel_pid": os.getpid(), "kernel_id": request.kernel_id,
            "started": time.time(), "gpus": gpus, "node": self._node, "log": str(log),
            "resources": {k: v for k, v in (("cpu", spec.cpu), ("memory", spec.memory),
                                            ("gpu", spec.gpu), ("gpu_type", spec.gpu_type)) if v}}
        try:
            write_record(record_path, runner.data)
        except OSError:
            pass  # records help the UI; a read-only runtime dir must not stop the runner
        runner.watcher = asyncio.get_running_loop().create_task(self._watch(runner))
        if self._closed:  # close() ran while the process started, and did not see it
            await self.terminate(handle, grace=2.0)
            raise self.closed_error(request)
        self.emit(handle, "starting", pid=process.pid, log=str(log), gpus=gpus, node=self._node)
        return handle

    def _base_env(self) -> dict[str, str]:
        """What every runner's environment starts from (the kernel's, then ``env``)."""
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _warm(self) -> RunnerTemplate | None:
        """Begin the template (if it is on and can serve this backend, see
        :mod:`~jupyter_flame.backends.local_template`); the template, or ``None``."""
        python = self.python or sys.executable
        if not self.template or self._closed or RunnerTemplate.unsupported(python):
            return None
        if self._template is None:
            self._template = RunnerTemplate(python, template_log(self._logs()))
        self._template.begin(self._base_env(), self.runner_cwd())
        return self._template

    async def warm_up(self, timeout: float = 30.0) -> bool:
        """Start the runner template now, wait (at most ``timeout`` s) until it is ready;
        whether runners will be forked. Otherwise it starts ``TEMPLATE_DELAY`` s after the
        first runner connected (not to slow that runner's start), or at the second boot."""
        template = self._warm()
        return template is not None and await template.wait_ready(timeout)

    def emit(self, handle: RunnerHandle, phase: str, reason: str = "", message: str = "",
             **details: Any) -> None:
        super().emit(handle, phase, reason, message, **details)
        if phase == "connected" and self._template is None and not self._closed:
            try:  # later: its first cell, and the kernel's next moments, keep the CPU
                asyncio.get_running_loop().call_later(TEMPLATE_DELAY, self._warm)
            except RuntimeError:
                pass

    async def _spawn(self, request: BootRequest,
                     gpus: list[str]) -> tuple[RunnerProcess, Path]:
        env = {**self._base_env(), **runner_env(request), **dict(request.spec.env)}
        env["JUPYTER_FLAME_KERNEL_PID"] = str(os.getpid())  # its sentinel kills it with us
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.runner_id)
        log = self._logs() / f"{safe}-{os.getpid()}-{time.monotonic_ns()}.log"
        # The channel key goes through an inherited pipe, never the environment: a process's
        # initial environment stays readable in /proc/<pid>/environ for its whole life.
        key_read, key_write = os.pipe()
        try:
            try:
                os.write(key_write, env.pop("JUPYTER_FLAME_KEY").encode())
            finally:
                os.close(key_write)
            env["JUPYTER_FLAME_KEY_FD"] = str(key_read)
            with open(log, "wb") as out:
                process: RunnerProcess | None = None
                if self._template is not None:  # None: it cannot serve this runner now
                    process = await self._template.fork(env, self.runner_cwd(), key_read,
                                                        out.fileno())
                if process is None:
                    process = await asyncio.create_subprocess_exec(
                        self.python or sys.executable, "-m", RUNNER_MODULE,
                        stdin=asyncio.subprocess.DEVNULL, stdout=out,
                        stderr=asyncio.subprocess.STDOUT, env=env, cwd=self.runner_cwd(),
                        start_new_session=True, pass_fds=(key_read,))
        finally:
            os.close(key_read)
        self._spawned += 1
        if self._spawned > 1:  # the pool grows before the first runner connected
            self._warm()
        return process, log

    async def _watch(self, runner: _Runner) -> None:
        handle, pid = runner.handle, runner.process.pid
        try:
            code = await runner.process.wait()
        finally:
            signal_group(pid, signal.SIGKILL)  # whatever the cell left behind in its group
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
            tail = handle.info["log_tail"] = log_tail(runner.log, LOG_TAIL_LINES)
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
            signal_group(runner.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(handle.exited), grace)
            except asyncio.TimeoutError:
                signal_group(runner.process.pid, signal.SIGKILL)
                await asyncio.shield(handle.exited)
        if runner.watcher is not None:
            await asyncio.shield(runner.watcher)

    async def close(self) -> None:
        self._closed = True
        runners = list(self._runners.values())
        await asyncio.gather(*(self.terminate(r.handle, grace=2.0) for r in runners),
                             return_exceptions=True)
        if self._template is not None:
            await self._template.close()
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
