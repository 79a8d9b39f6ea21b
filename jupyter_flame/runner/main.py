"""The runner process: ``python -m jupyter_flame.runner``.

A runner dials its parent (the kernel), authenticates, and then runs the cells and calls the
parent sends (:mod:`jupyter_flame.channel.protocol` describes the conversation). It is configured only
by its environment (see :func:`jupyter_flame.backends.base.runner_env`):

``JUPYTER_FLAME_PARENT`` (``host:port``), ``JUPYTER_FLAME_RUNNER_ID``, ``JUPYTER_FLAME_POOL``,
``JUPYTER_FLAME_KEY`` (hex; pods, from a Secret; removed from the environment as soon as it is
read, so cell code and child processes never see it there) or ``JUPYTER_FLAME_KEY_FD`` (local
runners: an inherited pipe holding the key, read and closed at start, so the key is not in
``/proc/<pid>/environ`` either), ``JUPYTER_FLAME_BOOT_TIMEOUT`` (seconds to keep dialling a parent
that refuses connections; default 30) and ``JUPYTER_FLAME_CACHE_BYTES`` (bound of the value
cache; default 4 GiB).

Threads
-------
- ``flame-io`` runs the asyncio loop: the channel, heartbeats, idle and liveness checks, and
  one outbox through which every other thread sends (so messages keep their order).
- The main thread runs tasks, so that an interrupt (``SIGINT`` to the main thread) breaks out of
  ``time.sleep`` and most C code. Tasks beyond the first run concurrently in worker threads
  (interrupted with ``PyThreadState_SetAsyncExc``, which takes effect at the next bytecode).
- ``flame-output`` flushes buffered stdout/stderr text, and ``flame-fd1``/``flame-fd2`` read
  the process's own descriptors 1 and 2 (child processes' output), see
  :mod:`jupyter_flame.runner._outputs`.

Cells run as in IPython but each in a namespace of its own (:mod:`jupyter_flame.runner._execution`).

Modules: this one is only the entry point (nothing imports it); :mod:`.env` reads the
environment, :mod:`.process_group` leads and cleans the process group, :mod:`.jobs` holds
:class:`~jupyter_flame.runner.jobs.Job` (interrupt delivery), :mod:`._lifecycle` the
:class:`Runner` itself, :mod:`._execution` and :mod:`._outputs` how cells run and print.

Liveness: a runner exits when the connection closes, when no frame arrives for
``parent_timeout`` seconds, on :class:`~jupyter_flame.channel.protocol.Shutdown` or ``SIGTERM``, when
its idle request is accepted, and after its one task when ``single_use``. It exits from the I/O
thread even if the main thread is stuck in user code. The runner leads its own process group;
on exit it sends SIGTERM (then SIGKILL after a second) to the other processes in that group,
i.e. the children its cells started.

Exit codes (defined once, in :mod:`jupyter_flame.channel.protocol`)
------------------------------------------------------------------
0
    Normal: shutdown asked (``Shutdown``, ``SIGTERM``), idle retirement accepted, single-use
    task done.
1
    Internal error (a bug; the traceback is on stderr).
2
    Bad environment: a ``JUPYTER_FLAME_*`` variable is missing or malformed.
3
    The parent could not be reached within the boot timeout.
4
    Authentication with the parent failed (wrong key, or a tampered/out-of-sequence frame).
5
    The parent went away: the connection closed, or no frame arrived for ``parent_timeout``.
"""

from __future__ import annotations

import os
import sys
import traceback

from jupyter_flame.channel.protocol import EXIT_INTERNAL
from jupyter_flame.runner.env import Fatal, log, read_env
from jupyter_flame.runner.process_group import become_group_leader
from jupyter_flame.runner.sentinel import start_sentinel

__all__ = ["main"]


def main() -> None:
    """Entry point of ``python -m jupyter_flame.runner``."""
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        env = read_env()
    except Fatal as exc:
        log(f"jupyter-flame runner: {exc}")
        sys.exit(exc.code)
    become_group_leader()
    start_sentinel(int(os.environ.get("JUPYTER_FLAME_KERNEL_PID") or 0))  # before any thread
    log(f"jupyter-flame runner {env.runner_id} of pool {env.pool!r}: pid {os.getpid()}, "
        f"Python {sys.version.split()[0]}, dialing {env.host}:{env.port}")
    from jupyter_flame.runner._lifecycle import (
        Runner,  # imports the channel; IPython comes after connecting
    )

    try:
        code = Runner(env).run()
    except BaseException:
        log(traceback.format_exc())
        code = EXIT_INTERNAL
    log(f"jupyter-flame runner {env.runner_id}: exiting with code {code}")
    sys.stdout.flush()
    os._exit(code)
