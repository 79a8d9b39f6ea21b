"""Container processes: spawn in their own session, log to files, reap by pidfd.

One reaper thread waits on the pidfds of every live container (no polling, no
thread per container) and reports exits through a callback. Every live
container also has a record ``<state-dir>/run/containers/<pid>`` holding its
start time, so ``sim down`` can kill what an agent that died left behind.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from .._paths import previous_log_path

__all__ = ["ProcessTable", "exit_code", "proc_start_time", "kill_recorded"]


def exit_code(returncode: int) -> int:
    """A container exit code: signals become ``128 + signum`` as in a runtime."""
    return 128 - returncode if returncode < 0 else returncode


def _started(pid: int) -> tuple[str, bool] | None:
    """(start time, zombie?) of ``pid`` (psutil), or None when it is gone."""
    try:
        proc = psutil.Process(pid)
        return repr(proc.create_time()), proc.status() in (psutil.STATUS_ZOMBIE,
                                                           psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def proc_start_time(pid: int) -> str | None:
    """When ``pid`` started, as a string (identifies a pid across reuse).

    Returns
    -------
    str or None
        None when the process is gone or a zombie (exited, not yet reaped).
    """
    started = _started(pid)
    return None if started is None or started[1] else started[0]


def kill_recorded(record_dir: Path) -> list[int]:
    """SIGKILL the process group of every recorded container still alive.

    Parameters
    ----------
    record_dir : Path
        ``<state-dir>/run/containers``.

    Returns
    -------
    list of int
        The pids that were signalled.
    """
    killed: list[int] = []
    if not record_dir.is_dir():
        return killed
    for record in record_dir.iterdir():
        try:
            pid = int(record.name)
            start = record.read_text().strip()
        except (ValueError, OSError):
            continue
        started = _started(pid)
        # A zombie leader may still have live children in its group: signal it too.
        if started is not None and started[0] == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        record.unlink(missing_ok=True)
    return killed


class ProcessTable:
    """Live container processes and the thread that reaps them.

    Parameters
    ----------
    state_dir : Path
        The agent's state directory.
    on_exit : callable
        ``on_exit(key, exit_code)``, called from the reaper thread.
    """

    def __init__(self, state_dir: Path, on_exit: Callable[[Any, int], None]) -> None:
        self.records = state_dir / "run" / "containers"
        self.records.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[subprocess.Popen[bytes], Any]] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._thread = threading.Thread(target=self._reap, name="reaper", daemon=True)
        self._thread.start()

    def spawn(
        self,
        key: Any,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log: Path,
    ) -> subprocess.Popen[bytes]:
        """Start a container process in a new session, stdout+stderr to ``log``.

        Raises
        ------
        OSError
            The executable is missing or not runnable.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists() and log.stat().st_size:
            log.replace(previous_log_path(log))
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        start = proc_start_time(proc.pid)
        if start is not None:
            (self.records / str(proc.pid)).write_text(start)
        with self._lock:
            self.procs[proc.pid] = proc
            self._pending.append((proc, key))
        os.write(self._wake_w, b"x")
        return proc

    @staticmethod
    def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        """Send ``sig`` to the container's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _reap(self) -> None:
        # A daemon thread: it ends with the agent process.
        while True:
            for sel_key, _ in self._selector.select():
                if sel_key.data is None:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        pending, self._pending = self._pending, []
                    for proc, key in pending:
                        self._watch(proc, key)
                    continue
                proc, key = sel_key.data
                self._selector.unregister(sel_key.fd)
                os.close(sel_key.fd)
                self._exited(proc, key)

    def _watch(self, proc: subprocess.Popen[bytes], key: Any) -> None:
        if proc.returncode is None:  # not reaped yet (kill_all's wait() may have)
            try:
                fd = os.pidfd_open(proc.pid)
            except ProcessLookupError:
                pass  # already exited and reaped
            else:
                self._selector.register(fd, selectors.EVENT_READ, (proc, key))
                return
        self._exited(proc, key)

    def _exited(self, proc: subprocess.Popen[bytes], key: Any) -> None:
        code = exit_code(proc.wait())
        # Like a runtime tearing down the container's cgroup: what the main
        # process left behind in its group dies with it.
        self.signal_group(proc, signal.SIGKILL)
        with self._lock:
            self.procs.pop(proc.pid, None)
        (self.records / str(proc.pid)).unlink(missing_ok=True)
        self._on_exit(key, code)

    def kill_all(self, grace: float) -> None:
        """SIGTERM every container group, wait up to ``grace`` seconds, SIGKILL the rest."""
        import time

        with self._lock:
            procs = list(self.procs.values())
        for proc in procs:
            self.signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            self.signal_group(proc, signal.SIGKILL)
        kill_recorded(self.records)
