"""The pool dashboard as HTML (pure): what ``Pool``'s ``text/html`` and the dashboard widget show.

A table per pool: every runner with its phase, node, age, busy or idle (concurrency used of
max), idle time left before shutdown, requested resources and GPUs, and its CPU and memory in
use (from its heartbeats); totals of runners and GPUs held on top.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from jupyter_flame.pool.status import PoolStatus, RunnerStatus, format_resources

__all__ = ["gpus_held", "render_html", "totals_line"]

_PHASE_COLORS = {"idle": "#2e7d32", "busy": "#1565c0", "connected": "#2e7d32",
                 "failed": "#c62828", "stopping": "#8d6e63", "stopped": "#9e9e9e"}


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"


def gpus_held(r: RunnerStatus) -> int:
    gpus = r["gpus"]
    if isinstance(gpus, (list, tuple)):
        return len(gpus)
    try:
        return int(gpus or 0)
    except (TypeError, ValueError):
        return 0


def totals_line(statuses: list[PoolStatus]) -> str:
    live = [r for st in statuses for r in st["runners"] if r["state"] != "gone"]
    gpus = sum(gpus_held(r) for r in live)
    busy = sum(1 for r in live if r["load"])
    pools = sum(1 for st in statuses if not st["closed"])
    return (f"{pools} pool(s), {len(live)} runner(s) ({busy} busy), {gpus} GPU(s) held, "
            f"{sum(st['waiting'] for st in statuses)} waiting")


def _runner_row(r: RunnerStatus) -> str:
    esc = html.escape
    where = r["pod"] or (f"pid {r['pid']}" if r["pid"] else "-")
    busy = "busy" if r["load"] else "idle"
    idle = "-" if r["idle_left"] is None else f"{r['idle_left']:.0f} s"
    res = format_resources(r["resources"]) or "-"
    cpu = "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.0f}%"
    gpu = "; ".join(f"gpu{g['index']} {g['util_percent']}% {_mb(g['memory_used'])}"
                    for g in r["gpu_stats"])
    color = _PHASE_COLORS.get(r["phase"], "#6a1b9a")
    phase = esc(r["phase"])
    if r["reason"] and r["phase"] in ("scheduling", "pulling", "failed", "stopping"):
        phase += f" <small>({esc(r['reason'])}: {esc(r['message'][:120])})</small>"
    cells = [esc(r["id"]), f'<span style="color:{color}">{phase}</span>', esc(where),
             esc(r["node"] or "-"), f"{r['age']:.0f} s",
             f"{busy} {r['load']}/{r['max_concurrency']}", idle, esc(res), cpu,
             _mb(r["rss"]), esc(gpu or "-"), esc("; ".join(r["running"]) or "-")]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_HEAD = ("runner", "phase", "where", "node", "age", "busy", "idle left", "resources", "cpu",
         "rss", "gpu use", "runs")


def render_html(statuses: Iterable[PoolStatus]) -> str:
    sts = list(statuses)
    out = [f'<div class="flame-dashboard"><div><b>jupyter-flame</b>: '
           f"{html.escape(totals_line(sts))}</div>"]
    for st in sts:
        state = "shut down" if st["closed"] else f"{len(st['runners'])} runner(s)"
        out.append(
            f'<div class="flame-pool" style="margin-top:4px"><b>{html.escape(st["name"])}</b> '
            f"[{html.escape(st['backend'])}; {html.escape(st['spec'])}; channel "
            f"{html.escape(st.get('channel', '?'))}] min={st['min']} "
            f"max={st['max']} max_concurrency={st['max_concurrency']}: {state}, "
            f"{st['waiting']} waiting, {st['tasks_done']} task(s) done</div>")
        if st["runners"]:
            head = "".join(f"<th>{h}</th>" for h in _HEAD)
            rows = "".join(_runner_row(r) for r in st["runners"])
            out.append(f'<table class="flame-runners"><tr>{head}</tr>{rows}</table>')
        if st["last_error"]:
            out.append(f'<div style="color:#c62828">last error: '
                       f"{html.escape(st['last_error'][:300])}</div>")
    return "".join(out) + "</div>"


