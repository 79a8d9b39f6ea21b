"""The live pool dashboard: ``%flame status`` and displaying a ``Pool``.

Every pool (or one) and its runners as an HTML table (:mod:`jupyter_flame.pool.status_html`)
refreshed by the pools' lifecycle events and the runners' heartbeats (throttled to 10 updates
a second; a 1 s tick while runners live, for ages and idle time left), with controls acting on
the real pools: resize min/max, terminate a runner, shut a pool down. The controls' clicks go
through the same kernel subshell as the cells' Cancel buttons, so they work while a cell runs.
The dashboard stops listening when it is closed or when every pool it shows is shut down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from jupyter_flame.pool.pool import Pool
from jupyter_flame.pool.registry import all_pools
from jupyter_flame.pool.status import PoolStatus, render_text
from jupyter_flame.pool.status_html import render_html
from jupyter_flame.widgets.cell_view import route_to_cancel_lane, widgets_enabled
from jupyter_flame.widgets.throttle import Throttle

__all__ = ["PoolDashboard", "pool_bundle"]

log = logging.getLogger("jupyter_flame.widgets")
_every_pool: list[PoolDashboard] = []  # the newest dashboard of every pool (%flame status)


class PoolDashboard:
    """A dashboard of ``pools`` (``None``: every pool of this kernel, new ones included)."""

    def __init__(self, pools: list[Pool] | None = None, interval: float = 0.1) -> None:
        import ipywidgets as w

        self._pools = pools
        self._subs: dict[int, Callable[[], None]] = {}
        self._throttle = Throttle(self._refresh, interval)
        # the flame loop's refreshes and the kernel's threads (creation, control clicks) both
        # set the controls: one at a time
        self._sync = threading.RLock()
        self.closed = False
        self.html = w.HTML(self._render(self._statuses()))
        self.pool_pick = w.Dropdown(description="pool", layout=w.Layout(width="220px"))
        self.min = w.BoundedIntText(description="min", min=0, max=10_000,
                                    layout=w.Layout(width="130px"))
        self.max = w.BoundedIntText(description="max", min=1, max=10_000,
                                    layout=w.Layout(width="130px"))
        self.resize = w.Button(description="Resize", icon="arrows-v")
        self.runner_pick = w.Dropdown(description="runner", layout=w.Layout(width="300px"))
        self.terminate = w.Button(description="Terminate runner", icon="times",
                                  button_style="warning")
        self.shutdown = w.Button(description="Shut down pool", icon="power-off",
                                 button_style="danger")
        self.note = w.HTML("")
        for button, act in ((self.resize, self._resize), (self.terminate, self._terminate),
                            (self.shutdown, self._shutdown)):
            button.on_click(lambda _b, act=act: self._act(act))
            route_to_cancel_lane(button)
        for control in (self.min, self.max, self.pool_pick, self.runner_pick):
            route_to_cancel_lane(control)  # in order with the clicks, on the same thread
        self.pool_pick.observe(self._picked, names="value")
        self.widget = w.VBox([self.html, w.HBox([self.pool_pick, self.min, self.max,
                                                 self.resize]),
                              w.HBox([self.runner_pick, self.terminate, self.shutdown]),
                              self.note])
        self.widget.add_class("flame-dashboard-view")
        self._sync_controls(self._statuses())
        self._subscribe()
        if pools is None:  # a new %flame status replaces the previous one's listeners
            old, _every_pool[:] = list(_every_pool), [self]
            for dash in old:
                dash.stop()

    # -- data --------------------------------------------------------------------------------
    def pools(self) -> list[Pool]:
        return list(self._pools) if self._pools is not None else all_pools()

    def _statuses(self) -> list[PoolStatus]:
        out = []
        for p in self.pools():
            try:
                out.append(p.status())
            except Exception:  # a pool shut down meanwhile
                log.debug("no status of pool %s", p.name, exc_info=True)
        return out

    def _render(self, sts: list[PoolStatus]) -> str:
        empty = '<div class="flame-dashboard">jupyter-flame: no pools</div>'
        return render_html(sts) if sts else empty

    def _subscribe(self) -> None:
        for p in self.pools():
            backend = p.backend
            if id(backend) not in self._subs and not p.closed:
                self._subs[id(backend)] = backend.subscribe(lambda _ev: self._throttle.poke())

    # -- refresh (flame loop) ----------------------------------------------------------------
    def _refresh(self) -> None:
        if self.closed:
            return
        try:
            self._subscribe()  # pools made since
            sts = self._statuses()
            self.html.value = self._render(sts)
            self._sync_controls(sts)
            if self._pools is not None and all(st["closed"] for st in sts):
                self.stop()
            elif any(st["runners"] for st in sts):
                self._throttle.every(1.0)  # ages and idle time left tick
        except Exception:
            log.exception("refreshing the pool dashboard failed")

    def _sync_controls(self, sts: list[PoolStatus]) -> None:
        with self._sync:
            names = [st["name"] for st in sts if not st["closed"]]
            _choices(self.pool_pick, names)
            st = next((s for s in sts if s["name"] == self.pool_pick.value), None)
            _choices(self.runner_pick,
                     [r["id"] for r in st["runners"] if r["state"] == "live"] if st else [])

    def _picked(self, change: dict[str, Any]) -> None:
        pool = self._pool(change["new"])
        if pool is not None:
            self.min.value, self.max.value = pool.options.min, pool.options.max
        self._throttle.poke()

    # -- controls ----------------------------------------------------------------------------
    def _pool(self, name: str | None) -> Pool | None:
        return next((p for p in self.pools() if str(p.name) == name), None)

    def _act(self, act: Callable[[Pool], str]) -> None:
        pool = self._pool(self.pool_pick.value)
        if pool is None:
            self.note.value = "<span style='color:#c62828'>Pick a pool first.</span>"
            return
        try:
            self.note.value = act(pool)
        except Exception as exc:  # shown where the user clicked, not lost in a log
            self.note.value = f"<span style='color:#c62828'>{type(exc).__name__}: {exc}</span>"
        self._throttle.poke()

    def _resize(self, pool: Pool) -> str:
        pool.resize(min=int(self.min.value), max=int(self.max.value))
        return f"Pool {pool.name!r} resized to min={pool.options.min} max={pool.options.max}."

    def _terminate(self, pool: Pool) -> str:
        runner = self.runner_pick.value
        if not runner:
            return "No live runner to terminate."
        pool.terminate_runner(runner)
        return f"Runner {runner} terminated."

    def _shutdown(self, pool: Pool) -> str:
        pool.shutdown()
        return f"Pool {pool.name!r} shut down."

    def stop(self) -> None:
        """Stop listening (the pools it shows are shut down, or the dashboard is closed)."""
        self._throttle.stop()
        for unsubscribe in self._subs.values():
            unsubscribe()
        self._subs.clear()

    def close(self) -> None:
        self.closed = True
        self.stop()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        sts = self._statuses()
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = render_text(sts) if sts else "jupyter-flame: no pools"
        bundle["text/html"] = self._render(sts)
        return bundle


def _choices(dropdown: Any, options: list[str]) -> None:
    """Set a dropdown's options, keeping its choice where it is still there."""
    if list(dropdown.options) != options:
        keep = dropdown.value
        dropdown.options = options
        dropdown.value = keep if keep in options else (options[0] if options else None)
    elif dropdown.value is None and options:
        dropdown.value = options[0]


def pool_bundle(pool: Pool) -> dict[str, Any] | None:
    """What displaying ``pool`` shows where widgets render: a live dashboard of it."""
    if not widgets_enabled() or pool.closed:
        return None
    return PoolDashboard([pool])._repr_mimebundle_()
