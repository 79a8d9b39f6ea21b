"""The local runner template: ``python -m jupyter_flame.runner.template SOCKET_FD KERNEL_PID``.

A forkserver for local runners. The local backend starts it next to its first runner; it
imports what a runner imports before its first result (the runner, the channel, the values,
IPython), then waits, and each runner after that is a ``fork()`` of it instead of a new
interpreter, so it skips the ~0.2 s of start-up and imports and reaches its first result in
tens of milliseconds (``benchmarks/bench_cold_start.py``).

The conversation (one ``SOCK_SEQPACKET`` socket pair, made by the kernel, one JSON message per
packet; the other end is the kernel's alone: nothing on disk to connect to)::

    template -> kernel  {"op": "ready", "pid": P, "threads": 1, "room": BYTES, "error": null}
    kernel -> template  {"op": "fork", "id": N, "env": {...}, "cwd": DIR}  + 2 fds (key, log)
    template -> kernel  {"op": "forked", "id": N, "pid": C}  or  {"op": "refused", "id": N, ...}
    template -> kernel  {"op": "exit", "pid": C, "code": CODE}   (negative: killed by a signal)

The channel key is never in a message, the environment or a file: the request carries the read
end of the kernel's key pipe (``SCM_RIGHTS``), which the child finds as ``JUPYTER_FLAME_KEY_FD``
exactly as a spawned runner does. The log file travels as a descriptor too.

What a forked child does before it runs ``python -m jupyter_flame.runner``'s ``__main__`` (with
:mod:`runpy`, so ``sys.argv`` and ``__main__`` are a spawned runner's): a session and process
group of its own; ``PR_SET_PDEATHSIG`` (it is killed if the template dies); the template's
descriptors closed; stdin ``/dev/null``, stdout and stderr to its log; ``os.environ`` (and the C
environment) replaced by the request's; its ``/proc/<pid>/environ`` and ``cmdline`` rewritten in
place to that environment and ``python -m jupyter_flame.runner`` (so ``jupyter flame list``,
``cleanup`` and leftover checks see a runner, not the template; the template is started with
``room`` bytes of padding in its environment for this); ``chdir`` and ``sys.path[0]`` to the
runner's directory; ``time.tzset()``; random state reseeded (``random`` does it itself after a
fork; numpy's legacy global ``RandomState``, if anything imported numpy, is reseeded here).

What differs from a spawned runner, on purpose or by nature:

- The template is the runner's sentinel: it watches the kernel's pidfd and SIGKILLs every
  child's process group when the kernel dies (as :mod:`jupyter_flame.runner.sentinel` does for a
  spawned runner, and equally while a cell holds the GIL), so forked runners start no sentinel
  process of their own (``start_sentinel`` declines: their parent is not the kernel).
- All runners forked from one template share its ``str`` hash seed (``PYTHONHASHSEED`` is fixed
  at interpreter start); set iteration order is the same in each of them.
- C libraries the template loaded read their environment once, at load: this is why the
  backend forks only when the runner's environment agrees with the template's in every
  variable read at start-up (``PYTHON*``, ``LD_*``, ``LC_*``, ``LANG``, ``MALLOC_*``...), and
  why the template never imports numpy, torch or CUDA (``CUDA_VISIBLE_DEVICES`` is per runner).

Rules the template keeps: no threads and no event loop (``ready`` reports the thread count;
the backend refuses a template with more than one), no signal handlers. It exits, SIGKILLing its
children's groups, when the kernel dies (pidfd), when the socket closes (the backend closed),
or on SIGTERM (default action; children then die by their ``PDEATHSIG``). It reaps each child
through its pidfd and reports ``exit`` with the code ``subprocess`` would give.
"""

from __future__ import annotations

import array
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

__all__ = ["PRELOAD", "main"]

PRELOAD = (
    "jupyter_flame.runner.main",
    "jupyter_flame.runner._lifecycle",
    "jupyter_flame.runner._execution",
    "jupyter_flame.runner._outputs",
    "jupyter_flame.values.shipping",
    "jupyter_flame.channel.channel",  # numpy comes later, with the first large frame
    "jupyter_flame.channel.dial",
    "IPython.core.interactiveshell",
    "IPython.core.completerlib",
    "encodings.idna",
    "mmap",
    "stringprep",
)
"""What the template imports: what a runner imports up to its first result, except numpy:
importing numpy starts OpenBLAS's worker threads, and the template must have none. The channel
imports numpy only with its first large frame (``_framing._empty``), so a forked runner's first
small result never waits for it."""

RUNNER_MODULE = "jupyter_flame.runner"
_PR_SET_PDEATHSIG = 1
_MAX_MESSAGE = 1 << 20


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _proc_regions() -> tuple[int, int, int, int]:
    """``arg_start, arg_end, env_start, env_end`` of this process (``/proc/self/stat``)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state); arg_start..env_end are fields 48..51
    start, end, env_start, env_end = (int(x) for x in fields[45:49])
    return start, end, env_start, env_end


def _overwrite(start: int, end: int, block: bytes) -> None:
    """Write ``block`` at ``start``, NUL-filled up to ``end`` (our own stack's top)."""
    size = end - start
    if len(block) > size:
        raise ValueError(f"{len(block)} bytes do not fit in {size}")
    ctypes.memmove(start, block + b"\0" * (size - len(block)), size)


def _env_block(env: dict[str, str]) -> bytes:
    return b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in env.items())


def _retitle(env: dict[str, str]) -> None:
    """Make ``/proc/self/cmdline`` and ``/proc/self/environ`` a spawned runner's."""
    start, end, env_start, env_end = _proc_regions()
    argv = [sys.executable, "-m", RUNNER_MODULE]
    _overwrite(start, end, b"".join(os.fsencode(a) + b"\0" for a in argv))
    _overwrite(env_start, env_end, _env_block(env))


