"""What one write request carries beyond its body, for the code that stores objects.

The HTTP handler opens :func:`request` around a create, update, patch or
delete; the registry and the decoder read :func:`current` for the
``fieldValidation`` directive, the field manager (``fieldManager``, else the
User-Agent's product name, as a real API server derives it) and ``force``, and
append the ``Warning`` headers the response must carry.  Writes made by the
server itself (garbage collection, controllers) run outside any request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .status import bad_request

DIRECTIVES = ("Ignore", "Warn", "Strict")


@dataclass
class WriteRequest:
    """One request's ``fieldValidation`` directive, field manager, ``force``, and its warnings."""

    directive: str = "Warn"
    manager: str = "unknown"
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    #: The applied configuration, while serving a server-side apply.
    applied: dict[str, Any] | None = None


_CURRENT: ContextVar[WriteRequest | None] = ContextVar("write_request", default=None)


def manager_for(field_manager: str | None, user_agent: str | None) -> str:
    """``fieldManager`` if given, else the User-Agent up to its first ``/`` (``kubectl``...)."""
    if field_manager:
        return field_manager
    agent = (user_agent or "").split("/", 1)[0].strip()
    return agent or "unknown"


@contextlib.contextmanager
def request(directive: str | None, manager: str = "unknown", force: bool = False) -> Iterator[WriteRequest]:
    """Make the writes inside this block belong to one request (``directive`` ``None``: Warn)."""
    if directive not in (None, "", *DIRECTIVES):
        raise bad_request(f"fieldValidation must be one of {', '.join(DIRECTIVES)}, got {directive!r}")
    if len(manager) > 128:
        raise bad_request("fieldManager must be at most 128 characters long")
    current = WriteRequest(directive or "Warn", manager, force)
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def current() -> WriteRequest | None:
    """The write request being served (``None`` for the server's own writes)."""
    return _CURRENT.get()
