"""A cell's journey as plain data, and how it reads as text and HTML (pure: no widgets here).

:class:`CellProgress` is fed by the cell (its own steps: queued, shipping, running, returning,
merging, done or failed) and by the backend's lifecycle events of the runner that boots for it or
takes it (requested, scheduling with the scheduler's message, pulling, starting, connected, and
the heartbeat's ``stats``). The widget renders it; the same renderers give the ``text/plain`` and
``text/html`` fallbacks and the terminal's progress line.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.backends.base import PRE_CONNECT
from jupyter_flame.pool.status import format_resources, requested_resources

__all__ = ["CellProgress", "STEPS", "human_bytes", "render_html", "render_line", "summary_line"]

#: the cell's own steps, in order (runner boot phases come between queued and shipping)
STEPS = ("queued", "booting", "shipping", "running", "returning", "merging", "done")
BOOT_PHASES = (*PRE_CONNECT, "connected")
_FINAL = ("done", "failed", "cancelled")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass
class CellProgress:
    """Everything the lifecycle view shows about one cell."""

    pool: str
    background: bool = False
    clock: Any = time.monotonic
    step: str = "queued"
    #: the runner phase while booting (scheduling, pulling, ...)
    boot_phase: str = ""
    reason: str = ""
    message: str = ""
    #: cells and calls waiting for a runner of the pool, this one included
    queue_position: int | None = None
    runner: str = ""
    where: dict[str, Any] = field(default_factory=dict)  # pid/pod, node, resources, gpus
    stats: dict[str, Any] = field(default_factory=dict)
    peak_rss: int = 0
    sent_bytes: int = 0
    cached_bytes: int = 0
    returned_bytes: int = 0
    remote_seconds: float | None = None
    #: the runner's split of its time: unpack, run, pack (``Done.timings``)
    remote_timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    events: list[str] = field(default_factory=list)
    log_tail: str = ""
    booted_for_us: bool = False
    #: the boot phases seen, in order (a throttled view may skip a frame, never a phase)
    boot_trail: list[str] = field(default_factory=list)
    #: when each step began (monotonic clock)
    times: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times.setdefault("queued", self.clock())

    @property
    def finished(self) -> bool:
        return self.step in _FINAL

    def enter(self, step: str, **info: Any) -> None:
        """The cell reached ``step`` (its own steps; final steps stick)."""
        if self.finished:
            return
        self.step = step
        self.times.setdefault(step, self.clock())
        for key, value in info.items():
            setattr(self, key, value)

    def on_event(self, phase: str, reason: str, message: str, details: dict[str, Any],
                 ours: bool) -> None:
        """A lifecycle event of a runner of this cell's pool. ``ours``: the runner that took
        the cell (after checkout) or is booting while it waits (before)."""
        if not ours or self.finished:
            return
        if phase == "stats":
            self.stats = dict(details)
            self.peak_rss = max(self.peak_rss, int(details.get("rss") or 0))
            return
        for key in ("pid", "pod", "node", "gpus", "resources", "namespace"):
            if details.get(key):
                self.where[key] = details[key]
        if reason or message:
            stamp = f"{phase}: {reason}" + (f" {message}" if message else "")
            if not self.events or self.events[-1] != stamp:
                self.events = (self.events + [stamp])[-8:]
        if details.get("log_tail"):
            self.log_tail = str(details["log_tail"])
        if phase in BOOT_PHASES and self.step in ("queued", "booting"):
            self.booted_for_us = True
            self.step = "booting"
            self.times.setdefault("booting", self.clock())
            self.boot_phase = phase
            if not self.boot_trail or self.boot_trail[-1] != phase:
                self.boot_trail.append(phase)
            self.reason, self.message = reason, message
        elif phase == "failed" and self.step in ("queued", "booting"):
            self.boot_phase = "failed"
            self.reason, self.message = reason, message

    # -- where the time went -------------------------------------------------------------------
    def durations(self, now: float | None = None) -> dict[str, float]:
        """Seconds per part: queue, boot, ship (send + the runner unpacking), run, return (the
        runner packing + the reply; with a fresh runner also its first-task setup), merge."""
        t = self.times
        end = t.get("done", t.get("failed", t.get("cancelled", now or self.clock())))
        checkout = t.get("shipping", end)
        waited = checkout - t["queued"]
        out: dict[str, float] = {}
        if self.booted_for_us and "booting" in t:
            out["queue"] = t["booting"] - t["queued"]
            out["boot"] = checkout - t["booting"]
        else:
            out["queue"] = waited
        if "shipping" in t:
            back = t.get("merging", end)
            flight = back - checkout
            rt = self.remote_timings
            sent = t.get("running", checkout) - checkout  # until the task was on the wire
            run = rt.get("run", self.remote_seconds if self.remote_seconds is not None
                         else max(0.0, flight - sent))
            ship = sent + rt.get("unpack", 0.0)  # send, then the runner unpacking it
            out["ship"] = ship
            out["run"] = run
            out["return"] = max(0.0, flight - ship - run)  # pack, the reply, its buffers
        if "merging" in t:
            out["merge"] = end - t["merging"]
        return out

    def total(self, now: float | None = None) -> float:
        t = self.times
        end = t.get("done", t.get("failed", t.get("cancelled", now or self.clock())))
        return end - t["queued"]

    def where_text(self) -> str:
        w = self.where
        parts = []
        if w.get("pod"):
            parts.append(f"pod {w['pod']}")
        elif w.get("pid"):
            parts.append(f"process {w['pid']}")
        if w.get("node"):
            parts.append(f"on {w['node']}")
        shown = format_resources(requested_resources(w))
        if shown:
            parts.append(shown)
        return " ".join(parts)

    def stats_text(self) -> str:
        s = self.stats
        if not s:
            return ""
        text = f"cpu {s.get('cpu_percent', 0):.0f}%, rss {human_bytes(s.get('rss'))}"
        for g in s.get("gpus") or []:
            text += (f", gpu{g['index']} {g['util_percent']}% "
                     f"{human_bytes(g['memory_used'])}/{human_bytes(g['memory_total'])}")
        return text


def _now_line(p: CellProgress, now: float | None) -> str:
    now = p.clock() if now is None else now
    if p.step == "queued":
        pos = f" ({p.queue_position} waiting)" if p.queue_position else ""
        return f"queued for pool {p.pool!r}{pos}"
    if p.step == "booting":
        text = "booting a runner: " + (" > ".join(p.boot_trail) or "requested")
        if p.reason:
            text += f" ({p.reason}"
            text += f": {p.message})" if p.message else ")"
        return text
    if p.step == "shipping":
        return f"shipping {human_bytes(p.sent_bytes)} to {p.runner}"
    if p.step == "running":
        return f"running on {p.runner}, {now - p.times['running']:.0f} s"
    if p.step == "returning":
        return f"returning {human_bytes(p.returned_bytes)}"
    if p.step == "merging":
        return "merging results into the notebook"
    return p.step


def summary_line(p: CellProgress, now: float | None = None) -> str:
    """One line: total time and where it went, bytes each way, peak memory."""
    parts = ", ".join(f"{k} {v:.2f}" for k, v in p.durations(now).items())
    line = f"{p.step} in {p.total(now):.2f} s ({parts} s)"
    line += f"; sent {human_bytes(p.sent_bytes)}"
    if p.cached_bytes:
        line += f" (+{human_bytes(p.cached_bytes)} cached on the runner)"
    line += f", back {human_bytes(p.returned_bytes)}"
    if p.peak_rss:
        line += f"; peak rss {human_bytes(p.peak_rss)}"
    if p.runner:
        line += f"; {p.where_text() or p.runner}"
    return line


def render_line(p: CellProgress, now: float | None = None) -> str:
    """The text form: what happens now, or the summary once finished."""
    if p.step == "done":
        return "flame: " + summary_line(p, now)
    if p.step in ("failed", "cancelled"):
        return f"flame: {p.step}: {p.error or p.reason}"
    text = "flame: " + _now_line(p, now)
    if p.where_text():
        text += f" [{p.where_text()}]"
    if p.stats and p.step == "running":
        text += f" [{p.stats_text()}]"
    return text


_COLORS = {"done": "#2e7d32", "failed": "#c62828", "cancelled": "#8d6e63"}


def render_html(p: CellProgress, now: float | None = None) -> str:
    """The HTML form: phase chips, where, live stats; the failure details stay open."""
    esc = html.escape
    if p.step == "done":
        return (f'<div class="flame-cell flame-done" style="color:{_COLORS["done"]}">'
                f"&#10003; {esc(summary_line(p, now))}</div>")
    chips = []
    for step in STEPS:
        if step == "booting" and not p.booted_for_us:
            continue
        reached = step in p.times
        current = step == p.step
        style = ("font-weight:bold;" if current else "") + ("" if reached else "opacity:0.4;")
        chips.append(f'<span class="flame-step flame-step-{step}" style="{style}">{step}</span>')
    head = " &rarr; ".join(chips)
    if p.step in ("failed", "cancelled"):
        color = _COLORS[p.step]
        body = (f'<div class="flame-cell flame-{p.step}" style="border-left:3px solid {color};'
                f'padding-left:6px"><div style="color:{color};font-weight:bold">{p.step}: '
                f"{esc(p.error or p.reason or 'unknown reason')}</div><div>{head}</div>")
        if p.where_text():
            body += f"<div>{esc(p.where_text())}</div>"
        if p.events:
            items = "".join(f"<li>{esc(e)}</li>" for e in p.events)
            body += f"<div>Last events:<ul>{items}</ul></div>"
        if p.log_tail:
            body += f"<div>Runner log (tail):<pre>{esc(p.log_tail[-2000:])}</pre></div>"
        return body + "</div>"
    text = esc(_now_line(p, now))
    extra = [esc(x) for x in (p.where_text(), p.stats_text() if p.step == "running" else "") if x]
    return (f'<div class="flame-cell flame-live"><div>{head}</div><div><b>{text}</b></div>'
            + "".join(f"<div>{x}</div>" for x in extra) + "</div>")
