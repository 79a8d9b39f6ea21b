"""The values a runner keeps across tasks (:class:`ValueCache`), so that a warm runner is not
sent again what it already holds unchanged (the parent refers to them by content digest)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jupyter_flame.runner.env import DEFAULT_CACHE_BYTES

__all__ = ["Entry", "ValueCache"]


@dataclass
class Entry:
    """A value the runner holds: ``digest`` is the parent's name for it; ``base`` is the digest
    of re-packing it here, the reference for "changed in place" (pickling is not always
    byte-stable across a round trip, e.g. for functions with globals)."""

    digest: str
    obj: Any
    nbytes: int
    base: str


class ValueCache:
    """``{name: (digest, object)}`` kept across tasks, least recently used evicted by bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, wanted: dict[str, str]) -> tuple[dict[str, Entry], list[str]]:
        """The entries for ``{name: digest}``, and the names missing or held at another digest."""
        found: dict[str, Entry] = {}
        missing: list[str] = []
        with self._lock:
            for name, want in wanted.items():
                entry = self._entries.get(name)
                if entry is None or entry.digest != want:
                    missing.append(name)
                else:
                    self._entries.move_to_end(name)
                    found[name] = entry
        return found, missing

    def put(self, name: str, entry: Entry) -> None:
        """Hold ``entry`` as ``name``; other names bound to the same object are stale now."""
        with self._lock:
            self._drop_locked(name)
            for other in [n for n, e in self._entries.items() if e.obj is entry.obj]:
                if self._entries[other].base != entry.base:
                    self._drop_locked(other)
            if entry.nbytes > self.max_bytes or not entry.digest:
                return
            self._entries[name] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes

    def drop(self, name: str, obj: Any = None) -> None:
        """Forget ``name`` (only if it still holds ``obj``, when given)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and (obj is None or entry.obj is obj):
                self._drop_locked(name)

    def _drop_locked(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def view(self) -> dict[str, str]:
        with self._lock:
            return {name: e.digest for name, e in self._entries.items()}

    @property
    def nbytes(self) -> int:
        return self._bytes
