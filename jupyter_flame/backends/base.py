"""The backend contract: how a pool gets runners.

A backend starts runner processes somewhere (local subprocesses, Kubernetes pods) and reports
their life as :class:`LifecycleEvent` values. It knows nothing about cells, pickles or
scheduling policy: the pool decides *when* to boot and *what* to run; the backend only *boots*,
*watches* and *terminates*.

Protocol
--------
``await backend.boot(request)``
    Start one runner for ``request`` (a :class:`BootRequest`) and return its
    :class:`RunnerHandle` as soon as the runner *exists* (process spawned, pod created). The
    runner process is started with the environment of :func:`runner_env`, so that it dials
    ``request.parent_address`` and authenticates with ``request.key``. The backend must not
    wait for the runner to connect: the pool does that (it owns the listener), bounded by
    ``boot_timeout``. A backend that can tell early that the runner will never come up (the
    process exited, an image pull failed) resolves ``handle.failed`` with a
    :class:`~jupyter_flame.errors.BootError`. Raise ``BootError`` / ``BackendError`` when
    the runner cannot even be created.

``await backend.terminate(handle, grace=...)``
    Stop the runner: polite first (SIGTERM / pod delete with grace), then forceful. Idempotent:
    terminating a runner that already exited (or twice) is not an error. Returns once the
    runner is gone (or the grace period passed and the kill was issued).

``backend.subscribe(callback)``
    Call ``callback(event)`` for every lifecycle event of every runner of this backend, from the
    event loop thread. Returns a function that unsubscribes.

``await backend.close()``
    Terminate every runner this backend started and release its resources. Idempotent.

``backend.parent_host()``
    The address the kernel must listen on so that runners can reach it (``127.0.0.1`` for local
    runners; the pod IP for Kubernetes).

``backend.runner_cwd()``
    The working directory runners should use (the local backend: the kernel's); ``None``
    (the default): the image's or the backend's own default.

``await backend.sweep(kernel_id, pool=None)``
    Optional: remove leftovers of earlier runs of this kernel (and ``pool``) when a pool
    starts; returns what was removed. The default removes nothing.

``await backend.release_pool(pool)``
    Optional: release what the backend keeps per pool (the Kubernetes key Secret) once the
    pool shut down. Idempotent. The default does nothing.

``handle.exited``
    An :class:`asyncio.Future` resolved with the exit code (negative: signal) when the
    runner's process or pod is gone, for any reason.

Events are best-effort notifications for widgets and status; the pool's correctness never
depends on them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame._version import __version__
from jupyter_flame.backends.published import StatePublisher
from jupyter_flame.channel.protocol import (
    EXIT_AUTH,
    EXIT_BAD_ENV,
    EXIT_INTERNAL,
    EXIT_PARENT_LOST,
    EXIT_UNREACHABLE,
)
from jupyter_flame.config import FlameConfigurable, FlameConfigurableMeta
from jupyter_flame.errors import BootError

__all__ = [
    "LOG_TAIL_LINES",
    "PHASES",
    "PRE_CONNECT",
    "Backend",
    "BootRequest",
    "LifecycleEvent",
    "RunnerHandle",
    "RunnerSpec",
    "describe_exit",
    "exit_message",
    "runner_env",
    "runner_env_for",
]

log = logging.getLogger(__name__)

#: How many lines of a runner's output a failure report carries.
LOG_TAIL_LINES = 40

#: Lifecycle phases, in order. ``failed`` and ``stopped`` are terminal.
PHASES = (
    "requested",  # the pool asked the backend for a runner
    "scheduling",  # waiting for a place to run (a node); ``reason`` says why when stuck
    "pulling",  # fetching the image
    "starting",  # the process/container started
    "connected",  # the runner dialled back and authenticated
    "busy",  # running work
    "idle",  # connected, no work
    "stopping",  # being terminated
    "stopped",  # gone after a normal shutdown
    "failed",  # gone after an error; ``reason``/``message`` say why
)
#: The phases before the runner connected (a runner that dies in one of them failed to boot).
PRE_CONNECT = PHASES[:4]


def describe_exit(code: int | None) -> str:
    """How a runner ended, as a clause: ``"it exited with code 1"``, ``"it was killed by
    SIGKILL"`` (negative codes are signals), ``"its connection was lost"`` (``None``)."""
    if code is None:
        return "its connection was lost"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"it was killed by {name} (out of memory, or killed from outside)"
        return f"it was killed by {name}"
    why = _EXIT_MEANING.get(code)
    return f"it exited with code {code}" + (f" ({why})" if why else "")