def _replace_environ(env: dict[str, str]) -> None:
    """``os.environ`` and the C environment become ``env`` (nothing points into the initial
    environment block afterwards, so :func:`_retitle` may overwrite it)."""
    os.environ.clear()
    _libc().clearenv()
    os.environ.update(env)


def _reseed() -> None:
    """Fresh random state in a forked child (``random`` reseeds itself through
    ``os.register_at_fork``; numpy's legacy global generator does not)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    tempfile: Any = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # recomputed from the runner's TMPDIR


class Template:
    """The template's state: the kernel's socket, its pidfd, the children it forked."""

    def __init__(self, sock: socket.socket, kernel_pid: int) -> None:
        self.sock = sock
        self.kernel_pid = kernel_pid
        self.kernel_fd = os.pidfd_open(kernel_pid)
        self.children: dict[int, int] = {}  # pidfd -> pid
        self.pid = os.getpid()
        self.start_dir = os.getcwd()
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)
        self.poller.register(self.kernel_fd, select.POLLIN)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the kernel went away: the next poll says so

    def serve(self) -> None:
        """Until the kernel dies or closes the socket: fork on request, report exits."""
        while True:
            for fd, _ in self.poller.poll():
                if fd == self.kernel_fd:
                    return
                if fd == self.sock.fileno():
                    if not self._request():
                        return
                elif fd in self.children:
                    self._reap(fd)

    def _request(self) -> bool:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(
                _MAX_MESSAGE, socket.CMSG_SPACE(2 * array.array("i").itemsize))
        except OSError:
            return False
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[:len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
        if not data:
            return False
        try:
            request = json.loads(data)
            if request.get("op") != "fork" or len(fds) != 2:
                raise ValueError("not a fork request with a key and a log descriptor")
            self._fork(request, fds[0], fds[1])
        except Exception as exc:  # a bad request or a failed fork: refuse it, keep serving
            self.send({"op": "refused", "id": _id(data), "error": f"{type(exc).__name__}: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _fork(self, request: dict[str, Any], key_fd: int, log_fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(request, key_fd, log_fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        self.send({"op": "forked", "id": request["id"], "pid": pid})

    def _reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        self.send({"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def kill_children(self) -> None:
        """SIGKILL every child's process group (what a spawned runner's sentinel does)."""
        for pid in self.children.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def _close_inherited(self, keep: tuple[int, ...]) -> None:
        """In a child: close the template's own descriptors (socket, pidfds)."""
        self.sock.close()
        for fd in (self.kernel_fd, *self.children):
            if fd not in keep:
                os.close(fd)
        self.children.clear()

    def _child(self, request: dict[str, Any], key_fd: int, log_fd: int) -> NoReturn:
        try:
            os.setsid()
            if _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or \
                    os.getppid() != self.pid:
                os._exit(1)  # the template died already: nobody would report this runner
            self._close_inherited(keep=(key_fd, log_fd))
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            env = {str(k): str(v) for k, v in request["env"].items()}
            env["JUPYTER_FLAME_KEY_FD"] = str(key_fd)
            _replace_environ(env)
            try:
                _retitle(env)
            except (OSError, ValueError) as exc:
                sys.stderr.write(f"jupyter-flame template: cannot rewrite /proc/self: {exc}\n")
            cwd = str(request["cwd"])
            os.chdir(cwd)
            if sys.path and sys.path[0] == self.start_dir:
                sys.path[0] = cwd
            importlib.invalidate_caches()
            import time

            time.tzset()
            _reseed()
            import runpy

            sys.argv = sys.argv[:1]  # runpy sets argv[0] to the runner's __main__.py
            sys.orig_argv = [sys.executable, "-m", RUNNER_MODULE]
            runpy.run_module(RUNNER_MODULE, run_name="__main__", alter_sys=True)
        except BaseException:
            try:
                os.write(2, traceback.format_exc().encode("utf-8", "replace"))
            except OSError:
                pass
        os._exit(1)  # the runner's main() leaves with os._exit: only a failure gets here


def _id(data: bytes) -> Any:
    try:
        return json.loads(data).get("id")
    except (ValueError, AttributeError):
        return None


def _threads() -> int:
    """This process's threads, native ones included (``/proc/self/task``)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _room() -> int:
    _, _, env_start, env_end = _proc_regions()
    return env_end - env_start


def main(argv: list[str]) -> None:
    """Import the runner, report ``ready`` on the socket ``argv[0]``, serve until the kernel
    (``argv[1]``) dies or closes the socket."""
    sock = socket.socket(fileno=int(argv[0]))
    kernel_pid = int(argv[1])
    if os.getppid() != kernel_pid:
        return
    template = Template(sock, kernel_pid)
    error = None
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        room = _room()
    except Exception as exc:
        error, room = f"{type(exc).__name__}: {exc}", 0
    for banned in ("torch", "cupy", "jax", "tensorflow"):  # CUDA is per runner
        if banned in sys.modules and error is None:
            error = f"{banned} was imported at start-up; the template must not hold it"
    gc.collect()
    gc.freeze()  # what is there now stays shared with the children (no copy-on-write by gc)
    template.send({"op": "ready", "pid": os.getpid(), "threads": _threads(), "room": room,
                   "error": error})
    try:
        if error is None:
            template.serve()
        else:
            sock.recv(1)  # unusable: wait for the backend to close it
    finally:
        template.kill_children()


if __name__ == "__main__":
    main(sys.argv[1:])
