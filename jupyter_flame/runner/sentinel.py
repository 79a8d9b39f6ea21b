"""A local runner's sentinel: a second process that kills the runner's whole process group the
moment the kernel that started it dies.

The runner's own liveness checks (the connection closing, ``parent_timeout``) run in Python and
need the GIL; a cell stuck in C code that holds it (a catastrophic regex, a long NumPy call
without releasing) would keep the runner, and whatever its cell started, alive after its kernel
was SIGKILLed. The sentinel (``python -m jupyter_flame.runner.sentinel KERNEL RUNNER PGID``,
about 10 MB) is started before the runner connects and does nothing but wait in the OS: on Linux
on two pidfds (the kernel's and the runner's) with ``poll``, elsewhere by checking both pids
every 0.25 s. It is its own program, not a fork of the runner, so it shares no Python state with
it and is never taken for a runner (its command line differs). When the kernel goes first it SIGKILLs
the process group (the runner, its cells' children, and itself); when the runner goes first it
simply exits.

Only local runners have one (their parent *is* the kernel: ``JUPYTER_FLAME_KERNEL_PID``, set
by the local backend). Runner pods are deleted by the Jupyter server's reaper when their kernel
is gone, and the kubelet SIGKILLs what does not stop within the grace period.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

__all__ = ["sentinel_pid", "start_sentinel"]

POLL = 0.25

_SENTINEL: int | None = None


def sentinel_pid() -> int | None:
    """The sentinel of this runner (not one of its cells' processes: stats leave it out)."""
    return _SENTINEL


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _wait_first(kernel: int, runner: int) -> bool:
    """Block until the kernel or the runner exits; whether it was the kernel."""
    try:
        kfd, rfd = os.pidfd_open(kernel), os.pidfd_open(runner)
    except (AttributeError, OSError):
        kfd = rfd = -1
    if kfd >= 0:
        poller = select.poll()
        poller.register(kfd, select.POLLIN)
        poller.register(rfd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll()}
        return kfd in ready and rfd not in ready
    while True:
        if not _alive(runner):
            return False
        if not _alive(kernel):
            return True
        time.sleep(POLL)


def _watch(kernel: int, runner: int, pgid: int) -> None:
    # it is in the runner's process group (started into it), so killpg takes it too
    if _wait_first(kernel, runner):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def start_sentinel(kernel_pid: int) -> int | None:
    """Start the sentinel in this runner's process group; its pid, or ``None`` when there is
    no kernel to watch (``kernel_pid`` is not this process's parent) or it cannot start."""
    global _SENTINEL
    if kernel_pid <= 0 or os.getppid() != kernel_pid:
        return None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(kernel_pid), str(os.getpid()),
             str(os.getpgrp())], stdin=subprocess.DEVNULL, close_fds=True)
    except OSError:
        return None
    _SENTINEL = proc.pid
    return proc.pid


def main(argv: list[str]) -> None:
    kernel, runner, pgid = (int(a) for a in argv)
    _watch(kernel, runner, pgid)


if __name__ == "__main__":
    main(sys.argv[1:])
