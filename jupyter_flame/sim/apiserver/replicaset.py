"""The ReplicaSet controller (kube-controller-manager's, for the common path).

Keeps ``spec.replicas`` active pods (not terminating, not finished) that it controls:
creates ``<rs>-<5 random chars>`` from the template (the template's labels and
annotations, a controlling ``ownerReference``), deletes extra ones (unscheduled,
pending and not-ready first, then the newest), adopts orphans its selector matches,
and keeps ``status``: ``replicas``, ``fullyLabeledReplicas``, ``readyReplicas``,
``availableReplicas`` (Ready for ``minReadySeconds``), ``observedGeneration`` and a
``ReplicaFailure`` condition while the server refuses its pods. Events:
``SuccessfulCreate``, ``SuccessfulDelete``, ``FailedCreate`` (retried every 2 s).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .._time import rfc3339
from .controller import PODS, RSETS, Controller, active, owner_ref, ready_since, replicas_of
from .status import ApiError

__all__ = ["ReplicaSetController"]

Json = dict[str, Any]


def deletion_order(pods: list[Json]) -> list[Json]:
    """``controller.ActivePods`` order: the pods to delete first come first."""
    rank = {"Pending": 0, "Unknown": 1, "Running": 2}
    newest = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    return sorted(newest, key=lambda p: (bool((p.get("spec") or {}).get("nodeName")),
                                         rank.get((p.get("status") or {}).get("phase", ""), 0),
                                         ready_since(p) is not None))


class ReplicaSetController(Controller):
    """Pods for ReplicaSets (see the module docstring)."""

    component = "replicaset-controller"

    def sync(self, rs: Json) -> None:
        """Bring one ReplicaSet's pods to ``spec.replicas`` and write its status."""
        meta, ns = rs["metadata"], rs["metadata"]["namespace"]
        pods = self.claim(rs, PODS, self.store.list(PODS.key, ns))
        live = [p for p in pods if active(p)]
        failure: Json | None = None
        if not meta.get("deletionTimestamp"):
            diff = len(live) - replicas_of(rs)
            if diff < 0:
                failure = self._create_pods(rs, -diff, live)
            elif diff > 0:
                for pod in deletion_order(live)[:diff]:
                    self.deleter.delete(PODS, ns, pod["metadata"]["name"], {}, reconcile=False)
                    live.remove(pod)
                    self.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        now, ready, available, wait = time.time(), 0, 0, None
        for pod in live:
            since = ready_since(pod)
            if since is None:
                continue
            ready += 1
            if now - since >= min_ready:
                available += 1
            else:
                wait = min(wait or min_ready, min_ready - (now - since))
        if wait is not None:
            self.requeue(wait + 0.5)
        labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        full = sum(1 for p in live if labels.items() <= (p["metadata"].get("labels") or {}).items())
        status: Json = {"replicas": len(live)}
        for key, value in (("fullyLabeledReplicas", full), ("readyReplicas", ready),
                           ("availableReplicas", available)):
            if value:
                status[key] = value
        status["observedGeneration"] = meta.get("generation", 1)
        conditions = [c for c in (rs.get("status") or {}).get("conditions") or []
                      if c.get("type") != "ReplicaFailure"]
        if failure is not None:
            old = next((c for c in (rs.get("status") or {}).get("conditions") or []
                        if c.get("type") == "ReplicaFailure"), None)
            conditions.append(old if old and old.get("message") == failure["message"] else failure)
        if conditions:
            status["conditions"] = conditions
        self.write_status(RSETS, self.store.get(RSETS.key, ns, meta["name"]) or rs, status)

    def _create_pods(self, rs: Json, count: int, live: list[Json]) -> Json | None:
        """Create ``count`` pods; the ``ReplicaFailure`` condition when the server refuses one."""
        meta, template = rs["metadata"], (rs.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        for _ in range(count):
            pod: Json = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                             "labels": dict(tmeta.get("labels") or {}), "ownerReferences": [owner_ref(rs)]},
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            if tmeta.get("annotations"):
                pod["metadata"]["annotations"] = dict(tmeta["annotations"])
            try:
                created = self.registry.create(PODS, meta["namespace"], pod)
            except ApiError as err:
                message = f"Error creating: {err.status.get('message')}"
                self.record(rs, "Warning", "FailedCreate", message)
                self.requeue(2.0)  # the real controller retries with a back-off too
                return {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                        "message": err.status.get("message"), "lastTransitionTime": rfc3339()}
            live.append(created)
            self.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return None
