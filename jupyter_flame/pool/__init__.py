"""Pools: checkout, FIFO queueing, growth and idle shutdown of runners (FLAME's ``Pool``).

``pool`` (the :class:`Pool` executor facade and the registry), ``core`` (the async core on the
flame loop), ``scaling`` (pure policy), ``link`` (the kernel's end of one runner), ``loop`` (the
flame loop thread), ``status`` (plain-data snapshots shared by the text dashboard, the widgets
and the server's JSON).
"""

from __future__ import annotations

from jupyter_flame._lazy import lazy_exports

__all__ = ["Pool", "get_pool", "all_pools", "shutdown_all"]

__getattr__, __dir__ = lazy_exports(__name__, {n: "pool" for n in __all__}, globals())
