"""The orphan policy the reaper and "clean up orphans" share (pure), the rows it judges, and
the coalescing publisher of runners' live state."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest

from jupyter_flame.backends.published import StatePublisher, live_state
from jupyter_flame.server.inventory import Context, Row, orphan_reason, pod_row, reapable

NOW = 1_000_000.0
ME = os.getpid()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


DEAD = _dead_pid()


def local(**kw: Any) -> Row:
    base: dict[str, Any] = dict(backend="local", phase="Running", kernel_pid=ME, kernel_id="k1")
    base.update(kw)
    return Row(**base)  # type: ignore[typeddict-item]


def pod(**kw: Any) -> Row:
    base: dict[str, Any] = dict(backend="kubernetes", phase="Running", parent="nb-0",
                                kernel_id="k1", kernel_pid=0, started=NOW - 60)
    base.update(kw)
    return Row(**base)  # type: ignore[typeddict-item]


CTX = Context(now=NOW, live_kernels=frozenset({"k1"}), parent_pod="nb-0",
              live_parents=frozenset({"nb-0"}), kernel_pids={"k1": 4242})

CASES = [
    ("live local runner", local(), CTX, ""),
    ("local runner whose process ended", local(phase="Exited"), CTX, "runner exited"),
    ("local runner of a dead kernel process", local(kernel_pid=DEAD), CTX, "kernel gone"),
    ("local runner being deleted", local(kernel_pid=DEAD, deleting=True), CTX, ""),
    ("pod of a live kernel", pod(), CTX, ""),
    ("pod of a kernel this server does not run", pod(kernel_id="k9"), CTX, "kernel gone"),
    ("pod made by the kernel's previous process (restarted kernel)", pod(kernel_pid=1111),
     CTX, "kernel gone"),
    ("pod made by the kernel's current process", pod(kernel_pid=4242), CTX, ""),
    ("pod of a kernel whose process just died (not restarted yet)",
     pod(kernel_pid=4242, phase="Failed"), dataclasses.replace(CTX, dead_pids=frozenset({4242})),
     "kernel gone"),
    ("finished pod of a dead kernel", pod(kernel_id="k9", phase="Succeeded"), CTX,
     "kernel gone"),
    ("finished pod of a live kernel", pod(phase="Failed"), CTX, "runner finished"),
    ("young pod of an unknown kernel (grace)", pod(kernel_id="k9", started=NOW - 2), CTX, ""),
    ("pod of another notebook pod: never judged by kernel", pod(parent="nb-1", kernel_id="k9"),
     Context(now=NOW, live_kernels=frozenset(), parent_pod="nb-0",
             live_parents=frozenset({"nb-0", "nb-1"})), ""),
    ("pod whose notebook pod is gone", pod(parent="nb-7"), CTX, "notebook pod gone"),
    ("server outside a pod: no kernel judgement", pod(kernel_id="k9"),
     Context(now=NOW, live_kernels=frozenset(), parent_pod=None), ""),
    ("pod being deleted", pod(kernel_id="k9", deleting=True), CTX, ""),
]


@pytest.mark.parametrize(("what", "row", "ctx", "expected"), CASES, ids=[c[0] for c in CASES])
def test_orphan_reason(what: str, row: Row, ctx: Context, expected: str) -> None:
    assert orphan_reason(row, ctx) == expected


@pytest.mark.parametrize(("reason", "reaped"), [
    ("", False), ("kernel gone", True), ("runner exited", True),
    ("runner finished", False), ("notebook pod gone", False)])
def test_only_gone_kernels_and_runners_are_reaped_unasked(reason: str, reaped: bool) -> None:
    assert reapable(Row(orphan=reason)) is reaped


def test_pod_row_reads_labels_resources_and_live_state() -> None:
    row = pod_row({"name": "nb-0-flame-x", "namespace": "ml", "pool": "gpu", "parent": "nb-0",
                   "kernel_id": "k1", "kernel_pid": 7, "runner_id": "gpu-1", "phase": "Running",
                   "node": "n1", "created": "1970-01-12T13:46:40Z",
                   "resources": {"cpu": "2", "gpu": "2"},
                   "live": {"activity": "busy", "cpu_percent": 99.5, "rss": 123}},
                  now=NOW + 5, notebooks={"k1": "a.ipynb"}, live_kernels={"k1"})
    assert row["id"] == "pod~ml~nb-0-flame-x" and row["notebook"] == "a.ipynb"
    assert row["age"] == 5 and row["gpus"] == ["gpu 0", "gpu 1"] and row["activity"] == "busy"
    assert (row["cpu_percent"], row["rss"], row["kernel_pid"]) == (99.5, 123, 7)
    pending = pod_row({"name": "p", "namespace": "ml", "phase": "Pending",
                       "reason": "Unschedulable", "live": {"activity": "idle", "rss": 1}},
                      now=NOW, notebooks={}, live_kernels=())
    assert pending["activity"] == "" and pending["rss"] is None  # stale when not running
    assert pending["reason"] == "Unschedulable"


@pytest.mark.parametrize(("phase", "details", "changed", "expected"), [
    ("busy", {}, True, {"activity": "busy"}),
    ("connected", {}, True, {"activity": "idle"}),
    ("stats", {"cpu_percent": 5.0, "rss": 10, "gpus": []}, True,
     {"cpu_percent": 5.0, "rss": 10}),
    ("scheduling", {"pod": "x"}, False, {}),
])
def test_live_state_folds_events(phase: str, details: dict[str, Any], changed: bool,
                                 expected: dict[str, Any]) -> None:
    state: dict[str, Any] = {}
    assert live_state(state, phase, details, NOW) is changed
    state.pop("updated", None)
    assert state == expected


def test_publisher_coalesces_a_burst_into_one_write_of_the_latest_state() -> None:
    writes: list[tuple[str, dict[str, Any]]] = []

    async def main() -> None:
        pub = StatePublisher(lambda rid, st: writes.append((rid, st)), interval=0.05)
        for phase in ("busy", "idle", "busy", "idle"):
            pub.note("r1", phase, {})
        await asyncio.sleep(0.15)
        pub.note("r1", "busy", {})
        pub.forget("r1")  # ended before its write: nothing is written for it
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert [(rid, st["activity"]) for rid, st in writes] == [("r1", "idle")]
