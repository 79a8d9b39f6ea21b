"""The kernel's side of a local runner template (warm starts for local runners).

A :class:`RunnerTemplate` is one ``python -m jupyter_flame.runner.template`` process that has
imported the runner and IPython and forks a new runner per request (see that module for the
process's side, the messages and what a forked child does). A :class:`LocalBackend
<jupyter_flame.backends.local.LocalBackend>` starts one next to its first runner (which is
spawned the usual way meanwhile, so the first runner is no slower) and forks later runners from
it once it has said ``ready``.

A runner is spawned as before, never failed, whenever the template cannot serve it
(:meth:`RunnerTemplate.refusal` says why, and the boot falls back silently):

- the backend's ``python`` is not the kernel's own interpreter (the template runs the kernel's
  interpreter; another one would need its own imports), or the platform has no ``fork`` and
  pidfds (Linux 5.3+);
- the template is still importing, said it is unusable (a thread or a CUDA library at start-up),
  died, or did not answer a fork request within :data:`FORK_TIMEOUT`;
- the runner's environment differs from the template's in a variable read when an interpreter
  or a C library starts (:func:`start_time_variable`: ``PYTHONPATH``, ``PYTHONHASHSEED``,
  ``LD_LIBRARY_PATH``, ``LC_ALL``...), or does not fit the room the template keeps for rewriting
  ``/proc/<pid>/environ`` (:data:`ENV_ROOM`).

Exits: the template reaps its children and reports their exit codes; :class:`ForkedRunner`
``.wait()`` returns them like ``asyncio.subprocess.Process.wait()``. If the template itself dies,
its children die too (``PR_SET_PDEATHSIG``); each child's pidfd then tells the kernel when it
is gone, reported as killed by SIGKILL.
"""

from __future__ import annotations

import array
import asyncio
import errno
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ENV_ROOM", "FORK_TIMEOUT", "ForkedRunner", "RunnerProcess", "RunnerTemplate",
           "start_time_variable"]

TEMPLATE_MODULE = "jupyter_flame.runner.template"

ENV_ROOM = 64 * 1024
"""Bytes of padding in the template's environment: a forked runner's environment may be this
much larger than the template's and still show in its ``/proc/<pid>/environ``."""

FORK_TIMEOUT = 3.0
"""Seconds a fork request may take before the template is given up (and the runner spawned)."""

_ROOM_VARIABLE = "JUPYTER_FLAME_TEMPLATE_ROOM"
_START_PREFIXES = ("PYTHON", "LD_", "LC_", "MALLOC_", "GLIBC_", "OPENBLAS_", "OMP_", "MKL_")
_START_NAMES = frozenset({"LANG", "LANGUAGE"})


def start_time_variable(name: str) -> bool:
    """Whether environment variable ``name`` is read when an interpreter (or a C library it
    loads) starts, so that a fork cannot give a runner another value of it."""
    return name.startswith(_START_PREFIXES) or name in _START_NAMES


class RunnerProcess(Protocol):
    """What the backend needs of a runner process: spawned or forked."""

    @property
    def pid(self) -> int: ...

    async def wait(self) -> int: ...


class ForkedRunner:
    """A runner forked by the template: its pid and, once it ended, its exit code."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self._pid = pid
        self.exited = exited

    @property
    def pid(self) -> int:
        return self._pid

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal), as ``Process.wait()``."""
        return await asyncio.shield(self.exited)


def _env_bytes(env: dict[str, str]) -> int:
    return sum(len(os.fsencode(f"{k}={v}")) + 1 for k, v in env.items())


