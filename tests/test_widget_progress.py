"""The cell's journey as data and text (pure): table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_flame.widgets.progress import (
    CellProgress,
    human_bytes,
    render_html,
    render_line,
    summary_line,
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def journey(events: list[tuple[float, str, dict[str, Any]]]) -> CellProgress:
    """Replay ``(time, what, data)``: what is a cell step or ``ev:<phase>`` for an event."""
    clock = Clock()
    p = CellProgress("gpu=1", clock=clock)
    for t, what, data in events:
        clock.t = t
        if what.startswith("ev:"):
            p.on_event(what[3:], data.pop("reason", ""), data.pop("message", ""), data,
                       ours=data.pop("ours", True))
        else:
            p.enter(what, **data)
    return p


POD = {"pod": "nb-flame-x", "node": "gpu-a",
       "resources": {"requests": {"cpu": "2", "nvidia.com/gpu": "1"}}}


@pytest.mark.parametrize("events, line", [
    ([], "flame: queued for pool 'gpu=1'"),
    ([(100.5, "ev:requested", {}), (101, "ev:scheduling", {
        "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient "
        "nvidia.com/gpu."})],
     "flame: booting a runner: requested > scheduling (Unschedulable: 0/3 nodes are "
     "available: 3 Insufficient nvidia.com/gpu.)"),
    ([(100.5, "ev:requested", {}), (101, "ev:pulling", {"reason": "Pulling", **POD})],
     "flame: booting a runner: requested > pulling (Pulling) [pod nb-flame-x on gpu-a cpu=2, "
     "gpu=1]"),
    ([(101, "shipping", {"runner": "r1", "sent_bytes": 2_500_000})],
     "flame: shipping 2.5 MB to r1"),
    ([(101, "shipping", {"runner": "r1"}), (101.1, "running", {}),
      (104.2, "ev:stats", {"cpu_percent": 99.5, "rss": 200_000_000, "gpus": [
          {"index": 0, "util_percent": 87, "memory_used": 3e9, "memory_total": 8e10}]})],
     "flame: running on r1, 4 s [cpu 100%, rss 200.0 MB, gpu0 87% 3.0 GB/80.0 GB]"),
    # an event of another runner (not ours) changes nothing
    ([(101, "ev:scheduling", {"reason": "X", "ours": False})], "flame: queued for pool 'gpu=1'"),
])
def test_render_line(events: list[Any], line: str) -> None:
    p = journey(events)
    p.clock.t = max([100.0] + [e[0] for e in events]) + 0.0  # type: ignore[attr-defined]
    if events and events[-1][1] == "ev:stats":
        p.clock.t = 105.1  # type: ignore[attr-defined]
    assert render_line(p) == line


def test_summary_of_a_cell_that_booted_its_runner() -> None:
    p = journey([(100.2, "ev:requested", {}), (101.0, "ev:connected", {"pid": 42}),
                 (101.2, "shipping", {"runner": "r1", "sent_bytes": 1000}),
                 (101.3, "running", {}),
                 (103.4, "returning", {"returned_bytes": 2_000_000, "remote_seconds": 2.05,
                                       "remote_timings": {"unpack": 0.02, "run": 2.0,
                                                          "pack": 0.03}}),
                 (103.5, "merging", {}), (103.6, "done", {})])
    # ship: 0.1 s until on the wire + 0.02 s unpacking; return: the rest of the flight
    assert p.durations() == pytest.approx(
        {"queue": 0.2, "boot": 1.0, "ship": 0.12, "run": 2.0, "return": 0.18, "merge": 0.1})
    assert summary_line(p) == ("done in 3.60 s (queue 0.20, boot 1.00, ship 0.12, run 2.00, "
                               "return 0.18, merge 0.10 s); sent 1.0 kB, back 2.0 MB; process 42")
    html = render_html(p)
    assert 'class="flame-cell flame-done"' in html and "done in 3.60 s" in html


def test_failure_stays_open_with_events_and_log() -> None:
    p = journey([(100.1, "ev:requested", {}),
                 (100.5, "ev:failed", {"reason": "ImagePullBackOff", "message": "no such image",
                                       "log_tail": "boom\n"}),
                 (100.6, "failed", {"error": "BootError: runner r1 could not start"})])
    html = render_html(p)
    assert "flame-failed" in html and "BootError: runner r1 could not start" in html
    assert "Last events" in html and "ImagePullBackOff" in html and "<pre>boom\n</pre>" in html
    assert render_line(p) == "flame: failed: BootError: runner r1 could not start"
    p.enter("done")  # a final step sticks
    assert p.step == "failed"


@pytest.mark.parametrize("n, text", [(None, "-"), (0, "0 B"), (999, "999 B"),
                                     (1500, "1.5 kB"), (2.5e9, "2.5 GB")])
def test_human_bytes(n: float | None, text: str) -> None:
    assert human_bytes(n) == text
