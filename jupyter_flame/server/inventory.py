"""Every runner this server can see, as plain JSON rows, and which of them are orphans.

Two sources, neither of them a kernel: the runner records local pools write to Jupyter's
runtime directory (:mod:`jupyter_flame.backends.local_records`; CPU and memory measured here
with psutil) and the runner pods of the namespace, by label (their live state from the
``jupyter-flame/live`` annotation the kernel patches). :func:`local_row` and :func:`pod_row`
turn each into one row shape; :func:`orphan_reason` is the policy (pure, table-tested) that the
reaper and the "clean up orphans" action share.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

import psutil

from jupyter_flame.backends.kubernetes.cleanup import RunnerPod
from jupyter_flame.backends.local_records import LocalRunnerRecord, alive

__all__ = ["Context", "ProcessMeter", "Row", "local_row", "orphan_reason", "pod_row",
           "reapable", "row_id"]

#: Reasons the reaper acts on by itself: the runner's kernel is gone, or the runner is.
REAPED = ("kernel gone", "runner exited")


class Row(TypedDict, total=False):
    """One runner, as ``GET /flame/api/runners`` lists it."""

    id: str  # "local~<record id>" or "pod~<namespace>~<name>": the URL segment
    backend: str  # "local" or "kubernetes"
    runner_id: str
    pool: str
    kernel_id: str
    notebook: str  # the notebook path of the kernel's session ("" when not this server's)
    kernel_live: bool  # whether the kernel is one of this server's running kernels
    phase: str  # Running, Pending, Succeeded, Failed, Exited
    reason: str
    activity: str  # busy, idle, or "" when the kernel has not said
    node: str
    started: float  # epoch seconds
    age: float  # seconds
    resources: dict[str, str]
    gpus: list[str]
    cpu_percent: float | None
    rss: int | None
    pid: int
    kernel_pid: int
    pod: str
    namespace: str
    parent: str
    deleting: bool
    orphan: str  # why it is an orphan, "" when it is not


@dataclass
class Context:
    """What the orphan policy needs to know about this server, at one moment."""

    now: float
    live_kernels: frozenset[str]
    #: the notebook pod this server runs in (``POD_NAME``); runner pods of other parents are
    #: never judged by their kernel (their kernels are another server's)
    parent_pod: str | None = None
    #: notebook pods that exist in the namespace (``None``: not known)
    live_parents: frozenset[str] | None = None
    #: seconds a runner pod is spared after creation (its kernel may be starting)
    grace: float = 10.0
    #: each live kernel's process id: a kernel the server restarted keeps its id, and the
    #: runners of its previous process are orphans all the same
    kernel_pids: dict[str, int] = field(default_factory=dict)
    #: those of ``kernel_pids`` that are no longer running
    dead_pids: frozenset[int] = frozenset()


def row_id(backend: str, *parts: str) -> str:
    return "~".join(("local" if backend == "local" else "pod", *parts))


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class ProcessMeter:
    """CPU (%, over the interval since the last reading) and memory of process trees."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)
        return proc

    def read(self, pid: int) -> tuple[float | None, int | None]:
        try:
            root = self._proc(pid)
            cpu, rss = root.cpu_percent(None), root.memory_info().rss
            for child in root.children(recursive=True):
                try:
                    c = self._proc(child.pid)
                    cpu += c.cpu_percent(None)
                    rss += c.memory_info().rss
                except psutil.Error:
                    continue
            return round(cpu, 1), rss
        except psutil.Error:
            self._procs.pop(pid, None)
            return None, None

    def prune(self) -> None:
        """Forget processes that ended (runners and their children alike)."""
        for pid, proc in list(self._procs.items()):
            if not proc.is_running():
                del self._procs[pid]