class RunnerTemplate:
    """One template process for one backend, driven from that backend's event loop.

    Parameters
    ----------
    python
        The backend's interpreter; the template is only used when it is ``sys.executable``.
    log
        The template's own log file (its stdout and stderr).
    """

    def __init__(self, python: str, log: Path) -> None:
        self.python = python
        self.log = log
        self.env: dict[str, str] = {}
        self.pid: int | None = None
        self.problem: str | None = None  # why it cannot serve (set once, never cleared)
        self.room = 0
        self._sock: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ready = False
        self._ids = 0
        self._pending: dict[int, asyncio.Future[ForkedRunner | None]] = {}
        self._children: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._settled: asyncio.Future[None] | None = None  # done once ready or lost

    @staticmethod
    def unsupported(python: str) -> str | None:
        """Why no template can serve a backend running ``python`` here; ``None``: it can."""
        if python != sys.executable:
            return f"python {python!r} is not the kernel's interpreter {sys.executable!r}"
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
            return "forking runners needs Linux pidfds"
        return None

    @property
    def ready(self) -> bool:
        """Whether fork requests are served now."""
        return self._ready and self.problem is None

    def begin(self, env: dict[str, str], cwd: str) -> None:
        """Start the template (once; later calls do nothing) with ``env``, the runners' base
        environment, in ``cwd``, in the background of the running loop."""
        if self._starting is not None or self.problem is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the backend's loop: the next boot begins it
        self._settled = loop.create_future()
        self._starting = loop.create_task(self._start(env, cwd))

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the template is ready or given up (at most ``timeout`` seconds);
        whether it is ready."""
        if self._settled is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._settled), timeout)
            except asyncio.TimeoutError:
                pass
        return self.ready

    async def _start(self, env: dict[str, str], cwd: str) -> None:
        try:
            await self._launch(env, cwd)
        except (OSError, ValueError) as exc:
            self._lost(f"could not start: {exc}")

    async def _launch(self, env: dict[str, str], cwd: str) -> None:
        self._loop = asyncio.get_running_loop()
        self.env = {**env, _ROOM_VARIABLE: "x" * ENV_ROOM}
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(self.log, "wb") as out:
                self._process = await asyncio.create_subprocess_exec(
                    self.python, "-m", TEMPLATE_MODULE, str(theirs.fileno()), str(os.getpid()),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, env=self.env, cwd=cwd,
                    start_new_session=True, pass_fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.pid = self._process.pid
        mine.setblocking(False)
        self._sock = mine
        self._loop.add_reader(mine.fileno(), self._readable)

    def refusal(self, env: dict[str, str]) -> str | None:
        """Why a runner with environment ``env`` cannot be forked now; ``None``: it can."""
        if not self.ready:
            return self.problem or "the template is not ready yet"
        changed = sorted(k for k in set(env) | set(self.env)
                         if start_time_variable(k) and env.get(k) != self.env.get(k))
        if changed:
            return f"the runner's {', '.join(changed)} differ from the template's"
        if _env_bytes(env) + 32 > self.room:
            return "the runner's environment is larger than the template's room for it"
        return None

    async def fork(self, env: dict[str, str], cwd: str, key_fd: int,
                   log_fd: int) -> ForkedRunner | None:
        """Fork a runner with ``env`` in ``cwd``, its key pipe ``key_fd`` and log ``log_fd``
        (both duplicated into the template); ``None`` when the template cannot (spawn it)."""
        sock, loop = self._sock, self._loop
        if sock is None or loop is None or self.refusal(env) is not None:
            return None
        self._ids += 1
        request_id = self._ids
        payload = json.dumps({"op": "fork", "id": request_id, "env": env, "cwd": cwd}).encode()
        reply: asyncio.Future[ForkedRunner | None] = loop.create_future()
        self._pending[request_id] = reply
        try:
            sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", [key_fd, log_fd]))])
            return await asyncio.wait_for(asyncio.shield(reply), FORK_TIMEOUT)
        except asyncio.TimeoutError:
            self._lost(f"it did not answer a fork request within {FORK_TIMEOUT} s")
            return None
        except OSError as exc:  # full or closed socket, a message too large
            if exc.errno not in (errno.EAGAIN, errno.EMSGSIZE):  # those concern one runner
                self._lost(f"its socket failed: {exc}")
            return None
        finally:
            self._pending.pop(request_id, None)

    def _readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"its socket failed: {exc}")
                return
            if not data:
                self._lost("it exited")
                return
            try:
                self._message(json.loads(data))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._lost(f"it sent a bad message ({exc})")
                return

    def _message(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready":
            self.room = int(message.get("room") or 0) - ENV_ROOM // 16  # keep some slack
            if message.get("error"):
                self._lost(f"it could not prepare: {message['error']}")
            elif message.get("threads") != 1:
                self._lost(f"it runs {message.get('threads')} threads; a template forks only "
                           "while it has one")
            elif self.room <= 0:
                self._lost("it has no room to rewrite a runner's /proc environment")
            else:
                self._ready = True
                if self._settled is not None and not self._settled.done():
                    self._settled.set_result(None)
        elif op in ("forked", "refused"):
            reply = self._pending.get(message["id"])
            forked = None
            if op == "forked":
                assert self._loop is not None
                forked = ForkedRunner(int(message["pid"]), self._loop.create_future())
                self._children[forked.pid] = forked.exited
            if reply is not None and not reply.done():
                reply.set_result(forked)
            elif forked is not None:  # the request gave up meanwhile: nobody watches it
                _killpg(forked.pid)
        elif op == "exit":
            pid = int(message["pid"])
            assert self._loop is not None
            exited = self._children.pop(pid, None) or self._loop.create_future()
            if not exited.done():
                exited.set_result(int(message["code"]))

    def _lost(self, why: str) -> None:
        """The template cannot serve any more: boots spawn; its children die with it
        (``PDEATHSIG``) and are reported killed once their pidfds say they are gone."""
        if self.problem is None:
            self.problem = f"the runner template {why}"
        self._ready = False
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()  # the template kills what is left of its children and exits
        for reply in self._pending.values():
            if not reply.done():
                reply.set_result(None)
        for pid, exited in list(self._children.items()):
            self._watch_orphan(pid, exited)
        self._children.clear()

    def _watch_orphan(self, pid: int, exited: asyncio.Future[int]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone (and reaped) already
            if not exited.done():
                exited.set_result(-signal.SIGKILL)
            return

        def gone() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(-signal.SIGKILL)

        loop.add_reader(pidfd, gone)

    async def close(self, grace: float = 3.0) -> None:
        """Stop the template (its runners, if any are left, die with it)."""
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        self._lost("was closed")
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            _killpg(process.pid)
            await process.wait()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def template_log(folder: Path) -> Path:
    """A fresh log file name for a template in ``folder``."""
    return folder / f"template-{os.getpid()}-{time.monotonic_ns()}.log"
