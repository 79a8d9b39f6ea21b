"""The lifecycle view under a ``%%flame`` cell: live while it waits and runs, one line when done.

One display output, shown before the cell's own outputs and updated in place (so it never
interleaves with them). Three forms, chosen by where the cell runs:

* a Jupyter frontend with widgets: the output starts as HTML and, once the cell has taken
  ``UPGRADE_AFTER`` (0.25 s), becomes an ipywidgets ``VBox`` (an ``HTML`` line of phase chips
  and what happens now, and a Cancel button); a quick cell never pays for widget models. The
  display's ``text/plain`` and ``text/html`` are kept current too, so a saved notebook,
  nbconvert or GitHub show the final state;
* a kernel with widgets turned off (``JUPYTER_FLAME_WIDGETS=0``, for CI and docs builds, or no
  ipywidgets installed): the same display with ``text/plain`` and ``text/html`` only;
* terminal IPython: one progress line on stderr per change of phase.

Updates are throttled (:class:`~.throttle.Throttle`, at most 10 a second) and driven by the
pool's lifecycle events, the runner's heartbeats and the cell's own steps. When the cell is
done the view unsubscribes and stops; the widgets of the previous finished cell are closed then
(its output keeps the final HTML), so comms do not grow with the number of cells.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from jupyter_flame.backends.base import LifecycleEvent
from jupyter_flame.widgets.progress import BOOT_PHASES, CellProgress, render_html, render_line
from jupyter_flame.widgets.throttle import Throttle

__all__ = ["CellView", "widgets_enabled"]

log = logging.getLogger("jupyter_flame.widgets")

ENV = "JUPYTER_FLAME_WIDGETS"
#: seconds a cell runs before its HTML output becomes the live widget
UPGRADE_AFTER = 0.25
_previous: list[CellView] = []  # finished views whose widgets are still open (at most one)
_lock = threading.Lock()


def widgets_enabled() -> bool:
    """Live widgets unless ``JUPYTER_FLAME_WIDGETS`` is 0/false/no/off or ipywidgets is
    missing."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _in_kernel() -> bool:
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class CellView:
    """The view of one cell. Feed it the cell's steps; it follows the pool's events itself.

    ``on_cancel`` is what the Cancel button does (foreground cells: interrupt the kernel's main
    thread, the same path as the stop button; ``--bg`` cells: ``job.cancel()``).
    """

    def __init__(self, pool: Any, *, background: bool = False,
                 on_cancel: Callable[[], None] | None = None, mode: str | None = None,
                 interval: float = 0.1) -> None:
        self.pool = pool
        self.progress = CellProgress(str(pool.name), background=background)
        self.mode = mode or ("widget" if _in_kernel() and widgets_enabled()
                             else "html" if _in_kernel() else "line")
        self.on_cancel = on_cancel
        self._booting: set[str] = set()
        self._last_line = ""
        self._handle: Any = None
        self.widget: Any = None
        self._html: Any = None
        self.button: Any = None
        self._closed = False
        self._throttle = Throttle(self._refresh, interval)
        self._unsubscribe: Callable[[], None] | None = pool.backend.subscribe(self._on_event)
        self._state = threading.Lock()  # building the widgets vs finishing
        self._render = threading.Lock()

    # -- what the cell tells it ----------------------------------------------------------------
    def show(self) -> None:
        """Display the view (call in the cell, before its outputs)."""
        self.progress.queue_position = self.pool.waiting() + 1  # those ahead, and this cell
        if self.mode == "line":
            self._refresh()
            return
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)
        if self.mode == "widget":  # a quick cell needs no widget: HTML says it all
            self._throttle.later(UPGRADE_AFTER, self._upgrade)

    def _upgrade(self) -> None:
        """Still going: turn the HTML output into the live widget, with its Cancel button."""
        with self._state:
            if self._closed or self.widget is not None:
                return
            try:
                self._build()
            except Exception:
                log.exception("building the cell widget failed")
                return
        with self._render:  # never after the final render
            if self._handle is not None and not self._closed:
                self._handle.update(self._bundle(), raw=True)

    def step(self, name: str, **info: Any) -> None:
        """The cell reached ``name`` (shipping, running, returning, merging); any thread."""
        self.progress.enter(name, **info)
        self._throttle.poke()

    def checked_out(self, runner: str, info: dict[str, Any], sent: int, cached: int) -> None:
        where = {k: info[k] for k in ("pid", "pod", "node", "gpus", "resources", "namespace")
                 if info.get(k)}
        self.progress.where.update(where)
        self.step("shipping", runner=runner, sent_bytes=sent, cached_bytes=cached)

    def finish(self, outcome: str, error: str = "") -> None:
        """The cell is over (``done``, ``failed`` or ``cancelled``): final render, release
        listeners, close the previous finished cell's widgets."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self.progress.enter(outcome, error=error)
        self._throttle.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.button is not None:
            with _lock:
                old, _previous[:] = list(_previous), [self]
            for view in old:  # before our final render, which then comes last
                view.retire()
            _close(self.button)
            self.widget.children = (self._html,)
        self._refresh(final=True)

    def retire(self) -> None:
        """Close this finished view's widgets; its output keeps the final HTML."""
        if self.widget is None:
            return
        bundle = self._fallback()
        for w in (self._html, self.widget):
            _close(w)
        self.widget = self._html = None
        if self._handle is not None:
            self._handle.update(bundle, raw=True)

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, ev: LifecycleEvent) -> None:
        if ev.pool != self.progress.pool:
            return
        p = self.progress
        if p.runner:
            ours = ev.runner_id == p.runner
        else:  # waiting: a runner booting now may well be the one that takes the cell
            if ev.phase in BOOT_PHASES or ev.phase == "failed":
                self._booting.add(ev.runner_id)
            ours = ev.runner_id in self._booting and ev.phase != "stats"
        p.on_event(ev.phase, ev.reason, ev.message, dict(ev.details), ours)
        if not p.runner and p.step == "queued":
            p.queue_position = self.pool.waiting() or None
        if ours:
            self._throttle.poke()

    # -- rendering ---------------------------------------------------------------------------
    def _fallback(self) -> dict[str, str]:
        return {"text/plain": render_line(self.progress), "text/html": render_html(self.progress)}

    def _bundle(self) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self.widget is not None:
            bundle.update(self.widget._repr_mimebundle_() or {})
        bundle.update(self._fallback())  # our text, not the VBox's repr
        return bundle

    def _refresh(self, final: bool = False) -> None:
        # one render at a time, and none after the final one: a throttled refresh that began
        # on the flame loop just before the cell finished must not overwrite the final state
        with self._render:
            if self._closed and not final:
                return
            self._render_now()

    def _render_now(self) -> None:
        try:
            p = self.progress
            if self.mode == "line":
                line = render_line(p)  # a new line when the phase changes, not every tick
                changed = line.split(",")[0] != self._last_line.split(",")[0] or p.finished
                if changed and line != self._last_line:
                    print(line, file=sys.stderr, flush=True)
                self._last_line = line
            elif self.mode == "html" or self._html is None:  # widgets off, or not built yet
                if self._handle is not None:
                    self._handle.update(self._fallback(), raw=True)
            elif self._html is not None:
                self._html.value = render_html(p)
                if p.finished and self._handle is not None:
                    self._handle.update(self._bundle(), raw=True)
            if p.step == "running" and not p.finished:
                self._throttle.every(1.0)  # the elapsed time ticks
        except Exception:  # a broken view must never break the cell
            log.exception("refreshing the cell view failed")

    def _build(self) -> None:
        import ipywidgets as w

        self._html = w.HTML(render_html(self.progress))
        self.button = w.Button(description="Cancel", icon="stop", button_style="warning",
                               tooltip="Interrupt this cell on its runner",
                               layout=w.Layout(width="110px"))
        self.button.add_class("flame-cancel")
        self.button.on_click(lambda _b: self.cancel())
        self.widget = w.VBox([self._html, self.button])
        self.widget.add_class("flame-cell-view")
        route_to_cancel_lane(self.button)

    def cancel(self) -> None:
        if self.progress.finished or self.on_cancel is None:
            return
        try:
            self.on_cancel()
        except Exception:
            log.exception("cancelling the cell failed")


