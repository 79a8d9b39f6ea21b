"""``meta.k8s.io/v1 Table`` rendering, what ``kubectl get`` asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .workload_spec import label_selector_text

Row = Callable[[dict[str, Any]], list[Any]]

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}


def _col(name: str, priority: int = 0, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "", "description": name, "priority": priority}


def human_duration(seconds: float) -> str:
    """Durations as kubectl prints them (``5s``, ``3m2s``, ``4h``, ``2d``)."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(obj: dict[str, Any]) -> str:
    """Age column from ``metadata.creationTimestamp``."""
    ts = obj["metadata"].get("creationTimestamp")
    if not ts:
        return "<unknown>"
    created = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    return human_duration((dt.datetime.now(dt.timezone.utc) - created).total_seconds())


def pod_status(pod: dict[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods`` (reason, waiting/terminated reason...)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in status.get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
            break
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
            break
    else:
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return str(reason)


def _pod_row(pod: dict[str, Any]) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", pod_status(pod),
        str(restarts), age(pod), status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>", f"{len(gates)}/{len(gates)}" if gates else "<none>",
    ]


def _node_row(node: dict[str, Any]) -> list[Any]:
    conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    status = {"True": "Ready", "False": "NotReady"}.get(conds.get("Ready", ""), "Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = node["metadata"].get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [node["metadata"]["name"], status, roles, age(node), version]


def _event_row(ev: dict[str, Any]) -> list[Any]:
    inv = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
    seen = age({"metadata": {"creationTimestamp": last[:19] + "Z" if last else None}})
    return [seen, ev.get("type", ""), ev.get("reason", ""),
            f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}", ev.get("message", "")]


def _images(obj: dict[str, Any]) -> tuple[str, str]:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _selector(obj: dict[str, Any]) -> str:
    return label_selector_text((obj.get("spec") or {}).get("selector")) or "<none>"


def _deployment_row(d: dict[str, Any]) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    names, images = _images(d)
    return [d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0)), age(d),
            names, images, _selector(d)]


def _replicaset_row(rs: dict[str, Any]) -> list[Any]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _images(rs)
    return [rs["metadata"]["name"], int(spec.get("replicas", 0)), int(status.get("replicas", 0)),
            int(status.get("readyReplicas", 0)), age(rs), names, images, _selector(rs)]


def _service_row(svc: dict[str, Any]) -> list[Any]:
    spec = svc.get("spec") or {}
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []) or "<none>"
    external = ",".join(spec.get("externalIPs") or []) or "<none>"
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [svc["metadata"]["name"], spec.get("type", ""), spec.get("clusterIP") or "<none>", external,
            ports, age(svc), selector]


_WORKLOAD_WIDE = [_col("Containers", 1), _col("Images", 1), _col("Selector", 1)]

_TABLES: dict[str, tuple[list[dict[str, Any]], Row]] = {
    "deployments": ([_NAME, _col("Ready"), _col("Up-to-date", 0, "integer"), _col("Available", 0, "integer"),
                     _AGE, *_WORKLOAD_WIDE], _deployment_row),
    "replicasets": ([_NAME, _col("Desired", 0, "integer"), _col("Current", 0, "integer"),
                     _col("Ready", 0, "integer"), _AGE, *_WORKLOAD_WIDE], _replicaset_row),
    "services": ([_NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), _AGE,
                  _col("Selector", 1)], _service_row),
    "pods": ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", 0, "string"), _AGE,
              _col("IP", 1), _col("Node", 1), _col("Nominated Node", 1), _col("Readiness Gates", 1)],
             _pod_row),
    "nodes": ([_NAME, _col("Status"), _col("Roles"), _AGE, _col("Version")], _node_row),
    "namespaces": ([_NAME, _col("Status"), _AGE],
                   lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), age(o)]),
    "secrets": ([_NAME, _col("Type"), _col("Data", 0, "integer"), _AGE],
                lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), age(o)]),
    "configmaps": ([_NAME, _col("Data", 0, "integer"), _AGE],
                   lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)]),
    "serviceaccounts": ([_NAME, _col("Secrets", 0, "integer"), _AGE],
                        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), age(o)]),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
    "rolebindings": ([_NAME, _col("Role"), _AGE],
                     lambda o: [o["metadata"]["name"], f"{o.get('roleRef', {}).get('kind')}/{o.get('roleRef', {}).get('name')}", age(o)]),
    "clusterrolebindings": ([_NAME, _col("Role"), _AGE],
                            lambda o: [o["metadata"]["name"], f"ClusterRole/{o.get('roleRef', {}).get('name')}", age(o)]),
    "roles": ([_NAME, _col("Created At")], lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]),
    "clusterroles": ([_NAME, _col("Created At")], lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]),
}


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(plural: str, objects: list[dict[str, Any]], resource_version: str, include: str = "Metadata",
          headers: bool = True) -> dict[str, Any]:
    """A ``Table`` for ``objects`` of ``plural`` (generic NAME/AGE when unknown)."""
    columns, row = _TABLES.get(plural, ([_NAME, _AGE], lambda o: [o["metadata"]["name"], age(o)]))
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj)}
        ro = _row_object(obj, include)
        if ro is not None:
            entry["object"] = ro
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns if headers else [], "rows": rows}


PARTIAL = "PartialObjectMetadata"


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    """``PartialObjectMetadata`` of an object (metadata-only clients)."""
    return {"kind": PARTIAL, "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def partial_list(listing: dict[str, Any]) -> dict[str, Any]:
    """``PartialObjectMetadataList`` of a list."""
    return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": listing["metadata"], "items": [partial(o) for o in listing["items"]]}


def wants_partial(accept: str) -> bool:
    """Whether an ``Accept`` header asks for ``as=PartialObjectMetadata[List]``."""
    first = accept.split(",")[0]
    return "as=PartialObjectMetadata" in first and "g=meta.k8s.io" in first


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for ``as=Table`` (first offered type)."""
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first
