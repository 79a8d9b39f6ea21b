"""Finding and removing runner pods by label, for ``jupyter flame list`` / ``cleanup``.

These functions take a ``kubernetes.client.CoreV1Api`` and block: call them from a thread
(``asyncio.to_thread``) in async code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypedDict

from kubernetes import client

from jupyter_flame.backends.kubernetes._pod_parts import (
    ANNOTATION_PREFIX,
    LABEL_KERNEL,
    LABEL_PARENT,
    LABEL_POOL,
    LABEL_RUNNER,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    dns_label,
)
from jupyter_flame.backends.kubernetes.api import call

__all__ = ["RunnerPod", "cleanup_runner_pods", "list_runner_pods", "runner_pod", "secret_name"]


class RunnerPod(TypedDict, total=False):
    """A runner pod, as listed by :func:`list_runner_pods`.

    ``pool`` and ``kernel_id`` are the original names (label values may be shortened);
    ``pod`` is the same as ``name``; ``owner_uid`` is the uid of the notebook pod it belongs to (``""`` without owner);
    ``action`` and ``why`` are set by :func:`cleanup_runner_pods`.
    """

    name: str
    pod: str
    namespace: str
    pool: str
    parent: str
    owner_uid: str
    kernel_id: str
    kernel_pid: int  # the kernel process that made it (0: not recorded)
    runner_id: str
    phase: str
    node: str
    pod_ip: str
    created: str
    deleting: bool
    reason: str  # why a pod is not running yet (Unschedulable, ContainerCreating, ...)
    resources: dict[str, str]  # the runner container's requests, GPUs from its limits
    live: dict[str, Any]  # busy/idle, CPU, memory, published by the kernel (see live.py)
    action: str
    why: str


def secret_name(parent: str, pool: str, kernel_id: str) -> str:
    """The name of the Secret holding ``pool``'s key for ``kernel_id`` on pod ``parent``."""
    parts = [parent[:120].rstrip("-."), "flame", dns_label(pool, 40)]
    if kernel_id:
        parts.append(dns_label(kernel_id)[:8].strip("-"))
    return "-".join(p for p in parts if p) + "-key"


def _waiting_reason(status: dict[str, Any]) -> str:
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated.get("reason"):
            return str(terminated["reason"])
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("reason"):
            return str(cond["reason"])
    return ""


def _resources(spec: dict[str, Any]) -> dict[str, str]:
    containers = spec.get("containers") or []
    runner = next((c for c in containers if c.get("name") == "runner"),
                  containers[0] if containers else {})
    res = runner.get("resources") or {}
    out = {k: str(v) for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
    for key, value in (res.get("limits") or {}).items():
        if key.endswith("/gpu"):
            out["gpu"] = str(value)
    return out


def _live(notes: dict[str, str]) -> dict[str, Any]:
    try:
        live = json.loads(notes.get(ANNOTATION_PREFIX + "live") or "{}")
    except ValueError:
        return {}
    return live if isinstance(live, dict) else {}


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def runner_pod(pod: dict[str, Any]) -> RunnerPod:
    """A pod, as the API sent it (JSON), as a :class:`RunnerPod`."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"]
    return RunnerPod(
        reason=_waiting_reason(status),
        resources=_resources(pod.get("spec") or {}),
        live=_live(notes),
        name=meta.get("name", ""),
        pod=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        pool=notes.get(ANNOTATION_PREFIX + "pool-name") or labels.get(LABEL_POOL, ""),
        parent=labels.get(LABEL_PARENT, ""),
        owner_uid=owners[0].get("uid", "") if owners else "",
        kernel_id=notes.get(ANNOTATION_PREFIX + "kernel-id") or labels.get(LABEL_KERNEL, ""),
        kernel_pid=_int(notes.get(ANNOTATION_PREFIX + "kernel-pid")),
        runner_id=labels.get(LABEL_RUNNER, ""),
        phase=status.get("phase", ""),
        node=(pod.get("spec") or {}).get("nodeName") or "",
        pod_ip=status.get("podIP") or "",
        created=meta.get("creationTimestamp") or "",
        deleting=bool(meta.get("deletionTimestamp")),
    )


def list_runner_pods(core_api: client.CoreV1Api, namespace: str | None,
                     label_selector: str | None = None) -> list[RunnerPod]:
    """Every jupyter-flame runner pod in ``namespace`` (oldest first).

    Parameters
    ----------
    namespace:
        ``None``: every namespace (``kubectl get pods -A``; needs a cluster-wide
        ``list pods`` permission).
    label_selector:
        Extra requirements (e.g. ``"jupyter-flame/parent=nb-0"``).

    Raises
    ------
    BackendError
        The API refused (403 names the missing RBAC rule).
    """
    wanted = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
    if label_selector:
        wanted += "," + label_selector
    if namespace is None:
        listed = call("list", "pods", "", core_api.list_pod_for_all_namespaces,
                      label_selector=wanted, raw=True)
    else:
        listed = call("list", "pods", namespace, core_api.list_namespaced_pod, namespace,
                      label_selector=wanted, raw=True)
    pods = [runner_pod(p) for p in listed.get("items") or []]
    return sorted(pods, key=lambda p: (p.get("created", ""), p.get("name", "")))


def cleanup_runner_pods(
    core_api: client.CoreV1Api,
    namespace: str,
    orphans_only: bool = True,
    *,
    parent: str | None = None,
    live_kernels: Iterable[str] | None = None,
    grace: int = 5,
) -> list[RunnerPod]:
    """Delete runner pods; returns those deleted, each with ``action`` and ``why``.

    With ``orphans_only`` (the default) only orphans go: pods whose runner finished (phase
    ``Succeeded``/``Failed``: their kernel was not there to delete them), pods whose notebook
    pod is gone or was replaced by another pod of the same name (different uid), and, when
    ``live_kernels`` is given, pods of notebook pod ``parent`` (default: any) whose kernel is
    not in it.
    Otherwise every runner pod of the namespace (or of ``parent``) goes.
    """
    extra = f"{LABEL_PARENT}={parent}" if parent else None
    pods = list_runner_pods(core_api, namespace, extra)
    kernels = None if live_kernels is None else {k for k in live_kernels}
    parents: dict[str, str | None] = {}
    deleted: list[RunnerPod] = []
    for pod in pods:
        why = "requested"
        if orphans_only:
            owner = pod.get("parent", "")
            if owner not in parents:
                found = call("get", "pods", namespace, core_api.read_namespaced_pod, owner,
                             namespace, raw=True, missing_ok=True) if owner else None
                parents[owner] = found.get("metadata", {}).get("uid") if found else None
            live_uid = parents[owner]
            if pod.get("phase") in ("Succeeded", "Failed"):
                why = "runner finished"
            elif live_uid is None:
                why = "notebook pod gone"
            elif pod.get("owner_uid") and pod["owner_uid"] != live_uid:
                why = "notebook pod replaced"
            elif kernels is not None and pod.get("kernel_id") not in kernels:
                why = "kernel gone"
            else:
                continue
        if pod.get("deleting"):
            continue
        gone = call("delete", "pods", namespace, core_api.delete_namespaced_pod, pod["name"],
                    namespace, grace_period_seconds=grace, raw=True, missing_ok=True)
        pod["action"] = "deleted" if gone is not None else "already gone"
        pod["why"] = why
        deleted.append(pod)
    return deleted
