"""Deletion: grace periods, finalizers, propagation, namespaces, garbage.

* A pod bound to a node and not terminal is deleted *gracefully*: the server
  only sets ``metadata.deletionTimestamp`` and ``deletionGracePeriodSeconds``;
  the kubelet finishes with ``gracePeriodSeconds=0``.
* Objects with finalizers only get a ``deletionTimestamp``; they go when the
  last finalizer is removed.
* ``propagationPolicy``: ``Background`` (default) lets the collector delete
  dependents after the owner is gone, ``Foreground`` deletes dependents
  first, ``Orphan`` strips the ownerReferences of dependents.
* Deleting a namespace marks it ``Terminating``, deletes its content and
  removes it once empty.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .._time import rfc3339
from . import gc
from .registry import Registry
from .resources import RESOURCES, Resource
from .selectors import Selector
from .status import bad_request, conflict, not_found
from .store import Change

_NS = ("", "namespaces")


def _later(seconds: int) -> str:
    return rfc3339(time.time() + seconds)


_BY_KEY = {r.key: r for r in RESOURCES}
# What the collector reads of an object (besides uid and namespace, which never change).
_GC_FIELDS = ("ownerReferences", "deletionTimestamp", "finalizers")


def _resource(key: tuple[str, str]) -> Resource:
    return _BY_KEY[key]


class Deleter:
    """Delete semantics over a :class:`Registry` (and its garbage collector)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store = registry.store
        self._dirty = True
        self.store.listeners.append(self._on_change)

    def _on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if change.type == "MODIFIED" and change.old is not None:
            # Only a change to what the collector reads can make (or unmake) garbage.
            old = change.old["metadata"]
            if any(meta.get(k) != old.get(k) for k in _GC_FIELDS):
                self._dirty = True
        elif change.type == "DELETED" or meta.get("ownerReferences") or meta.get("deletionTimestamp"):
            self._dirty = True

    # -- one object ------------------------------------------------------------
    def delete(self, res: Resource, namespace: str, name: str, opts: dict[str, Any],
               reconcile: bool = True) -> dict[str, Any]:
        """DELETE one object; returns the object (still present or as deleted)."""
        obj = self.store.get(res.key, namespace, name)
        if obj is None:
            raise not_found(res.plural, name, res.group)
        pre = opts.get("preconditions") or {}
        meta = obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(res.plural, name, res.group,
                           f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise conflict(res.plural, name, res.group,
                           f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                           f"ResourceVersion in object meta: {meta.get('resourceVersion')}")
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is not None:
            policy = "Orphan" if opts["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy {policy!r} is not supported")
        if policy == "Orphan":
            self._orphan(meta.get("uid", ""))
        grace = opts.get("gracePeriodSeconds")
        out = self._delete(res, obj, grace, foreground=policy == "Foreground")
        if reconcile:
            self.reconcile()
        return out

    def _delete(self, res: Resource, obj: dict[str, Any], grace: int | None, foreground: bool = False) -> dict[str, Any]:
        meta = obj["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        if res.plural == "namespaces":
            return self._delete_namespace(obj)
        finalizers = list(meta.get("finalizers") or [])
        if foreground and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if res.plural == "pods":
            spec, phase = obj.get("spec") or {}, (obj.get("status") or {}).get("phase")
            if grace is None:
                grace = int(spec.get("terminationGracePeriodSeconds", 30) or 0)
            if grace < 0:
                grace = 1
            if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
            current = meta.get("deletionGracePeriodSeconds")
            if current is not None and grace >= current and grace != 0:
                return copy.deepcopy(obj)
            if grace > 0 or finalizers:
                return self._mark(res, obj, grace, finalizers)
            return self.store.remove(res.key, ns, name)
        if finalizers:
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(obj)
            return self._mark(res, obj, 0, finalizers)
        return self.store.remove(res.key, ns, name)

    def _mark(self, res: Resource, obj: dict[str, Any], grace: int, finalizers: list[str]) -> dict[str, Any]:
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        meta["deletionTimestamp"] = _later(grace) if grace else rfc3339()
        meta["deletionGracePeriodSeconds"] = grace
        if finalizers:
            meta["finalizers"] = finalizers
        if new == obj:
            return copy.deepcopy(obj)
        self.store.replace(res.key, new)
        return copy.deepcopy(new)

    def _orphan(self, uid: str) -> None:
        for key, obj in self.store.all_items():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    del new["metadata"]["ownerReferences"]
                self.store.replace(key, new)

    def _delete_namespace(self, ns: dict[str, Any]) -> dict[str, Any]:
        if not ns["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(ns)
            new["metadata"]["deletionTimestamp"] = rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["status"] = {"phase": "Terminating"}
            self.store.replace(_NS, new)
            ns = new
        return copy.deepcopy(ns)

    def sweep_namespaces(self) -> None:
        """The namespace controller: empty terminating namespaces, then remove them.

        Runs periodically (not inline with the DELETE), as on a real cluster.
        """
        for ns in self.store.list(_NS):
            name = ns["metadata"]["name"]
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            for res in RESOURCES:
                if res.stored and res.namespaced:
                    for obj in list(self.store.list(res.key, name)):
                        if not obj["metadata"].get("deletionTimestamp"):
                            self._delete(res, obj, None)
            if not self._has_content(name):
                self.store.remove(_NS, "", name)
        self.reconcile()

    # -- collections -----------------------------------------------------------
    def delete_collection(self, res: Resource, namespace: str | None, selector: Selector,
                          opts: dict[str, Any], reconcile: bool = True) -> dict[str, Any]:
        """DELETE on a collection: delete every matching object; returns the list."""
        items = []
        for obj in list(self.store.list(res.key, namespace)):
            if selector.matches(obj):
                items.append(self._delete(res, obj, opts.get("gracePeriodSeconds")))
        if reconcile:
            self.reconcile()
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": items}

    # -- background work -------------------------------------------------------
    def reconcile(self) -> None:
        """Collect garbage and finish terminating namespaces, until nothing changes."""
        for _ in range(100):
            if not self._dirty:
                return
            self._dirty = False
            items = self.store.all_items()
            for key, obj in gc.garbage(items):
                if self.store.get(key, obj["metadata"].get("namespace") or "", obj["metadata"]["name"]) is obj:
                    self._delete(_resource(key), obj, None)
            to_delete, done = gc.foreground_dependents(self.store.all_items())
            for key, obj in to_delete:
                self._delete(_resource(key), obj, None, foreground=True)
            for key, obj in done:
                new = copy.deepcopy(obj)
                new["metadata"]["finalizers"] = [
                    f for f in new["metadata"]["finalizers"] if f != "foregroundDeletion"]
                self.registry.update(_resource(key), obj["metadata"].get("namespace") or "",
                                     obj["metadata"]["name"], new, check_rv=False)

    def _has_content(self, namespace: str) -> bool:
        return any(
            self.store.list(r.key, namespace) for r in RESOURCES if r.stored and r.namespaced
        )


__all__ = ["Deleter"]