def _close(widget: Any) -> None:
    """Close a widget and the layout and style models it made (each is a comm)."""
    for part in ("layout", "style"):
        sub = getattr(widget, part, None)
        if sub is not None and hasattr(sub, "close"):
            sub.close()
    widget.close()


def interrupt_main() -> None:
    """What the kernel's stop button does: SIGINT to the kernel's main thread."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


_lane: dict[str, Any] = {}


def route_to_cancel_lane(button: Any) -> None:
    """Let the button's clicks through while the kernel's main thread runs a cell.

    Widget messages queue behind the running cell. ipykernel 7 runs subshells in their own
    threads and routes a comm's messages to the subshell its ``_reply_subshell_for`` names, so
    the Cancel buttons' (and the dashboard controls') comms are routed to one subshell of
    ours, whose thread handles the click while the main thread waits for the runner. (The
    comm's own choice, the subshell that last sent on it, would move with every update the
    kernel sends from a cell; ours stays put.) On older kernels the click is handled after the
    cell (the stop button still works).
    """
    comm = getattr(button, "comm", None)
    sid = _cancel_subshell()
    if comm is not None and sid is not None:
        comm._reply_subshell_for = lambda _data, _default: sid


_lane_lock = threading.Lock()


def _cancel_subshell() -> str | None:
    with _lane_lock:  # made once; callers meanwhile wait for it rather than go without
        return _make_cancel_subshell()


def _make_cancel_subshell() -> str | None:
    if "id" in _lane:
        return _lane["id"]  # type: ignore[no-any-return]
    _lane["id"] = None
    try:
        from IPython.core.getipython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        if kernel is None or not getattr(kernel, "_supports_kernel_subshells", False):
            return None
        thread = kernel.shell_channel_thread
        made = threading.Event()

        def make() -> None:
            try:
                _lane["id"] = thread.manager._create_subshell()
            finally:
                made.set()

        thread.io_loop.add_callback(make)
        made.wait(5)
    except Exception:
        log.debug("no subshell for Cancel buttons", exc_info=True)
    return _lane["id"]  # type: ignore[no-any-return]
