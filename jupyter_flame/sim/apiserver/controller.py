"""What the in-process controllers share: ownership, events, status writes, pod readiness.

A controller reads the store and writes only through the registry and the deleter,
so its writes are ordinary watch events and its deletions keep their grace periods.
"""

from __future__ import annotations

import calendar
import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from .._time import rfc3339
from .deletion import Deleter
from .registry import Registry
from .resources import Resource, lookup
from .workload_spec import selector_matches

__all__ = ["DEPLOYS", "PODS", "RSETS", "Controller", "active", "controller_uid", "epoch", "ready_since",
           "replicas_of", "stat"]

Json = dict[str, Any]


def _res(group: str, plural: str) -> Resource:
    r = lookup(group, "v1", plural)
    assert r is not None
    return r


PODS, EVENTS = _res("", "pods"), _res("", "events")
RSETS, DEPLOYS = _res("apps", "replicasets"), _res("apps", "deployments")


def controller_uid(obj: Json) -> str | None:
    """The uid of the object's controlling owner (``controller: true``), if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: Json) -> Json:
    """A controlling ``ownerReference`` to ``owner`` (as controllers set them)."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def active(pod: Json) -> bool:
    """``controller.IsPodActive``: not terminating and not finished."""
    phase = (pod.get("status") or {}).get("phase")
    return not pod["metadata"].get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def epoch(stamp: str | None, default: float | None = None) -> float:
    """Epoch seconds of an RFC 3339 stamp (``default``, else now, when there is none)."""
    if not stamp:
        return time.time() if default is None else default
    return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))


def ready_since(pod: Json) -> float | None:
    """When the pod became Ready (epoch seconds), ``None`` when it is not Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return epoch(cond.get("lastTransitionTime"), 0.0)
    return None


def replicas_of(obj: Json) -> int:
    """``spec.replicas``."""
    return int((obj.get("spec") or {}).get("replicas") or 0)


def stat(obj: Json, key: str) -> int:
    """An integer ``status`` field (0 when absent)."""
    return int((obj.get("status") or {}).get(key) or 0)


class Controller:
    """Base of the ReplicaSet and Deployment controllers.

    Parameters
    ----------
    registry
        Where objects are read and written.
    deleter
        Deletes objects with their grace periods.
    requeue
        ``requeue(seconds)`` asks for another pass later (timeouts, back-off).
    """

    component = ""

    def __init__(self, registry: Registry, deleter: Deleter, requeue: Callable[[float], None]) -> None:
        self.registry = registry
        self.deleter = deleter
        self.store = registry.store
        self.requeue = requeue
        self._events: dict[tuple[str, str, str], str] = {}

    def record(self, obj: Json, kind: str, reason: str, message: str) -> None:
        """Record an Event about ``obj`` (a repeat bumps ``count``, as the event recorder does)."""
        component = self.component
        meta, ns, now = obj["metadata"], obj["metadata"]["namespace"], rfc3339()
        key = (meta["uid"], reason, message)
        name = self._events.get(key)
        old = self.store.get(EVENTS.key, ns, name) if name else None
        if old is not None:
            new = copy.deepcopy(old)
            new["count"] = int(old.get("count") or 1) + 1
            new["lastTimestamp"] = now
            self.registry.update(EVENTS, ns, old["metadata"]["name"], new, check_rv=False)
            return
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        self._events[key] = name
        self.registry.create(EVENTS, ns, {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": obj["kind"], "namespace": ns, "name": meta["name"], "uid": meta["uid"],
                               "apiVersion": obj["apiVersion"], "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
            "firstTimestamp": now, "lastTimestamp": now, "eventTime": None,
        })

    def claim(self, owner: Json, res: Resource, candidates: list[Json]) -> list[Json]:
        """Objects ``owner`` controls, after adopting orphans its selector matches."""
        uid, selector = owner["metadata"]["uid"], (owner.get("spec") or {}).get("selector")
        owned = []
        for obj in candidates:
            controller = controller_uid(obj)
            if controller == uid:
                owned.append(obj)
            elif (controller is None and not obj["metadata"].get("deletionTimestamp")
                  and not owner["metadata"].get("deletionTimestamp")
                  and selector_matches(selector, obj["metadata"].get("labels"))):
                new = copy.deepcopy(obj)
                new["metadata"].setdefault("ownerReferences", []).append(owner_ref(owner))
                owned.append(self.registry.update(res, obj["metadata"]["namespace"], obj["metadata"]["name"],
                                                  new, check_rv=False))
        return owned

    def write_status(self, res: Resource, obj: Json, status: Json) -> Json:
        """Write ``status`` through the status subresource unless it is unchanged."""
        if status == obj.get("status"):
            return obj
        new = copy.deepcopy(obj)
        new["status"] = status
        meta = obj["metadata"]
        return self.registry.update(res, meta["namespace"], meta["name"], new, "status", check_rv=False)
