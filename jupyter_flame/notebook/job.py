"""Background cells (``%%flame --bg``).

The magic returns at once with a :class:`FlameJob`; the notebook stays usable. The cell's
output keeps streaming into *that* cell (an ``ipywidgets.Output`` area, updated from the flame
loop; plain prints outside Jupyter), and its results merge into the namespace when it finishes.

Conflicts: a name the cell binds that the notebook *rebound* while the cell ran (or created,
if it did not exist when the cell started) keeps the notebook's value; the runner's value is
kept in ``job.conflicts`` and a note says so in the cell's output. In-place changes made in the
notebook to an object the cell also returns are not detected: the cell's value wins.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from typing import Any

from jupyter_flame.channel.protocol import ClearOutput, Display, Stream
from jupyter_flame.pool import loop as _loop
from jupyter_flame.pool.link import Output

__all__ = ["FlameJob", "run_background"]

_jobs: list[FlameJob] = []


class _OutputArea:
    """Where a background cell's output goes: a widget in Jupyter, the terminal elsewhere."""

    def __init__(self) -> None:
        self.widget: Any = None
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._flush_scheduled = False
        try:
            from ipykernel.kernelbase import Kernel

            if Kernel.initialized():
                import ipywidgets

                self.widget = ipywidgets.Output()
        except Exception:
            self.widget = None

    def show(self) -> None:
        if self.widget is not None:
            from IPython.display import display

            display(self.widget)

    def add(self, entry: dict[str, Any]) -> None:
        if self.widget is None:
            if entry["output_type"] == "stream":
                stream = sys.stderr if entry["name"] == "stderr" else sys.stdout
                stream.write(entry["text"])
                stream.flush()
            elif entry["output_type"] == "error":
                sys.stderr.write("\n".join(entry["traceback"]) + "\n")
            else:
                sys.stdout.write(str(entry.get("data", {}).get("text/plain", "")) + "\n")
            return
        with self._lock:  # flush() joins consecutive stream text
            self._pending.append(dict(entry))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                _loop.call_soon(_loop.get_loop().call_later, 0.1, self.flush)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
        if self.widget is not None:
            self.widget.outputs = ()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._flush_scheduled = False
        if not pending or self.widget is None:
            return
        outputs = list(self.widget.outputs)
        for entry in pending:
            prev = outputs[-1] if outputs else None
            if (entry["output_type"] == "stream" and prev is not None
                    and prev.get("output_type") == "stream" and prev.get("name") == entry["name"]):
                outputs[-1] = {**prev, "text": prev["text"] + entry["text"]}
            else:
                outputs.append(entry)
        self.widget.outputs = tuple(outputs)


class FlameJob:
    """A ``%%flame --bg`` cell: running, then done or failed.

    Attributes
    ----------
    names:
        After success, the names the cell bound or changed (those merged into the notebook).
    conflicts:
        Values of names the notebook rebound while the cell ran (the notebook's value was kept).
    """

    def __init__(self, number: int, pool_name: str) -> None:
        self.number = number
        self.pool_name = pool_name
        self.started = time.time()
        self.finished: float | None = None
        self.runner: str | None = None
        self.names: list[str] = []
        self.conflicts: dict[str, Any] = {}
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._cancel: Any = None
        self.area: Any = None

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        """The cell's value; raises the cell's exception if it failed."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def wait(self, timeout: float | None = None) -> FlameJob:
        concurrent.futures.wait([self._future], timeout)
        return self

    def cancel(self) -> None:
        """Interrupt the cell on its runner."""
        if self._cancel is not None:
            self._cancel()

    @property
    def status(self) -> str:
        if not self._future.done():
            return "running" if self.runner else "queued"
        return "failed" if self._future.exception() is not None else "done"

    def __repr__(self) -> str:
        where = f" on runner {self.runner}" if self.runner else ""
        took = ""
        if self.finished is not None:
            took = f" in {self.finished - self.started:.1f} s"
        return f"<FlameJob {self.number}: {self.status}{where} (pool '{self.pool_name}'){took}>"


def _to_entry(item: Output) -> dict[str, Any] | None:
    if isinstance(item, Stream):
        return {"output_type": "stream", "name": item.name, "text": item.text}
    if isinstance(item, Display):
        return {"output_type": "display_data", "data": item.data, "metadata": item.metadata}
    return None


def run_background(shell: Any, req: Any) -> FlameJob:
    """Start ``req`` (a :class:`~jupyter_flame.notebook.cell.CellRequest`) and return at once."""
    from jupyter_flame.notebook.cell import make_view, merge, outcome, returned, track

    job = FlameJob(len(_jobs) + 1, req.pool.name)
    _jobs.append(job)
    view = make_view(req, background=True, on_cancel=job.cancel)
    hooks = track(req, view)
    area = _OutputArea()
    job.area = area
    area.show()
    protect = {name: id(value) for name, value in shell.user_ns.items()}

    def on_output(item: Output) -> None:
        if isinstance(item, ClearOutput):
            area.clear()
            return
        entry = _to_entry(item)
        if entry is not None:
            area.add(entry)

    def on_checkout(link: Any, task: int) -> None:
        hooks["on_checkout"](link, task)
        job.runner = link.id

    inner = req.pool.dispatch(req.make_message, on_output=on_output, timeout=req.timeout,
                              on_checkout=on_checkout, on_sent=hooks["on_sent"])

    def cancel() -> None:
        if req.link is not None and req.task is not None:
            req.pool.interrupt(req.link, req.task)
        else:
            inner.cancel()

    job._cancel = cancel

    def finish(f: concurrent.futures.Future[Any]) -> None:
        job.finished = time.time()
        try:
            link, done = f.result()
            returned(view, done)
            value = merge(shell, req, link, done, protect=protect)
            job.names = sorted(done.names)
            job.conflicts = dict(req.conflicts)
            if job.conflicts:
                names = ", ".join(repr(n) for n in sorted(job.conflicts))
                area.add({"output_type": "stream", "name": "stderr", "text":
                          f"jupyter-flame: kept the notebook's {names} (changed while this "
                          f"cell ran); the runner's values are in job.conflicts.\n"})
            job._future.set_result(value)
            outcome(view, None)
        except BaseException as exc:  # noqa: BLE001
            outcome(view, exc)
            tb = getattr(exc, "remote_traceback", None) or [f"{type(exc).__name__}: {exc}"]
            area.add({"output_type": "error", "ename": type(exc).__name__,
                      "evalue": str(exc), "traceback": list(tb)})
            job._future.set_exception(exc)
        _loop.call_soon(area.flush)

    inner.add_done_callback(finish)
    return job