#: What the runner's own exit codes mean (jupyter_flame.channel.protocol.EXIT_*), and the
#: shell's 128+N for a process killed by signal N (how a container runtime reports it).
_EXIT_MEANING = {
    EXIT_INTERNAL: "an error inside the runner; its log has the traceback",
    EXIT_BAD_ENV: "its JUPYTER_FLAME_* environment was missing or malformed",
    EXIT_UNREACHABLE: "it could not reach the kernel",
    EXIT_AUTH: "it could not authenticate with the kernel",
    EXIT_PARENT_LOST: "it lost its connection to the kernel, or heard nothing from it",
    128 + signal.SIGKILL: "killed by SIGKILL: out of memory, or killed from outside",
    128 + signal.SIGTERM: "terminated by SIGTERM",
}


def exit_message(runner_id: str, pool: str, code: int, *, before_connecting: bool,
                 parent: str) -> str:
    """``Runner r1 of pool 'p' exited with code 3 before connecting (it could not reach the
    kernel at HOST:PORT)``: a runner that ended on its own, for events and boot errors.

    ``parent`` is the ``host:port`` the runner dialled (named only for the runner's
    "unreachable" exit code).
    """
    message = f"Runner {runner_id} of pool {pool!r} {describe_exit(code).removeprefix('it ')}"
    if before_connecting:
        message += " before connecting"
        if code == EXIT_UNREACHABLE:
            message = message.replace("(it could not reach the kernel)",
                                      f"(it could not reach the kernel at {parent})")
    return message


