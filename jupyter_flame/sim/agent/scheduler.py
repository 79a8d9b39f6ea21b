"""Pure scheduling decisions, with kube-scheduler's filters and wording.

No I/O: the caller hands in pods and nodes as Kubernetes JSON dicts and gets a
node name or the ``FailedScheduling`` message back. The filters run in
kube-scheduler's order (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit) and a node fails at the first filter that rejects it, so the
per-node reasons and the message match a real cluster, e.g.::

    0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes
    are available: 2 No preemption victims found for incoming pod.

Resource filters (``Insufficient X``, ``Too many pods``) could be resolved by
preemption; the others cannot ("Preemption is not helpful for scheduling").
The stand-in never preempts: it has no priorities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..quantity import QuantityError, parse_quantity
from .placement import NodeInfo, matches_node_affinity, tolerates

__all__ = [
    "NodeInfo",
    "Decision",
    "pod_requests",
    "node_info",
    "tolerates",
    "matches_node_affinity",
    "filter_node",
    "schedule",
    "fit_error_message",
    "is_schedulable_by_us",
]

Json = Mapping[str, Any]

REASON_UNSCHEDULABLE_NODE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
PREEMPTION_NO_VICTIMS = "No preemption victims found for incoming pod"
NO_NODES = "no nodes available to schedule pods"


@dataclass(frozen=True)
class Decision:
    """The outcome of one scheduling attempt.

    Parameters
    ----------
    node : str or None
        The chosen node, or None when the pod does not fit anywhere.
    message : str
        Empty on success, else the ``FailedScheduling`` message.
    """

    node: str | None
    message: str = ""


def _parse_resources(resources: Mapping[str, Any] | None) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for name, value in (resources or {}).items():
        try:
            out[name] = parse_quantity(value)
        except QuantityError:
            continue
    return out


def _container_requests(container: Json) -> dict[str, Fraction]:
    resources = container.get("resources") or {}
    requests = _parse_resources(resources.get("requests"))
    # The API server defaults requests to limits where only limits are set.
    for name, value in _parse_resources(resources.get("limits")).items():
        requests.setdefault(name, value)
    return requests


def pod_requests(pod: Json) -> dict[str, Fraction]:
    """Effective requests of a pod, as kube-scheduler computes them.

    Parameters
    ----------
    pod : Mapping
        The pod JSON.

    Returns
    -------
    dict of str to Fraction
        Sum over containers, raised to the largest init container per resource,
        plus ``spec.overhead``; always ``pods: 1``.
    """
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] = total.get(name, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in _container_requests(container).items():
            if value > total.get(name, Fraction(0)):
                total[name] = value
    for name, value in _parse_resources(spec.get("overhead")).items():
        total[name] = total.get(name, Fraction(0)) + value
    total["pods"] = Fraction(1)
    return total


def node_info(node: Json) -> NodeInfo:
    """Build a :class:`NodeInfo` from node JSON.

    Parameters
    ----------
    node : Mapping
        The node JSON.

    Returns
    -------
    NodeInfo
    """
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return NodeInfo(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        allocatable=_parse_resources(status.get("allocatable") or status.get("capacity")),
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
    )


def filter_node(
    pod: Json,
    node: NodeInfo,
    used: Mapping[str, Fraction],
    requests: Mapping[str, Fraction] | None = None,
) -> tuple[list[str], bool]:
    """Run the filters on one node.

    Parameters
    ----------
    pod : Mapping
        The pod JSON.
    node : NodeInfo
        The candidate node.
    used : Mapping[str, Fraction]
        Requests of the pods already bound to the node (``pods`` counts them).
    requests : Mapping[str, Fraction], optional
        ``pod_requests(pod)``, when the caller has it already.

    Returns
    -------
    reasons : list of str
        Empty when the pod fits.
    resolvable : bool
        Whether preemption could in principle help (resource reasons only).
    """
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    if node.unschedulable and not tolerates(
        tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ):
        return [REASON_UNSCHEDULABLE_NODE], False
    taints = list(node.taints)
    if not node.ready:
        taints.insert(0, {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(tolerations, taint):
            key, value = taint.get("key", ""), taint.get("value", "") or ""
            return [f"node(s) had untolerated taint {{{key}: {value}}}"], False
    if not matches_node_affinity(pod, node):
        return [REASON_AFFINITY], False
    reasons: list[str] = []
    if requests is None:
        requests = pod_requests(pod)
    allowed_pods = node.allocatable.get("pods", Fraction(110))
    if used.get("pods", Fraction(0)) + 1 > allowed_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    for name in sorted(requests):
        if name == "pods" or requests[name] <= 0:
            continue
        free = node.allocatable.get(name, Fraction(0)) - used.get(name, Fraction(0))
        if requests[name] > free:
            reasons.append(f"Insufficient {name}")
    return reasons, True


def _histogram(reasons: Iterable[str]) -> str:
    counts = Counter(reasons)
    return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))


def fit_error_message(num_nodes: int, failures: Mapping[str, tuple[list[str], bool]]) -> str:
    """Format kube-scheduler's ``FitError`` message.

    Parameters
    ----------
    num_nodes : int
        Nodes considered.
    failures : Mapping
        Node name to ``(reasons, resolvable)`` from :func:`filter_node`.

    Returns
    -------
    str
        e.g. ``0/1 nodes are available: 1 node(s) didn't match Pod's node
        affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is
        not helpful for scheduling.``
    """
    if num_nodes == 0:
        return NO_NODES
    reasons = [r for rs, _ in failures.values() for r in rs]
    preemption = [
        PREEMPTION_NO_VICTIMS if resolvable else PREEMPTION_NOT_HELPFUL
        for _, resolvable in failures.values()
    ]
    return (
        f"0/{num_nodes} nodes are available: {_histogram(reasons)}. "
        f"preemption: 0/{num_nodes} nodes are available: {_histogram(preemption)}."
    )


def _score(
    node: NodeInfo, used: Mapping[str, Fraction], requests: Mapping[str, Fraction]
) -> Fraction:
    """LeastAllocated: the share of cpu and memory left after placing the pod."""
    score = Fraction(0)
    for name in ("cpu", "memory"):
        cap = node.allocatable.get(name, Fraction(0))
        if cap > 0:
            score += (cap - used.get(name, Fraction(0)) - requests.get(name, Fraction(0))) / cap
    pods_cap = node.allocatable.get("pods", Fraction(110))
    if pods_cap > 0:
        score += (pods_cap - used.get("pods", Fraction(0))) / pods_cap
    return score


def schedule(
    pod: Json,
    nodes: Iterable[NodeInfo],
    used: Mapping[str, Mapping[str, Fraction]],
    requests: Mapping[str, Fraction] | None = None,
) -> Decision:
    """Pick a node for ``pod`` or explain why none fits.

    Parameters
    ----------
    pod : Mapping
        The pending pod JSON.
    nodes : iterable of NodeInfo
        All nodes.
    used : Mapping
        Node name to the summed requests of the pods bound there.
    requests : Mapping[str, Fraction], optional
        ``pod_requests(pod)``, when the caller has it already (computed once here otherwise).

    Returns
    -------
    Decision
        The feasible node with the most room left (ties by name), or the message.
    """
    node_list = sorted(nodes, key=lambda n: n.name)
    failures: dict[str, tuple[list[str], bool]] = {}
    feasible: list[NodeInfo] = []
    empty: dict[str, Fraction] = {}
    if requests is None:
        requests = pod_requests(pod)
    for node in node_list:
        reasons, resolvable = filter_node(pod, node, used.get(node.name, empty), requests)
        if reasons:
            failures[node.name] = (reasons, resolvable)
        else:
            feasible.append(node)
    if not feasible:
        return Decision(None, fit_error_message(len(node_list), failures))
    # max() keeps the first of equal scores: the node list is sorted by name.
    best = max(feasible, key=lambda n: _score(n, used.get(n.name, empty), requests))
    return Decision(best.name)


def is_schedulable_by_us(pod: Json, scheduler_name: str = "default-scheduler") -> bool:
    """Whether ``pod`` is pending and waits for this scheduler.

    Parameters
    ----------
    pod : Mapping
        The pod JSON.
    scheduler_name : str
        Our ``spec.schedulerName``.

    Returns
    -------
    bool
        No ``nodeName``, not being deleted, not terminal, and our scheduler name.
    """
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    return (spec.get("schedulerName") or "default-scheduler") == scheduler_name
