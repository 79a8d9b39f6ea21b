"""In-memory object storage with a global ``resourceVersion`` and watch history.

Every write bumps one cluster-wide counter (as etcd's revision does) and is
recorded in a bounded history; watchers replay history after the
``resourceVersion`` they ask for, then receive live events.  A version older
than the retained history gives ``410 Gone`` (reason ``Expired``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .status import gone

ResKey = tuple[str, str]  # (group, plural)
ChangeList = list["Change"]
ItemList = list[tuple[ResKey, dict[str, Any]]]
ObjList = list[dict[str, Any]]
ObjKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Change:
    """One stored write, as a watch event source.

    ``old`` is the object before a ``MODIFIED`` write (to tell watchers with a
    selector that an object left or entered their view).
    """

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    res: ResKey
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watcher:
    """A subscription to the changes of one resource (optionally one namespace)."""

    def __init__(self, store: Store, res: ResKey, namespace: str | None) -> None:
        self.store = store
        self.res = res
        self.namespace = namespace
        self.queue: asyncio.Queue[Change] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        """Queue ``change`` if it is about our resource and namespace."""
        if change.res != self.res:
            return
        if self.namespace and change.obj["metadata"].get("namespace") != self.namespace:
            return
        self.queue.put_nowait(change)

    def close(self) -> None:
        """Stop receiving changes."""
        self.store.watchers.discard(self)


def _ns_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace") or "")


class Store:
    """Objects by resource, plus the change history watchers replay.

    Parameters
    ----------
    history_size
        How many changes are kept for watches from a past ``resourceVersion``.
    """

    def __init__(self, history_size: int = 1000) -> None:
        self.objects: dict[ResKey, dict[ObjKey, dict[str, Any]]] = {}
        self.rv = 1
        self.history: deque[Change] = deque(maxlen=history_size)
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Change], None]] = []
        self.dry = False

    @contextlib.contextmanager
    def dry_run(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, writes are computed but not stored (``dryRun=All``)."""
        before, self.dry = self.dry, enabled or self.dry
        try:
            yield
        finally:
            self.dry = before

    # -- reads ---------------------------------------------------------------
    def get(self, res: ResKey, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object (do not mutate it; copy first)."""
        return self.objects.get(res, {}).get((namespace, name))

    def list(self, res: ResKey, namespace: str | None = None) -> ObjList:
        """Stored objects of ``res`` (in ``namespace`` if given), sorted by namespace/name."""
        items = self.objects.get(res, {})
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [items[k] for k in keys]

    def all_items(self) -> ItemList:
        """Every stored object with its resource key."""
        return [(res, obj) for res, items in self.objects.items() for obj in items.values()]

    # -- writes --------------------------------------------------------------
    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, change: Change) -> None:
        self.history.append(change)
        for w in list(self.watchers):
            w.offer(change)
        for listener in list(self.listeners):
            listener(change)

    def add(self, res: ResKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object; sets ``metadata.resourceVersion``; emits ADDED."""
        if self.dry:
            return obj
        rv = self._bump()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.objects.setdefault(res, {})[(_ns_of(obj), obj["metadata"]["name"])] = obj
        self._emit(Change(rv, "ADDED", res, copy.deepcopy(obj), None))
        return obj

    def replace(self, res: ResKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Overwrite an existing object; bumps its version; emits MODIFIED."""
        if self.dry:
            return obj
        key = (_ns_of(obj), obj["metadata"]["name"])
        old = self.objects[res][key]
        rv = self._bump()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.objects[res][key] = obj
        self._emit(Change(rv, "MODIFIED", res, copy.deepcopy(obj), old))
        return obj

    def remove(self, res: ResKey, namespace: str, name: str) -> dict[str, Any]:
        """Drop an object; emits DELETED with a fresh ``resourceVersion``."""
        if self.dry:
            return copy.deepcopy(self.objects[res][(namespace, name)])
        obj = self.objects[res].pop((namespace, name))
        rv = self._bump()
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(rv)
        self._emit(Change(rv, "DELETED", res, copy.deepcopy(obj), None))
        return obj

    # -- watch ---------------------------------------------------------------
    def oldest_rv(self) -> int:
        """The oldest ``resourceVersion`` a watch may start from."""
        if len(self.history) < (self.history.maxlen or 0):
            return 0
        return self.history[0].rv - 1

    def subscribe(self, res: ResKey, namespace: str | None, since: int | None) -> tuple[Watcher, ChangeList]:
        """Start watching ``res`` and return the backlog after ``since``.

        ``since=None`` means "from now" (no backlog).  Raises 410 ``ApiError``
        when ``since`` is older than the retained history.
        """
        backlog: ChangeList = []
        if since is not None:
            if since < self.oldest_rv():
                raise gone(f"too old resource version: {since} ({self.oldest_rv() + 1})")
            watcher_probe = Watcher(self, res, namespace)
            for change in self.history:
                if change.rv > since:
                    watcher_probe.offer(change)
            while not watcher_probe.queue.empty():
                backlog.append(watcher_probe.queue.get_nowait())
        watcher = Watcher(self, res, namespace)
        self.watchers.add(watcher)
        return watcher, backlog