@dataclass(frozen=True)
class RunnerSpec:
    """The shape of a runner: what it needs and where it may run.

    Quantities are Kubernetes quantities as strings (``"2"``, ``"500m"``, ``"24Gi"``) or plain
    numbers. The local backend honours ``gpu`` and ``env`` (and ignores placement); the
    Kubernetes backend honours all of it.
    """

    gpu: int = 0
    gpu_type: str | None = None
    cpu: str | None = None
    memory: str | None = None
    image: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[str, str | None, str], ...] = ()  # (key, value, effect)
    env: tuple[tuple[str, str], ...] = ()
    volumes: tuple[tuple[str, str], ...] = ()  # (claim, mount path)

    def key(self) -> str:
        """A stable string naming this shape (used to name implicit pools)."""
        parts = []
        for name in ("gpu", "gpu_type", "cpu", "memory", "image"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        for name in ("node_selector", "tolerations", "env", "volumes"):
            for item in getattr(self, name):
                parts.append(f"{name}={':'.join(str(p) for p in item)}")
        return ",".join(parts)


@dataclass(frozen=True)
class BootRequest:
    """Everything a backend needs to start one runner."""

    pool: str
    runner_id: str
    spec: RunnerSpec
    parent_address: tuple[str, int]
    key: bytes = field(repr=False)
    boot_timeout: float = 30.0
    kernel_id: str = ""


@dataclass(frozen=True)
class LifecycleEvent:
    """One step of a runner's life, as shown by widgets and ``%flame status``."""

    runner_id: str
    pool: str
    phase: str
    reason: str = ""
    message: str = ""
    time: float = field(default_factory=time.time)
    details: Mapping[str, Any] = field(default_factory=dict)


class RunnerHandle:
    """A runner a backend started.

    Attributes
    ----------
    id, pool:
        The runner id (unique per kernel) and its pool's name.
    info:
        What the backend knows (``pid``, ``pod``, ``node``, ``gpus``, ``resources``...).
    exited:
        Future resolved with the exit code when the runner is gone.
    failed:
        Future resolved with a :class:`BootError` if the backend learns the runner cannot
        come up (never resolved otherwise).
    """

    def __init__(self, runner_id: str, pool: str, info: dict[str, Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.id = runner_id
        self.pool = pool
        self.info: dict[str, Any] = dict(info or {})
        self.exited: asyncio.Future[int] = loop.create_future()
        self.failed: asyncio.Future[BootError] = loop.create_future()
        self.phase = "requested"

    def set_exited(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    def set_failed(self, error: BootError) -> None:
        if not self.failed.done():
            self.failed.set_result(error)

    def __repr__(self) -> str:
        return f"<RunnerHandle {self.id} pool={self.pool} phase={self.phase}>"


def runner_env_for(pool: str, runner_id: str, parent_address: tuple[str, int],
                   boot_timeout: float) -> dict[str, str]:
    """:func:`runner_env` without the channel key (for a runner that gets it elsewhere)."""
    host, port = parent_address
    return {
        "JUPYTER_FLAME_PARENT": host if host.startswith("unix:") else f"{host}:{port}",
        "JUPYTER_FLAME_RUNNER_ID": runner_id,
        "JUPYTER_FLAME_POOL": pool,
        "JUPYTER_FLAME_BOOT_TIMEOUT": str(boot_timeout),
        "JUPYTER_FLAME_VERSION": __version__,  # the runner refuses to serve another version
    }


def runner_env(request: BootRequest) -> dict[str, str]:
    """The environment variables a runner process needs to dial its parent.

    ``JUPYTER_FLAME_KEY`` is the pool's channel key (hex). Local runners get it in their
    environment (never in argv); Kubernetes runners get it through a ``secretKeyRef`` (their
    other variables come from :func:`runner_env_for`).
    """
    env = runner_env_for(request.pool, request.runner_id, request.parent_address,
                         request.boot_timeout)
    env["JUPYTER_FLAME_KEY"] = request.key.hex()
    return env


Subscriber = Callable[[LifecycleEvent], None]


class Backend(FlameConfigurable, metaclass=FlameConfigurableMeta):
    """Base class of every backend; see the module docstring for the contract.

    A backend is a traitlets ``Configurable``: its options are traits tagged ``config=True``
    (``c.KubernetesBackend.namespace = "ml"`` in ``ipython_config.py``), and a subclass passes
    only the keywords its caller gave to ``super().__init__(**explicit)`` so that an explicit
    keyword wins over configuration (see :mod:`jupyter_flame.config`).
    """

    #: The name used with ``--backend`` and the ``jupyter_flame.backends`` entry points.
    name: str = ""
    #: Whether pools on this backend encrypt their channels unless ``Pool.encrypt`` says
    #: otherwise: a backend whose runners are reached over a network says True.
    encrypt_channel: bool = False
    #: Runners share this machine and its filesystem with the kernel: the channel goes over a
    #: Unix-domain socket in a 0700 directory, and large buffers through shared memory.
    same_host: bool = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._subscribers: list[Subscriber] = []
        self._failed_subscribers: list[Subscriber] = []  # logged in full once each
        #: set by a backend that publishes runners' live state for the server extension
        self.publisher: StatePublisher | None = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, handle: RunnerHandle, phase: str, reason: str = "", message: str = "",
             **details: Any) -> None:
        """Record ``phase`` on ``handle`` and tell every subscriber.

        ``"stats"`` (the runner's resource use from a heartbeat) is news, not a phase: it
        leaves ``handle.phase`` as it was."""
        if phase != "stats":
            handle.phase = phase
        event = LifecycleEvent(handle.id, handle.pool, phase, reason, message, details=details)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken widget must never break a runner: log, go on
                first = callback not in self._failed_subscribers
                if first:
                    self._failed_subscribers.append(callback)
                log.log(logging.ERROR if first else logging.DEBUG,
                        "%s: lifecycle subscriber %r failed on %s of runner %s%s",
                        type(self).__name__, callback, phase, handle.id,
                        "" if first else " (again)", exc_info=True)
        if self.publisher is not None:
            if phase in ("stopped", "failed"):
                self.publisher.forget(handle.id)
            else:
                self.publisher.note(handle.id, phase, details)

    def closed_error(self, request: BootRequest) -> BootError:
        """The error of a boot on a closed backend (also one that ``close()`` overtook)."""
        return BootError(f"This {type(self).__name__} is closed; create a new one (or a new "
                         "Pool).", reason="closed", pool=request.pool, runner=request.runner_id)

    def check_boot(self, request: BootRequest, *, closed: bool, known: Any) -> None:
        """Refuse a boot on a closed backend or for a runner id it already has."""
        if closed:
            raise self.closed_error(request)
        if request.runner_id in known:
            raise BootError(f"Runner {request.runner_id!r} already exists in this backend.",
                            reason="duplicate", pool=request.pool, runner=request.runner_id)

    @abstractmethod
    async def boot(self, request: BootRequest) -> RunnerHandle: ...

    @abstractmethod
    async def terminate(self, handle: RunnerHandle, grace: float = 5.0) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def sweep(self, kernel_id: str, pool: str | None = None) -> list[str]:
        """Remove leftovers of ``kernel_id`` (and ``pool``) when a pool starts; returns what
        was removed. The default: nothing to remove."""
        return []

    async def release_pool(self, pool: str) -> None:
        """Release what the backend keeps for ``pool`` (it shut down). Idempotent. The
        default: nothing kept."""
        return None

    def parent_host(self) -> str:
        return "127.0.0.1"

    def runner_cwd(self) -> str | None:
        """The working directory runners should use; ``None``: the image's (or the backend's)
        default."""
        return None

    def describe(self) -> str:
        """One line for status displays."""
        return self.name
