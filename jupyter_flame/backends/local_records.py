"""Local runners seen from outside their kernel: records in Jupyter's runtime directory, and
the process checks and kills ``jupyter flame list`` / ``cleanup`` rely on.

Processes are inspected with psutil (command line, environment, status, process group), so the
checks work wherever psutil does, not only with a Linux ``/proc``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TypedDict

import psutil

__all__ = ["LocalRunnerRecord", "RUNNER_MODULE", "alive", "cleanup_local_runners",
           "list_local_runner_records", "log_tail", "runners_dir", "signal_group",
           "stop_local_runner", "write_record"]

RUNNER_MODULE = "jupyter_flame.runner"


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
    resources: dict[str, str | int]
    live: dict[str, object]  # activity (busy/idle), cpu_percent, rss: see backends.published
    action: str  # set by cleanup_local_runners: "killed" or "removed"


def runners_dir(runtime_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where runner records live: ``<jupyter runtime dir>/jupyter-flame/runners``."""
    if runtime_dir is None:
        from jupyter_core.paths import jupyter_runtime_dir
        runtime_dir = jupyter_runtime_dir()
    return Path(runtime_dir) / "jupyter-flame" / "runners"


def write_record(path: Path, record: LocalRunnerRecord) -> None:
    """Write ``record`` to ``path`` atomically (readers never see half a record), readable by
    its owner only (mode 0600, like a kernel connection file, though it holds no secret)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record, indent=1))
    os.replace(tmp, path)


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a runner's log (of its last 64 KiB); ``""`` if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _carries(proc: psutil.Process, runner_id: str) -> bool | None:
    """Whether ``proc``'s environment names runner ``runner_id``; ``None``: not ours to read."""
    try:
        return proc.environ().get("JUPYTER_FLAME_RUNNER_ID") == runner_id
    except psutil.AccessDenied:
        return None
    except (psutil.NoSuchProcess, OSError):
        return False


def _is_runner(pid: int, runner_id: str) -> bool:
    """Whether ``pid`` really is the jupyter-flame runner ``runner_id`` (guards pid reuse)."""
    try:
        proc = psutil.Process(pid)
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if RUNNER_MODULE not in argv:
        return False
    carries = _carries(proc, runner_id)
    return True if carries is None else carries  # not ours to read: the command line has to do


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


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except OSError:
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except OSError:
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
    return bool(_group_members(pgid))


def _runner_group(pid: int, runner_id: str) -> bool:
    """Whether process group ``pid`` is the runner ``runner_id``'s: its leader is that runner,
    or, the leader gone, a process left in the group carries the runner's environment."""
    if alive(pid):
        return _is_runner(pid, runner_id)
    return any(_carries(member, runner_id) for member in _group_members(pid))


def _kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, then SIGKILL what is left of it after ``grace`` seconds (the whole
    group counts, not only its leader: a child may ignore SIGTERM or outlive the leader)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not signal_group(pgid, sig):
            return
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(pgid):
            return


def stop_local_runner(record: LocalRunnerRecord, *,
                      runtime_dir: str | os.PathLike[str] | None = None,
                      grace: float = 3.0) -> str:
    """Stop the runner of ``record`` (its whole process group) and remove the record.

    Returns ``"killed"``, or ``"removed"`` when the runner was already gone (or the process
    with that pid is not that runner any more: then only the record goes).
    """
    pid = record["pid"]
    action = "removed"
    if _runner_group(pid, record.get("runner_id", "")):
        _kill_group(pid, grace)
        action = "killed"
    (runners_dir(runtime_dir) / f"{record['id']}.json").unlink(missing_ok=True)
    return action


def cleanup_local_runners(dead_parent_only: bool = True, *,
                          runtime_dir: str | os.PathLike[str] | None = None,
                          grace: float = 3.0) -> list[LocalRunnerRecord]:
    """Kill leftover local runners and remove their records.

    A runner is killed (SIGTERM to its process group, then SIGKILL after ``grace`` seconds to
    whatever is left of the group) when its kernel process is gone, or always with
    ``dead_parent_only=False``, and only once its command line and environment show it really is that
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
        elif dead_parent_only and kernel_pid and alive(kernel_pid):
            continue
        else:
            _kill_group(pid, grace)
            record["action"] = "killed"
        (folder / f"{record['id']}.json").unlink(missing_ok=True)
        done.append(record)
    return done
