"""Snapshots of pools and runners, and their plain-text rendering (``%flame status``).

:func:`snapshot` runs on the flame loop and returns plain data (:class:`PoolStatus`, a
TypedDict of str/int/float/None, JSON-ready), so the text dashboard, the widgets, the server's
JSON and tests all read the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from jupyter_flame.pool.core import PoolCore

__all__ = ["PoolStatus", "RunnerStatus", "render_text", "snapshot"]


class RunnerStatus(TypedDict):
    """One runner of a pool, as the dashboards show it."""

    id: str
    #: the pool's view: booting, live, retiring or gone
    state: str
    #: the backend's last lifecycle phase: requested, scheduling, pulling, starting, ...
    phase: str
    load: int
    max_concurrency: int
    #: seconds since the runner was requested
    age: float
    #: seconds until idle shutdown (``None``: busy, or the pool never idles down)
    idle_left: float | None
    rtt_ms: float | None
    tasks_done: int
    #: values the runner holds for the next cell (names)
    cached: int
    pid: int | None
    pod: str | None
    node: str | None
    gpus: Any
    boot_seconds: float | None
    reason: str
    message: str
    #: requested cpu/memory/GPUs (``{"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}``)
    resources: dict[str, str]
    #: the runner's last heartbeat readings (``None`` before the first)
    cpu_percent: float | None
    rss: int | None
    #: NVML readings per GPU: index, util_percent, memory_used, memory_total
    gpu_stats: list[dict[str, Any]]
    #: what it runs now: ``cell: <first line>`` or ``call`` per task in flight
    running: list[str]


class PoolStatus(TypedDict):
    """One pool and its runners at one moment."""

    name: str
    backend: str
    spec: str
    closed: bool
    min: int
    max: int
    max_concurrency: int
    idle_shutdown_after: float | None
    boot_timeout: float
    timeout: float | None
    single_use: bool
    #: "encrypted" (AES-256-GCM) or "authenticated" (MAC only): how frames travel
    channel: str
    #: work waiting for a runner (FIFO)
    waiting: int
    runners: list[RunnerStatus]
    boots: int
    boot_failures: int
    tasks_done: int
    #: ``Pool.call`` calls the calling thread sent and read itself
    direct_calls: int
    last_error: str | None
    last_transfer: dict[str, dict[str, int]] | None


def requested_resources(info: dict[str, Any]) -> dict[str, str]:
    """What a runner asked for: a pod's container requests (limits where no request), or a
    local runner's GPUs."""
    res = info.get("resources") or {}
    out = {str(k): str(v) for k, v in (res.get("limits") or {}).items()}
    out.update({str(k): str(v) for k, v in (res.get("requests") or {}).items()})
    gpus = info.get("gpus")
    if gpus and not any(k.endswith("/gpu") for k in out):
        out["gpu"] = str(len(gpus) if isinstance(gpus, (list, tuple)) else gpus)
    return out


def format_resources(resources: dict[str, str]) -> str:
    """``{"cpu": "2", "nvidia.com/gpu": "1"}`` -> ``"cpu=2, gpu=1"`` (sorted by key)."""
    return ", ".join(f"{k.split('/')[-1]}={v}" for k, v in sorted(resources.items()))


