"""Pools: checkout, FIFO queueing, growth and idle shutdown of runners (FLAME's ``Pool``).

``pool`` (the :class:`Pool` executor facade, a traitlets Configurable), ``registry`` (named
pools of this kernel, the default backend, the exit hook), ``limits`` (validating limits, pure),
``core`` (checkout, FIFO queue, dispatch: the async core on the flame loop) built from
``state`` (options, runner slots, lifecycle hooks), ``booting`` (growth and boot timeouts) and
``retirement`` (idle shutdown, single use, lost runners), ``scaling`` (pure policy), ``link``
(the kernel's end of one runner), ``_direct`` (calls without a cell), ``loop`` (the flame loop
thread), ``status`` (plain-data snapshots shared by the text dashboard, the widgets and the
server's JSON).
"""

from __future__ import annotations

from jupyter_flame._lazy import lazy_exports

__all__ = ["Pool", "get_pool", "all_pools", "shutdown_all"]

__getattr__, __dir__ = lazy_exports(__name__, {n: "pool" for n in __all__}, globals())
