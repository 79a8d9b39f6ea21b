"""Timestamps as Kubernetes writes them (shared by the node agent and the API server)."""

from __future__ import annotations

import datetime as _dt
import time

__all__ = ["rfc3339"]


def rfc3339(timestamp: float | None = None) -> str:
    """A POSIX time (default: now) in RFC 3339, seconds, UTC: ``2024-01-02T03:04:05Z``."""
    when = time.time() if timestamp is None else timestamp
    return _dt.datetime.fromtimestamp(when, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
