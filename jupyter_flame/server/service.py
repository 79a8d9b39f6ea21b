"""The server extension's core: snapshots of every runner, the live stream, the reaper, actions.

One asyncio task takes a snapshot every ``poll_interval`` seconds while someone listens to the
stream, and every ``reap_interval`` seconds regardless; each snapshot that finds orphans the
reaper acts on (:func:`~.inventory.reapable`) deletes them. Blocking work (psutil, the
Kubernetes client, killing process groups) runs in threads, so the server's loop never waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from jupyter_flame.backends.local_records import (
    LocalRunnerRecord,
    alive,
    list_local_runner_records,
    stop_local_runner,
)
from jupyter_flame.errors import BackendError
from jupyter_flame.server.inventory import (
    Context,
    ProcessMeter,
    Row,
    local_row,
    orphan_reason,
    pod_row,
    reapable,
    row_id,
)
from jupyter_flame.server.kube import Kube

__all__ = ["FlameServer", "RunnerNotFound"]

log = logging.getLogger("jupyter_flame.server")

#: kernel id -> {"path": notebook path, "pid": process id}, for the kernels this server runs
Kernels = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


class RunnerNotFound(LookupError):
    """No runner has that id (anymore)."""


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


class FlameServer(LoggingConfigurable):
    """The runners panel's server side: snapshots of every runner, the live stream, the
    reaper, and the delete/logs/cleanup actions."""

    poll_interval = Float(1.0, config=True,
                          help="Seconds between snapshots while the panel is open.")
    reap_interval = Float(5.0, config=True, help=(
        "Seconds between reaper passes: runners whose kernel is gone are deleted within "
        "about this plus the Kubernetes grace (reap_grace)."))
    reap = Bool(True, config=True, help="Delete runners whose kernel is gone.")
    reap_grace = Float(10.0, config=True, help=(
        "Seconds a runner pod is spared after creation before the reaper judges its kernel."))
    log_lines = Int(200, config=True, help="Log lines returned when none are asked for.")

    def __init__(self, runtime_dir: str | Path, kernels: Kernels, kube: Kube | None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime_dir = Path(runtime_dir)
        self.kernels = kernels
        self.kube = kube
        self.meter = ProcessMeter()
        self.listeners: set[asyncio.Queue[str]] = set()
        self.latest: dict[str, Any] | None = None
        self._text = ""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.kube_error: BackendError | None = None  # of the latest snapshot
        self.reaped: list[Row] = []  # what the reaper deleted, newest last (for the log/tests)

    # -- snapshots ---------------------------------------------------------------------------
    def _collect(self, kernels: dict[str, dict[str, Any]]) -> dict[str, Any]:
        now = time.time()
        live = frozenset(kernels)
        notebooks = {kid: str(k.get("path") or "") for kid, k in kernels.items()}
        rows: list[Row] = []
        records = list_local_runner_records(self.runtime_dir)
        for record in records:
            rows.append(local_row(record, now=now, notebooks=notebooks, live_kernels=live,
                                  meter=self.meter))
        self.meter.prune()
        problems: list[dict[str, Any]] = []
        self.kube_error = None
        parents: frozenset[str] | None = None
        if self.kube is not None:
            try:
                pods = [pod_row(p, now=now, notebooks=notebooks, live_kernels=live)
                        for p in self.kube.runner_pods()]
                parents = self.kube.existing_pods({r["parent"] for r in pods if r["parent"]})
                rows.extend(pods)
            except BackendError as exc:
                self.kube_error = exc
                problems.append({"source": "kubernetes", "status": exc.status or 503,
                                 "message": str(exc)})
        pids = {kid: int(k["pid"]) for kid, k in kernels.items() if k.get("pid")}
        ctx = Context(now=now, live_kernels=live, parent_pod=self.kube.parent if self.kube else None,
                      live_parents=parents, grace=self.reap_grace,
                      kernel_pids=pids, dead_pids=frozenset(p for p in pids.values()
                                                            if not alive(p)))
        for row in rows:
            row["orphan"] = orphan_reason(row, ctx)
        return {"runners": rows, "problems": problems, "time": now,
                "kubernetes": self.kube.describe() if self.kube else None,
                "summary": {"runners": sum(r["phase"] in ("Running", "Pending") for r in rows),
                            "gpus": sum(len(r["gpus"]) for r in rows
                                        if r["phase"] in ("Running", "Pending")),
                            "orphans": sum(bool(r["orphan"]) for r in rows)}}

    async def snapshot(self) -> dict[str, Any]:
        """Every runner now (also tells the stream's listeners when anything changed)."""
        async with self._lock:
            kernels = await self.kernels()
            snap = await asyncio.to_thread(self._collect, kernels)
            self.latest = snap
            text = json.dumps({k: v for k, v in snap.items() if k != "time"}, sort_keys=True)
            if text != self._text:
                self._text = text
                message = json.dumps(snap)
                for queue in list(self.listeners):
                    queue.put_nowait(message)
            return snap

    def find(self, runner_id: str) -> Row:
        for row in (self.latest or {}).get("runners", []):
            if row["id"] == runner_id:
                return row  # type: ignore[no-any-return]
        raise RunnerNotFound(runner_id)

    async def lookup(self, runner_id: str) -> Row:
        """The runner ``runner_id`` as of a fresh snapshot."""
        await self.snapshot()
        try:
            return self.find(runner_id)
        except RunnerNotFound:
            if runner_id.startswith("pod~") and self.kube_error is not None:
                raise self.kube_error from None  # not known: Kubernetes could not be asked
            raise

    # -- actions -----------------------------------------------------------------------------
    def _record(self, runner_id: str) -> LocalRunnerRecord:
        """The runtime record behind a local row (read again: it may have gone meanwhile)."""
        for record in list_local_runner_records(self.runtime_dir):
            if row_id("local", record.get("id", "")) == runner_id:
                return record
        raise RunnerNotFound(runner_id)

    def _delete_blocking(self, row: Row) -> str:
        if row["backend"] == "local":
            return stop_local_runner(self._record(row["id"]), runtime_dir=self.runtime_dir)
        if self.kube is None:
            raise RunnerNotFound(row["id"])
        return "deleted" if self.kube.delete_pod(row["pod"]) else "already gone"

    async def delete(self, runner_id: str) -> dict[str, Any]:
        row = await self.lookup(runner_id)
        action = await asyncio.to_thread(self._delete_blocking, row)
        self._wake.set()
        return {**row, "action": action}

    async def logs(self, runner_id: str, lines: int | None = None) -> dict[str, Any]:
        row = await self.lookup(runner_id)
        count = max(1, min(lines or self.log_lines, 5000))
        if row["backend"] == "local":
            record = await asyncio.to_thread(self._record, runner_id)
            text = await asyncio.to_thread(_tail, record.get("log", ""), count)
        else:
            assert self.kube is not None
            log_text = await asyncio.to_thread(self.kube.pod_log, row["pod"], count)
            if log_text is None:
                raise RunnerNotFound(runner_id)
            text = log_text.splitlines()[-count:]
        return {"id": runner_id, "lines": text}

    async def orphans(self) -> list[Row]:
        snap = await self.snapshot()
        return [r for r in snap["runners"] if r["orphan"]]

    async def cleanup(self, ids: list[str] | None) -> list[dict[str, Any]]:
        """Delete the orphans (only those of ``ids`` when given: what the user confirmed)."""
        done = []
        for row in await self.orphans():
            if ids is not None and row["id"] not in ids:
                continue
            try:
                action = await asyncio.to_thread(self._delete_blocking, row)
            except RunnerNotFound:
                action = "already gone"
            done.append({**row, "action": action})
        self._wake.set()
        return done

    # -- the loop ----------------------------------------------------------------------------
    async def reap_once(self) -> list[Row]:
        reaped = []
        for row in (await self.snapshot())["runners"]:
            if not reapable(row):
                continue
            try:
                action = await asyncio.to_thread(self._delete_blocking, row)
            except (RunnerNotFound, BackendError) as exc:
                log.warning("jupyter-flame: could not reap runner %s: %s", row["id"], exc)
                continue
            log.info("jupyter-flame: reaped runner %s of pool %s (%s; %s)", row["id"],
                     row.get("pool"), row["orphan"], action)
            reaped.append(row)
        self.reaped.extend(reaped)
        del self.reaped[:-100]
        if reaped:
            await self.snapshot()
        return reaped

    async def _run(self) -> None:
        last_reap = 0.0
        while True:
            try:
                if self.reap and time.monotonic() - last_reap >= self.reap_interval:
                    last_reap = time.monotonic()
                    await self.reap_once()
                elif self.listeners:
                    await self.snapshot()
            except Exception:
                log.exception("jupyter-flame: runner snapshot failed")
            wait = self.poll_interval if self.listeners else self.reap_interval
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def listen(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.listeners.add(queue)
        self._wake.set()
        return queue

    def unlisten(self, queue: asyncio.Queue[str]) -> None:
        self.listeners.discard(queue)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
