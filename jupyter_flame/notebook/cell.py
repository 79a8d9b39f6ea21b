"""How a ``%%flame`` cell travels, on the kernel's side.

1. **Capture**: the cell's source after IPython's transforms is analysed
   (:mod:`jupyter_flame.values.capture`); the names it reads that live in the notebook are packed
   (:mod:`jupyter_flame.values.shipping`). Anything unpicklable fails here, before anything is sent.
2. **Checkout**: the pool hands out a runner; values the runner already holds unchanged (same
   content digest) are referenced, not resent.
3. **Stream**: outputs arrive on the flame loop and are rendered in the cell from the main
   thread as they happen (foreground), or appended to an output area (``--bg``).
4. **Merge**: on success every returned name is unpickled first, then all land in the
   namespace in one step; on failure nothing lands and the remote exception is raised.

Interrupts (Ctrl-C / Jupyter's stop button) are forwarded to the runner; a runner that does not
stop within ``interrupt_grace`` seconds is killed and replaced.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.channel.protocol import ClearOutput, Display, Done, Execute, Packed, Stream
from jupyter_flame.errors import FlameError
from jupyter_flame.pool.link import Output, RunnerLink
from jupyter_flame.pool.pool import Pool
from jupyter_flame.values.remote import raise_remote, rebuild_error

__all__ = ["CellRequest", "merge", "prepare", "run_foreground"]

_DONE = object()


@dataclass
class CellRequest:
    """A cell on its way to a runner: what to run, where, and what it reads."""

    source: str
    pool: Pool
    packed: dict[str, Packed]
    filename: str
    timeout: float | None = None
    transfer: dict[str, dict[str, int]] = field(default_factory=dict)
    task: int | None = None
    link: RunnerLink | None = None
    #: names a background cell bound that the notebook rebound meanwhile, with the runner's values
    conflicts: dict[str, Any] = field(default_factory=dict)
    #: no text status (``--quiet``, ``c.FlameMagics.quiet``)
    quiet: bool = False

    def make_message(self, link: RunnerLink, task: int) -> Execute:
        cached = {n: p.digest for n, p in self.packed.items()
                  if p.digest and link.cache.get(n) == p.digest}
        variables = {n: p for n, p in self.packed.items() if n not in cached}
        self.transfer = {
            "shipped": {n: p.nbytes for n, p in variables.items()},
            "cached": {n: self.packed[n].nbytes for n in cached},
        }
        self.pool.last_transfer = dict(self.transfer)
        return Execute(task=task, source=self.source, variables=variables, cached=cached,
                       filename=self.filename)

    def on_checkout(self, link: RunnerLink, task: int) -> None:
        self.link, self.task = link, task


def prepare(shell: Any, source: str, pool: Pool, *, skip: tuple[str, ...] = (),
            timeout: float | None = None, warn_bytes: int | None = None,
            quiet: bool = False) -> CellRequest:
    """Analyse and pack a cell. Raises ``SyntaxError`` or ``SerializationError``; sends
    nothing."""
    from jupyter_flame.values.capture import analyze, names_to_ship
    from jupyter_flame.values.shipping import check_frame_limit, pack_namespace, warn_size

    python = shell.transform_cell(source)
    names = analyze(python)
    ship = names_to_ship(names, shell.user_ns, skip=skip)
    packed = pack_namespace(shell.user_ns, ship)
    check_frame_limit({n: p.nbytes for n, p in packed.items()}, pool.options.max_frame,
                      "This cell sends")
    if warn_bytes is not None:
        import warnings

        with warnings.catch_warnings(record=True) as caught:  # the user's filters still apply
            for name, p in packed.items():
                if p.nbytes >= warn_bytes:
                    warn_size(name, p.nbytes, warn_bytes, type_name=p.type_name)
        for w in caught:  # shown as one clean line, not as a line of our source
            print(f"{w.category.__name__}: {w.message}", file=sys.stderr)
    count = getattr(shell, "execution_count", 0)
    return CellRequest(source=source, pool=pool, packed=packed,
                       filename=f"<flame-cell-{count}>", timeout=timeout, quiet=quiet)


def _render(item: Output) -> None:
    if isinstance(item, Stream):
        stream = sys.stderr if item.name == "stderr" else sys.stdout
        stream.write(item.text)
        stream.flush()
    elif isinstance(item, Display):
        from IPython.display import publish_display_data

        transient = {"display_id": item.display_id} if item.display_id else None
        if transient is not None:
            publish_display_data(item.data, item.metadata, transient=transient,
                                 update=item.update)
        else:
            publish_display_data(item.data, item.metadata)
    elif isinstance(item, ClearOutput):
        from IPython.display import clear_output

        clear_output(wait=item.wait)


def make_view(req: CellRequest, *, background: bool = False,
              on_cancel: Any = None) -> Any:
    """The lifecycle view of this cell (``None`` with ``--quiet``), shown now."""
    if req.quiet:
        return None
    from jupyter_flame.widgets.cell_view import CellView

    view = CellView(req.pool, background=background, on_cancel=on_cancel)
    view.show()
    return view


def track(req: CellRequest, view: Any) -> dict[str, Any]:
    """The ``dispatch`` hooks that tell ``view`` (and ``req``) where the cell is."""
    def on_checkout(link: RunnerLink, task: int) -> None:
        req.on_checkout(link, task)
        if view is not None:
            view.checked_out(link.id, link.handle.info,
                             sum(req.transfer.get("shipped", {}).values()),
                             sum(req.transfer.get("cached", {}).values()))

    def on_sent() -> None:
        if view is not None:
            view.step("running")

    return {"on_checkout": on_checkout, "on_sent": on_sent}


def returned(view: Any, done: Done) -> None:
    """The runner's answer arrived: say how much came back, and that merging starts."""
    if view is None:
        return
    nbytes = sum(p.nbytes for p in done.names.values())
    if done.value is not None:
        nbytes += done.value.nbytes
    view.step("returning", returned_bytes=nbytes, remote_seconds=done.elapsed,
              remote_timings=dict(done.timings))
    view.step("merging")


