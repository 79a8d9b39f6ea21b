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

Local runners watch their kernel's pid (their parent *is* the kernel:
``JUPYTER_FLAME_KERNEL_PID``, set by the local backend). A runner pod's kernel is on another
machine, so once connected a pod runner starts a *connection* sentinel instead
(``... sentinel --socket FD RUNNER PGID GRACE``): it holds a duplicate of the channel's socket
and polls it for ``POLLRDHUP`` only, which the kernel's TCP stack raises when the kernel process
dies (its socket is closed, FIN), without reading a byte of the runner's data. It then gives the
runner ``GRACE`` seconds to leave on its own (a runner that was retired or told to shut down
does), and SIGKILLs the group if it has not. A kernel whose whole node vanishes sends no FIN:
there the runner's own ``parent_timeout`` (and the server's reaper) remain the backstop.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

__all__ = ["sentinel_pid", "start_connection_sentinel", "start_sentinel"]

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


def _watch_socket(fd: int, runner: int, pgid: int, grace: float) -> None:
    """Wait for the peer of socket ``fd`` to close (or the runner to exit); then, unless the
    runner leaves within ``grace`` seconds, kill the group."""
    try:
        rfd = os.pidfd_open(runner)
    except (AttributeError, OSError):
        return
    poller = select.poll()
    poller.register(fd, getattr(select, "POLLRDHUP", 0x2000))  # never POLLIN: never reads
    poller.register(rfd, select.POLLIN)
    ready = {f for f, _ in poller.poll()}
    if rfd in ready:
        return
    poller.unregister(fd)
    if poller.poll(int(grace * 1000)):
        return  # the runner left on its own
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def start_connection_sentinel(sock_fd: int, grace: float = 5.0) -> int | None:
    """Start the connection sentinel for the channel socket ``sock_fd`` (pod runners)."""
    global _SENTINEL
    if _SENTINEL is not None:
        return None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--socket", str(sock_fd), str(os.getpid()),
             str(os.getpgrp()), str(grace)],
            stdin=subprocess.DEVNULL, close_fds=True, pass_fds=(sock_fd,))
    except OSError:
        return None
    _SENTINEL = proc.pid
    return proc.pid


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
    if argv[:1] == ["--socket"]:
        fd, runner, pgid = (int(a) for a in argv[1:4])
        _watch_socket(fd, runner, pgid, float(argv[4]))
        return
    kernel, runner, pgid = (int(a) for a in argv)
    _watch(kernel, runner, pgid)


if __name__ == "__main__":
    main(sys.argv[1:])
