"""The Deployment controller (kube-controller-manager's, for the common path).

A Deployment owns one ReplicaSet per pod template, named ``<deployment>-<pod-template-hash>``,
with the ``pod-template-hash`` label added to its selector, template and labels and the
```deployment.kubernetes.io/revision``` annotation (a template that comes back, as after
``kubectl rollout undo``, makes its old ReplicaSet the newest revision again).

``RollingUpdate`` follows the real arithmetic: ``maxSurge`` rounded up and
``maxUnavailable`` rounded down (1 when both are 0), the new ReplicaSet scaled up within
``replicas + maxSurge``, old ones scaled down first by their unavailable pods, then as
far as ``replicas - maxUnavailable`` available pods allow. ``Recreate`` scales every old
ReplicaSet to 0 and scales the new one up once their pods are gone. Old ReplicaSets beyond
``revisionHistoryLimit`` are deleted; a scaling without a template change only resizes the
current ReplicaSet. ``spec.paused`` freezes the rollout (status still kept).

``status``: ``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas``,
``unavailableReplicas``, ``observedGeneration``, ``collisionCount`` and the ``Available``
and ``Progressing`` conditions with the real reasons (``NewReplicaSetCreated``,
``ReplicaSetUpdated``, ``NewReplicaSetAvailable``, ``ProgressDeadlineExceeded`` after
``progressDeadlineSeconds`` without progress): what ``kubectl rollout status`` and
``kubectl get deploy`` read. Events: ``ScalingReplicaSet``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

from .._time import rfc3339
from .controller import (
    DEPLOYS,
    PODS,
    RSETS,
    Controller,
    controller_uid,
    epoch,
    owner_ref,
    replicas_of,
    stat,
)
from .resources import Resource
from .workload_spec import HASH_LABEL, pod_template_hash, template_without_hash

__all__ = ["REVISION", "DeploymentController"]

Json = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"


def revision_of(rs: Json) -> int:
    """The ``deployment.kubernetes.io/revision`` of a ReplicaSet (0 when unset)."""
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _resolve(value: Any, total: int, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``."""
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def _surge_unavailable(d: Json) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` in pods (``(0, 0)`` for Recreate)."""
    spec = d.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type") != "RollingUpdate":
        return 0, 0
    rolling, replicas = strategy.get("rollingUpdate") or {}, replicas_of(d)
    surge = _resolve(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


class DeploymentController(Controller):
    """ReplicaSets for Deployments (see the module docstring)."""

    component = "deployment-controller"

    def sync(self, d: Json) -> None:
        """Roll one Deployment towards its template and write its status."""
        meta, spec, ns = d["metadata"], d.get("spec") or {}, d["metadata"]["namespace"]
        if meta.get("deletionTimestamp"):
            return
        owned = self.claim(d, RSETS, self.store.list(RSETS.key, ns))
        template = spec.get("template") or {}
        same = [rs for rs in owned if template_without_hash(rs["spec"].get("template") or {})
                == template_without_hash(template)]
        new_rs = min(same, key=lambda rs: rs["metadata"].get("creationTimestamp") or "") if same else None
        olds = sorted((rs for rs in owned if rs is not new_rs),
                      key=lambda rs: rs["metadata"].get("creationTimestamp") or "")
        created = False
        if spec.get("paused"):
            self._sync_deployment_status(d, new_rs, olds, created)
            return
        max_old = max((revision_of(rs) for rs in olds), default=0)
        if new_rs is None:
            new_rs = self._create_rs(d, max_old + 1)
            if new_rs is None:
                return
            created = True
        elif revision_of(new_rs) <= max_old:
            new_rs = self._annotate(RSETS, new_rs, {REVISION: str(max_old + 1)})
        d = self._annotate(DEPLOYS, d, {REVISION: (new_rs["metadata"].get("annotations") or {})[REVISION]})
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            new_rs, olds = self._recreate(d, new_rs, olds)
        else:
            new_rs, olds = self._roll(d, new_rs, olds)
        olds = self._cleanup(d, olds)
        self._sync_deployment_status(d, new_rs, olds, created)

    def _create_rs(self, d: Json, revision: int) -> Json | None:
        meta, spec, ns = d["metadata"], d["spec"], d["metadata"]["namespace"]
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        h = pod_template_hash(spec["template"], collisions)
        name = f"{meta['name']}-{h}"
        if self.store.get(RSETS.key, ns, name) is not None:  # a hash collision: count it, try another
            status = dict(d.get("status") or {}, collisionCount=collisions + 1)
            self.write_status(DEPLOYS, d, status)
            return None
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        surge, _ = _surge_unavailable(d)
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                         "annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas_of(d)),
                                         "deployment.kubernetes.io/max-replicas": str(replicas_of(d) + surge),
                                         REVISION: str(revision)},
                         "ownerReferences": [owner_ref(d)]},
            "spec": {"replicas": 0, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        return self.registry.create(RSETS, ns, rs)

    def _annotate(self, res: Resource, obj: Json, annotations: dict[str, str]) -> Json:
        current = obj["metadata"].get("annotations") or {}
        if all(current.get(k) == v for k, v in annotations.items()):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"].setdefault("annotations", {}).update(annotations)
        return self.registry.update(res, obj["metadata"]["namespace"], obj["metadata"]["name"], new,
                                    check_rv=False)

    def _scale(self, d: Json, rs: Json, replicas: int) -> Json:
        before = replicas_of(rs)
        if before == replicas:
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        surge, _ = _surge_unavailable(d)
        new["metadata"].setdefault("annotations", {}).update({
            "deployment.kubernetes.io/desired-replicas": str(replicas_of(d)),
            "deployment.kubernetes.io/max-replicas": str(replicas_of(d) + surge)})
        out = self.registry.update(RSETS, rs["metadata"]["namespace"], rs["metadata"]["name"], new, check_rv=False)
        way = "up" if replicas > before else "down"
        self.record(d, "Normal", "ScalingReplicaSet",
                     f"Scaled {way} replica set {rs['metadata']['name']} from {before} to {replicas}")
        return out

    def _recreate(self, d: Json, new_rs: Json, olds: list[Json]) -> tuple[Json, list[Json]]:
        olds = [self._scale(d, rs, 0) for rs in olds]
        old_uids = {rs["metadata"]["uid"] for rs in olds}
        running = any(controller_uid(p) in old_uids and (p.get("status") or {}).get("phase") not in
                      ("Succeeded", "Failed") for p in self.store.list(PODS.key, d["metadata"]["namespace"]))
        if not running:
            new_rs = self._scale(d, new_rs, replicas_of(d))
        return new_rs, olds

    def _roll(self, d: Json, new_rs: Json, olds: list[Json]) -> tuple[Json, list[Json]]:
        replicas = replicas_of(d)
        if not any(replicas_of(rs) for rs in olds):
            return self._scale(d, new_rs, replicas), olds
        surge, unavailable = _surge_unavailable(d)
        total = replicas_of(new_rs) + sum(replicas_of(rs) for rs in olds)
        if replicas_of(new_rs) > replicas:
            new_rs = self._scale(d, new_rs, replicas)
        elif replicas_of(new_rs) < replicas and replicas + surge - total > 0:
            new_rs = self._scale(d, new_rs, replicas_of(new_rs) + min(replicas + surge - total,
                                                                     replicas - replicas_of(new_rs)))
        min_available = replicas - unavailable
        all_count = replicas_of(new_rs) + sum(replicas_of(rs) for rs in olds)
        new_unavailable = replicas_of(new_rs) - stat(new_rs, "availableReplicas")
        budget = all_count - min_available - new_unavailable
        out = []
        for rs in olds:  # unhealthy old pods go first
            unhealthy = max(replicas_of(rs) - stat(rs, "availableReplicas"), 0)
            down = min(max(budget, 0), unhealthy)
            budget -= down
            out.append(self._scale(d, rs, replicas_of(rs) - down) if down else rs)
        available = stat(new_rs, "availableReplicas") + sum(
            min(stat(rs, "availableReplicas"), replicas_of(rs)) for rs in out)
        budget = available - min_available
        olds, out = out, []
        for rs in olds:
            down = min(max(budget, 0), replicas_of(rs))
            budget -= down
            out.append(self._scale(d, rs, replicas_of(rs) - down) if down else rs)
        return new_rs, out

    def _cleanup(self, d: Json, olds: list[Json]) -> list[Json]:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [rs for rs in olds if not replicas_of(rs) and not stat(rs, "replicas")]
        doomed = sorted(idle, key=revision_of)[:max(len(idle) - limit, 0)]
        for rs in doomed:
            self.deleter.delete(RSETS, rs["metadata"]["namespace"], rs["metadata"]["name"], {}, reconcile=False)
        gone = {rs["metadata"]["uid"] for rs in doomed}
        return [rs for rs in olds if rs["metadata"]["uid"] not in gone]

    def _sync_deployment_status(self, d: Json, new_rs: Json | None, olds: list[Json], created: bool) -> None:
        meta, ns = d["metadata"], d["metadata"]["namespace"]
        every = ([new_rs] if new_rs else []) + olds
        replicas, old_status = replicas_of(d), d.get("status") or {}
        available = sum(stat(rs, "availableReplicas") for rs in every)
        status: Json = {"observedGeneration": meta.get("generation", 1),
                        "replicas": sum(stat(rs, "replicas") for rs in every),
                        "updatedReplicas": stat(new_rs, "replicas") if new_rs else 0,
                        "readyReplicas": sum(stat(rs, "readyReplicas") for rs in every),
                        "availableReplicas": available,
                        "unavailableReplicas": max(sum(replicas_of(rs) for rs in every) - available, 0)}
        status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
        if old_status.get("collisionCount"):
            status["collisionCount"] = old_status["collisionCount"]
        conds = {c["type"]: c for c in old_status.get("conditions") or []}
        _, unavailable = _surge_unavailable(d)
        if available >= replicas - unavailable:
            _set(conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            _set(conds, "Available", "False", "MinimumReplicasUnavailable",
                 "Deployment does not have minimum availability.")
        name = new_rs["metadata"]["name"] if new_rs else ""
        complete = (status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
                    and available == replicas)
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        progress = conds.get("Progressing")
        if created:
            _set(conds, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"')
        elif complete and new_rs is not None:
            _set(conds, "Progressing", "True", "NewReplicaSetAvailable",
                 f'ReplicaSet "{name}" has successfully progressed.')
        elif any(status.get(k, 0) > old_status.get(k, 0) for k in ("updatedReplicas", "readyReplicas",
                                                                   "availableReplicas")) \
                or status.get("replicas", 0) < old_status.get("replicas", 0):
            _set(conds, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.',
                 refresh=True)
        elif deadline and progress and progress.get("reason") != "NewReplicaSetAvailable":
            left = float(deadline) - (time.time() - epoch(progress.get("lastUpdateTime")))
            if left <= 0:
                _set(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                     f'ReplicaSet "{name}" has timed out progressing.')
            else:
                self.requeue(left + 0.5)
        order = [t for t in ("Available", "Progressing") if t in conds]
        status["conditions"] = [conds[t] for t in order] + [c for t, c in conds.items() if t not in order]
        self.write_status(DEPLOYS, self.store.get(DEPLOYS.key, ns, meta["name"]) or d, status)


def _set(conds: dict[str, Json], kind: str, status: str, reason: str, message: str,
         refresh: bool = False) -> None:
    """``SetDeploymentCondition``: same status and reason keep their times (unless ``refresh``)."""
    now = rfc3339()
    old = conds.get(kind)
    if old and old.get("status") == status and old.get("reason") == reason and not refresh:
        return
    transition = old["lastTransitionTime"] if old and old.get("status") == status else now
    conds[kind] = {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition,
                   "reason": reason, "message": message}