def outcome(view: Any, exc: BaseException | None) -> None:
    """Close ``view``: done, cancelled (an interrupt) or failed with the reason."""
    if view is None:
        return
    if exc is None:
        view.finish("done")
    elif isinstance(exc, (KeyboardInterrupt, concurrent.futures.CancelledError)):
        view.finish("cancelled", str(exc) or "interrupted")
    else:
        view.finish("failed", f"{type(exc).__name__}: {exc}")


def _drain(q: queue.SimpleQueue[Any], until: float | None = None) -> bool:
    """Render queued outputs until the task is done (True) or ``until`` passes (False)."""
    while True:
        wait = 0.25 if until is None else max(0.0, min(0.25, until - time.monotonic()))
        try:
            item = q.get(timeout=wait)
        except queue.Empty:
            if until is not None and time.monotonic() >= until:
                return False
            continue
        if item is _DONE:
            return True
        _render(item)


def run_foreground(shell: Any, req: CellRequest) -> Any:
    """Run the cell, streaming its output into the current cell; return its value."""
    from jupyter_flame.widgets.cell_view import interrupt_main

    draining = threading.Event()

    def cancel() -> None:  # the view's Cancel: what the kernel's stop button does
        if draining.is_set():
            interrupt_main()

    view = make_view(req, on_cancel=cancel)
    try:
        value = _run_foreground(shell, req, view, draining)
    except BaseException as exc:
        outcome(view, exc)
        raise
    outcome(view, None)
    return value


def _run_foreground(shell: Any, req: CellRequest, view: Any, draining: threading.Event) -> Any:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    fut = req.pool.dispatch(req.make_message, on_output=q.put, timeout=req.timeout,
                            **track(req, view))
    fut.add_done_callback(lambda f: q.put(_DONE))
    draining.set()
    try:
        _drain(q)
    except KeyboardInterrupt:
        _interrupt(req, fut, q)
    finally:
        draining.clear()
    link, done = fut.result()
    returned(view, done)
    return merge(shell, req, link, done)


def _interrupt(req: CellRequest, fut: concurrent.futures.Future[Any],
               q: queue.SimpleQueue[Any]) -> None:
    link, task = req.link, req.task
    if link is None or task is None:
        fut.cancel()  # still waiting for a runner: leave the queue
        raise KeyboardInterrupt
    grace = req.pool.options.interrupt_grace
    req.pool.interrupt(link, task)
    try:
        finished = _drain(q, until=time.monotonic() + grace)
    except KeyboardInterrupt:
        finished = False  # a second Ctrl-C: don't wait out the grace period
    if finished:
        try:
            fut.result()
        except Exception:
            pass
        raise KeyboardInterrupt
    req.pool.kill_runner(link)
    try:
        fut.result(timeout=10)
    except BaseException:
        pass
    raise KeyboardInterrupt(
        f"Runner {link.id} did not stop within {grace:g} s (interrupt_grace); it was killed. "
        "The pool starts a fresh runner for the next cell.")


def merge(shell: Any, req: CellRequest, link: RunnerLink, done: Done,
          protect: dict[str, int] | None = None) -> Any:
    """Apply a finished cell to the namespace, all or nothing; return the cell's value.

    ``protect`` (background cells) maps names to the ``id()`` their value had when the cell
    started; a name the notebook rebound since then keeps the notebook's value.
    """
    from jupyter_flame.values.shipping import unpack

    if not done.ok:
        assert done.error is not None
        raise_remote(rebuild_error(done.error, pool=link.pool, runner=link.id))
    try:
        new = {name: unpack(p) for name, p in done.names.items()}
        value = unpack(done.value) if done.has_value and done.value is not None else None
    except Exception as exc:
        raise FlameError(
            f"The results of the cell could not be unpickled in the notebook ({exc}); nothing "
            "was changed. Import the modules the results need in the notebook first.",
            pool=link.pool, runner=link.id) from exc
    returned = {n: p.nbytes for n, p in done.names.items()}
    req.transfer["returned"] = returned
    req.pool.last_transfer = dict(req.transfer)
    conflicts: dict[str, Any] = {}
    ns = shell.user_ns
    if protect is not None:
        missing = object()
        for name in list(new):
            current = ns.get(name, missing)
            before = protect.get(name)
            if (before is None and current is not missing) or (
                    before is not None and id(current) != before):
                conflicts[name] = new.pop(name)
    ns.update(new)
    for name in done.deleted:
        if name not in conflicts:
            ns.pop(name, None)
    if conflicts:
        req.transfer["conflicts"] = {n: returned[n] for n in conflicts}
        req.conflicts = conflicts
    return value