def local_row(record: LocalRunnerRecord, *, now: float, notebooks: Mapping[str, str],
              live_kernels: Collection[str], meter: ProcessMeter | None = None) -> Row:
    pid, kernel_id = record["pid"], record.get("kernel_id", "")
    running = alive(pid)
    cpu, rss = meter.read(pid) if (meter is not None and running) else (None, None)
    live = record.get("live") or {}
    started = float(record.get("started", 0.0))
    return Row(
        id=row_id("local", record.get("id", f"{record.get('runner_id')}-{pid}")),
        backend="local", runner_id=record.get("runner_id", ""), pool=record.get("pool", ""),
        kernel_id=kernel_id, notebook=notebooks.get(kernel_id, ""),
        kernel_live=kernel_id in live_kernels, phase="Running" if running else "Exited",
        reason="", activity=str(live.get("activity", "")) if running else "",
        node=record.get("node", ""), started=started, age=max(0.0, now - started) if started else 0.0,
        resources={k: str(v) for k, v in (record.get("resources") or {}).items()},
        gpus=list(record.get("gpus") or []), cpu_percent=cpu, rss=rss, pid=pid,
        kernel_pid=record.get("kernel_pid", 0), pod="", namespace="", parent="", deleting=False)


def pod_row(pod: RunnerPod, *, now: float, notebooks: Mapping[str, str],
            live_kernels: Collection[str]) -> Row:
    live = pod.get("live") or {}
    started = _epoch(pod.get("created", ""))
    kernel_id = pod.get("kernel_id", "")
    resources = dict(pod.get("resources") or {})
    gpus = resources.get("gpu", "")
    gpu_count = int(gpus) if gpus.isdigit() else 0
    running = pod.get("phase") == "Running"
    return Row(
        id=row_id("kubernetes", pod.get("namespace", ""), pod.get("name", "")),
        backend="kubernetes", runner_id=pod.get("runner_id", ""), pool=pod.get("pool", ""),
        kernel_id=kernel_id, notebook=notebooks.get(kernel_id, ""),
        kernel_live=kernel_id in live_kernels, phase=pod.get("phase", "") or "Pending",
        reason=pod.get("reason", ""), activity=str(live.get("activity", "")) if running else "",
        node=pod.get("node", ""), started=started, age=max(0.0, now - started) if started else 0.0,
        resources=resources, gpus=[f"gpu {i}" for i in range(gpu_count)],
        cpu_percent=live.get("cpu_percent") if running else None,
        rss=live.get("rss") if running else None, pid=0, kernel_pid=pod.get("kernel_pid", 0),
        pod=pod.get("name", ""),
        namespace=pod.get("namespace", ""), parent=pod.get("parent", ""),
        deleting=bool(pod.get("deleting")))


def orphan_reason(row: Row, ctx: Context) -> str:
    """Why ``row`` is an orphan ("" when it is not).

    Local runners: ``runner exited`` (a stale record), ``kernel gone`` (the kernel process that
    started it is dead: SIGKILLed, crashed, culled or restarted). Runner pods: ``kernel gone``
    (a pod of this server's notebook pod, older than the grace, whose kernel is not one of this
    server's kernels; finished pods included), ``notebook pod gone`` (its parent pod does not
    exist), ``runner finished`` (Succeeded/Failed with its kernel alive or not ours to judge).
    """
    if row.get("deleting"):
        return ""
    if row["backend"] == "local":
        if row.get("phase") == "Exited":
            return "runner exited"
        kernel_pid = row.get("kernel_pid", 0)
        if kernel_pid and not alive(kernel_pid):
            return "kernel gone"
        return ""
    parent, kernel_id = row.get("parent", ""), row.get("kernel_id", "")
    live_pid, made_by = ctx.kernel_pids.get(kernel_id), row.get("kernel_pid", 0)
    kernel_gone = kernel_id not in ctx.live_kernels or bool(
        live_pid and made_by and made_by != live_pid)
    if made_by and made_by in ctx.dead_pids:
        kernel_gone = True  # its kernel's process died (the server has not restarted it yet)
    if (ctx.parent_pod and parent == ctx.parent_pod and kernel_gone
            and ctx.now - row.get("started", ctx.now) >= ctx.grace):
        return "kernel gone"
    if ctx.live_parents is not None and parent and parent not in ctx.live_parents:
        return "notebook pod gone"
    if row.get("phase") in ("Succeeded", "Failed"):
        return "runner finished"
    return ""


def reapable(row: Row) -> bool:
    """Whether the reaper deletes ``row`` by itself (else only "clean up orphans" does)."""
    return row.get("orphan", "") in REAPED
