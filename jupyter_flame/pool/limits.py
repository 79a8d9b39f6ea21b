"""The checks a pool's options must pass together (each alone is checked by its trait)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyter_flame.config import KEYWORD
from jupyter_flame.errors import ConfigError
from jupyter_flame.pool.core import PoolOptions

__all__ = ["validate_options"]


def _check(name: str, value: Any, ok: bool, fix: str, source: Callable[[str], str]) -> None:
    if not ok:
        where = source(name)
        origin = "" if where == KEYWORD else f" (from {where})"
        raise ConfigError(f"Pool option {name}={value!r}{origin} is invalid: {fix}")


def validate_options(options: PoolOptions,
                     source: Callable[[str], str] = lambda name: KEYWORD) -> None:
    """Check the options together (each alone was checked by its trait)."""
    o = options

    def check(name: str, ok: bool, fix: str) -> None:
        _check(name, getattr(o, name), ok, fix, source)

    check("min", o.min >= 0, "use an integer >= 0.")
    check("max", o.max >= 1, "use an integer >= 1.")
    check("min", o.min <= o.max, f"min must not exceed max ({o.max}).")
    check("max_concurrency", o.max_concurrency >= 1, "use an integer >= 1.")
    check("idle_shutdown_after", o.idle_shutdown_after is None or o.idle_shutdown_after > 0,
          "use seconds > 0, or None to never idle down.")
    check("boot_timeout", o.boot_timeout > 0, "use seconds > 0.")
    check("timeout", o.timeout is None or o.timeout > 0, "use seconds > 0, or None for no limit.")
    check("heartbeat_interval", o.heartbeat_interval > 0, "use seconds > 0.")
    check("parent_timeout", o.parent_timeout > o.heartbeat_interval,
          "it must exceed heartbeat_interval.")
    check("heartbeat_timeout",
          o.heartbeat_timeout is None or o.heartbeat_timeout > 2 * o.heartbeat_interval,
          "it must exceed twice heartbeat_interval, or be None to never give up.")
    check("interrupt_grace", o.interrupt_grace >= 0, "use seconds >= 0.")
    check("max_frame", o.max_frame >= 1024 * 1024, "use bytes >= 1 MiB (1048576).")