def snapshot(core: PoolCore, *, name: str, backend: str, spec: str,
             last_transfer: dict[str, dict[str, int]] | None) -> PoolStatus:
    """The status of ``core`` now (call it on the flame loop)."""
    o = core.options
    now = time.time()
    mono = time.monotonic()
    runners: list[RunnerStatus] = []
    for slot in list(core.slots.values()):
        info = dict(slot.handle.info) if slot.handle is not None else {}
        link = slot.link
        idle_left: float | None = None
        if link is not None and link.load == 0 and o.idle_shutdown_after is not None:
            idle_left = max(0.0, o.idle_shutdown_after - (mono - link.last_used))
        ev = slot.last_event
        stats = link.stats if link is not None else {}
        runners.append(RunnerStatus({
            "id": slot.id,
            "state": slot.state,
            "phase": slot.handle.phase if slot.handle is not None else "requested",
            "load": slot.load,
            "max_concurrency": o.max_concurrency,
            "age": round(now - slot.requested_at, 1),
            "idle_left": None if idle_left is None else round(idle_left, 1),
            "rtt_ms": None if link is None or link.last_rtt is None
            else round(link.last_rtt * 1000, 2),
            "tasks_done": link.tasks_done if link is not None else 0,
            "cached": len(link.cache) if link is not None else 0,
            "pid": info.get("pid"),
            "pod": info.get("pod"),
            "node": info.get("node"),
            "gpus": info.get("gpus"),
            "boot_seconds": info.get("boot_seconds"),
            "reason": ev.reason if ev is not None else "",
            "message": ev.message if ev is not None else "",
            "resources": requested_resources(info),
            "cpu_percent": stats.get("cpu_percent"),
            "rss": stats.get("rss"),
            "gpu_stats": list(stats.get("gpus") or []),
            "running": list(link.labels.values()) if link is not None else [],
        }))
    return PoolStatus({
        "name": name,
        "backend": backend,
        "spec": spec,
        "closed": core.closed,
        "min": o.min,
        "max": o.max,
        "max_concurrency": o.max_concurrency,
        "idle_shutdown_after": o.idle_shutdown_after,
        "boot_timeout": o.boot_timeout,
        "timeout": o.timeout,
        "single_use": o.single_use,
        "channel": "encrypted" if core.encrypts else "authenticated",
        "waiting": sum(1 for f in core.waiters if not f.done()),
        "runners": runners,
        "boots": core.boots,
        "boot_failures": core.boot_failures,
        "tasks_done": core.tasks_done,
        "direct_calls": core.direct_calls,
        "last_error": str(core.last_error) if core.last_error is not None else None,
        "last_transfer": last_transfer,
    })


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def render_transfer(transfer: dict[str, Any] | None) -> list[str]:
    from jupyter_flame.values.shipping import human_bytes

    if not transfer:
        return []
    lines = []
    for key in ("shipped", "cached", "returned"):
        items = transfer.get(key) or {}
        if items:
            parts = ", ".join(f"{n} ({human_bytes(b)})" for n, b in items.items())
            lines.append(f"  last cell {key}: {parts}")
    return lines


def render_text(statuses: Iterable[PoolStatus]) -> str:
    """A plain-text dashboard of pools and their runners."""
    out: list[str] = []
    for st in statuses:
        limits = (f"min={st['min']} max={st['max']} max_concurrency={st['max_concurrency']} "
                  f"idle_shutdown_after={_fmt(st['idle_shutdown_after'])}s")
        state = "shut down" if st["closed"] else f"{len(st['runners'])} runner(s)"
        out.append(f"Pool {st['name']!r} [{st['backend']}; {st['spec']}; channel "
                   f"{st.get('channel', '?')}] {limits}: {state}, "
                   f"{st['waiting']} waiting, {st['tasks_done']} task(s) done"
                   + (f" ({st['direct_calls']} calls sent by the calling thread itself)"
                      if st["direct_calls"] else ""))
        if st["runners"]:
            out.append(f"  {'runner':<28} {'phase':<10} {'busy':<6} {'where':<22} {'gpus':<8} "
                       f"{'age':>7} {'idle left':>9}")
        for r in st["runners"]:
            where = r["pod"] or (f"pid {r['pid']}" if r["pid"] else "-")
            if r["node"] and r["pod"]:
                where += f"@{r['node']}"
            busy = f"{r['load']}/{r['max_concurrency']}"
            idle = "-" if r["idle_left"] is None else f"{r['idle_left']:.0f}s"
            line = (f"  {r['id']:<28} {r['phase']:<10} {busy:<6} {where:<22} "
                    f"{_fmt(r['gpus']):<8} {r['age']:>6.0f}s {idle:>9}")
            if r["reason"] and r["phase"] in ("scheduling", "pulling", "failed", "stopping"):
                line += f"  {r['reason']}: {r['message']}"
            out.append(line)
        if st["last_error"]:
            out.append(f"  last error: {st['last_error']}")
        out.extend(render_transfer(st.get("last_transfer")))
    if not out:
        return "No pools. Run a %%flame cell, or define one with %flame pool NAME."
    return "\n".join(out)
