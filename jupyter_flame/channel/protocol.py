"""Wire messages between a parent (the kernel) and a runner.

Every message is a frozen dataclass. The channel (:mod:`jupyter_flame.channel.channel`) pickles one
message per frame with pickle protocol 5; :class:`Packed` values carry their buffers as
``pickle.PickleBuffer`` objects so that large arrays travel out of band, uncopied.

Conversation
------------
After the handshake the parent sends :class:`Configure`. Then, any number of times and
interleaved (up to ``max_concurrency`` tasks at once)::

    parent -> runner   Execute | Call               (task id chosen by the parent)
    runner -> parent   Stream* Display*             (tagged with the task id, as they happen)
    runner -> parent   Done                         (exactly one per task)
    parent -> runner   Interrupt(task)              (optional; the runner raises KeyboardInterrupt)

Liveness: the parent sends :class:`Ping` every ``heartbeat_interval`` seconds; the runner
answers :class:`Pong`. A runner that receives no frame for ``parent_timeout`` seconds, or sees
the connection close, exits. A runner idle for ``idle_shutdown_after`` seconds sends
:class:`IdleRequest`; the parent answers :class:`IdleReply` (``ok=True`` means the parent has
retired the runner and will send no more work), and the runner exits. :class:`Shutdown` asks the
runner to exit now.

A runner that cannot hold the conversation says why with its exit code, the ``EXIT_*``
constants below (the backends read them; ``jupyter_flame.runner.main`` documents each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pickle import PickleBuffer
from typing import Any

__all__ = [
    "EXIT_AUTH",
    "EXIT_BAD_ENV",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PARENT_LOST",
    "EXIT_UNREACHABLE",
    "Call",
    "ClearOutput",
    "Configure",
    "Display",
    "Done",
    "ErrorInfo",
    "Execute",
    "IdleReply",
    "IdleRequest",
    "Interrupt",
    "Packed",
    "Ping",
    "Pong",
    "Shutdown",
    "Stream",
]


#: Exit codes of ``python -m jupyter_flame.runner``: the one place they are defined.
EXIT_OK = 0  # shutdown asked, idle retirement accepted, single-use task done
EXIT_INTERNAL = 1  # a bug in the runner (traceback on stderr)
EXIT_BAD_ENV = 2  # a JUPYTER_FLAME_* variable is missing or malformed
EXIT_UNREACHABLE = 3  # the parent could not be reached within the boot timeout
EXIT_AUTH = 4  # authentication with the parent failed
EXIT_PARENT_LOST = 5  # the connection closed, or no frame arrived for parent_timeout


@dataclass(frozen=True)
class Packed:
    """One value serialized with cloudpickle protocol 5.

    ``payload`` is the pickle stream; ``buffers`` are the out-of-band buffers (never inside the
    stream). ``digest`` is a content hash over payload and buffers, used to skip re-sending an
    unchanged value to a runner that already holds it. ``nbytes`` is the total size.
    """

    payload: bytes
    buffers: tuple[PickleBuffer, ...] = ()
    digest: str = ""
    nbytes: int = 0
    type_name: str = ""

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A large payload (a big str, nested bytes...) travels out of band like the buffers,
        # so the message's own pickle does not copy it again; it arrives as a buffer.
        payload: Any = self.payload
        if protocol >= 5 and len(memoryview(payload)) > _INLINE_PAYLOAD:
            payload = PickleBuffer(payload)
        return (Packed, (payload, self.buffers, self.digest, self.nbytes, self.type_name))


_INLINE_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class Configure:
    """First message after the handshake; may be sent again when the pool is resized."""

    pool: str
    runner_id: str
    max_concurrency: int = 1
    idle_shutdown_after: float | None = 30.0
    heartbeat_interval: float = 2.0
    parent_timeout: float = 10.0
    single_use: bool = False
    cwd: str | None = None
    sys_path: tuple[str, ...] = ()
    max_frame: int = 16 * 1024**3  # the pool's limit on one message, both ways


@dataclass(frozen=True)
class Execute:
    """Run a notebook cell.

    ``variables`` are freshly shipped values; ``cached`` maps names to digests the runner
    already holds from earlier tasks (it must use those objects); the runner watches the names
    the cell received (both kinds) for in-place changes.
    ``filename`` is the pseudo file name used for the cell's code objects, so tracebacks point at
    the cell's own lines.
    """

    task: int
    source: str
    variables: dict[str, Packed] = field(default_factory=dict)
    cached: dict[str, str] = field(default_factory=dict)
    filename: str = "<flame-cell>"
    store_history: bool = True


@dataclass(frozen=True)
class Call:
    """Call a function: ``packed`` holds ``(fn, args, kwargs)``."""

    task: int
    packed: Packed


@dataclass(frozen=True)
class Interrupt:
    task: int


@dataclass(frozen=True)
class Ping:
    sent: float


@dataclass(frozen=True)
class Pong:
    """The runner's answer to a heartbeat, with its live resource use (``runner.stats``):
    ``cpu_percent``, ``rss`` (bytes, the runner and its children) and ``gpus`` (NVML readings
    of the GPUs it holds, where there are any)."""

    sent: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shutdown:
    reason: str = "shutdown"


@dataclass(frozen=True)
class IdleRequest:
    idle_for: float


@dataclass(frozen=True)
class IdleReply:
    ok: bool


@dataclass(frozen=True)
class Stream:
    task: int
    name: str  # "stdout" | "stderr"
    text: str


@dataclass(frozen=True)
class Display:
    """A rich output (``display()``, an image, a matplotlib figure, an ``Out`` value)."""

    task: int
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    display_id: str | None = None
    update: bool = False


@dataclass(frozen=True)
class ClearOutput:
    task: int
    wait: bool = False


@dataclass(frozen=True)
class ErrorInfo:
    """A remote exception: its type name, text, formatted traceback, and the pickled exception
    itself when it could be pickled (so its type can be rebuilt locally)."""

    ename: str
    evalue: str
    traceback: list[str]
    exc: Packed | None = None
    module: str = ""


@dataclass(frozen=True)
class Done:
    """The end of a task.

    On success ``value`` is the last expression's value (cells; ``None`` when the cell ends in
    a statement or with ``;``) or the return value (calls), and ``names`` holds the names the
    cell bound plus shipped values it changed in place. On failure ``error`` is set and nothing
    in ``names`` may be applied. ``cache`` is the runner's view of which shipped names it now
    holds unchanged, with their digests. ``elapsed`` is the remote run time in seconds
    (``timings`` splits it: unpacking the shipped values, running, packing the results).
    """

    task: int
    ok: bool
    value: Packed | None = None
    has_value: bool = False
    names: dict[str, Packed] = field(default_factory=dict)
    deleted: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    cache: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    #: where ``elapsed`` went on the runner (seconds): ``unpack``, ``run``, ``pack``
    timings: dict[str, float] = field(default_factory=dict)
