"""The keyword options of :class:`~jupyter_flame.pool.pool.Pool`, for type checkers."""

from __future__ import annotations

from typing import Any, TypedDict

from traitlets.config import Config

from jupyter_flame.backends.base import RunnerSpec

__all__ = ["PoolKeywords"]


class PoolKeywords(TypedDict, total=False):
    """The keyword options of :class:`Pool` (each a trait; see there)."""

    min: int
    max: int
    max_concurrency: int
    idle_shutdown_after: float | None
    boot_timeout: float
    timeout: float | None
    single_use: bool
    spec: RunnerSpec | None
    heartbeat_interval: float
    heartbeat_timeout: float | None
    parent_timeout: float
    interrupt_grace: float
    encrypt: bool | None
    max_frame: int
    config: Config
    #: option -> (value, source) used when neither a keyword nor the config sets it
    _fallbacks: dict[str, tuple[Any, str]]
