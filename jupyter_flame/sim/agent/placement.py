"""Where a pod may go, by labels and taints: node affinity/selector matching and taint
toleration, as kube-scheduler's NodeAffinity and TaintToleration filters decide (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = ["NodeInfo", "matches_node_affinity", "tolerates"]

Json = Mapping[str, Any]


@dataclass(frozen=True)
class NodeInfo:
    """What the scheduler knows about one node.

    Parameters
    ----------
    name : str
        ``metadata.name``.
    labels : Mapping[str, str]
        ``metadata.labels``.
    taints : tuple of Mapping
        ``spec.taints``.
    allocatable : Mapping[str, Fraction]
        ``status.allocatable`` parsed.
    unschedulable : bool
        ``spec.unschedulable`` (cordoned).
    ready : bool
        The ``Ready`` condition is ``True``; a node that is not ready behaves as
        if tainted ``node.kubernetes.io/not-ready:NoSchedule``, as in a cluster.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    allocatable: Mapping[str, Fraction] = field(default_factory=dict)
    unschedulable: bool = False
    ready: bool = True


def tolerates(tolerations: Iterable[Json], taint: Json) -> bool:
    """Whether any toleration tolerates ``taint`` (``Equal``/``Exists`` semantics).

    Parameters
    ----------
    tolerations : iterable of Mapping
        ``spec.tolerations`` of the pod.
    taint : Mapping
        One node taint.

    Returns
    -------
    bool
    """
    for tol in tolerations:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = tol.get("key") or ""
        operator = tol.get("operator") or "Equal"
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Equal" and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _match_requirement(req: Json, value: str | None) -> bool:
    operator = req.get("operator")
    values = [str(v) for v in req.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt"):
        if value is None or len(values) != 1:
            return False
        have, want = _int_or_none(value), _int_or_none(values[0])
        if have is None or want is None:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def _match_term(term: Json, node: NodeInfo) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    for req in exprs:
        if not _match_requirement(req, node.labels.get(req.get("key", ""))):
            return False
    for req in fields:
        value = node.name if req.get("key") == "metadata.name" else None
        if not _match_requirement(req, value):
            return False
    return True


def matches_node_affinity(pod: Json, node: NodeInfo) -> bool:
    """``nodeSelector`` and required node affinity, as the NodeAffinity filter.

    Parameters
    ----------
    pod : Mapping
        The pod JSON.
    node : NodeInfo
        The candidate node.

    Returns
    -------
    bool
        True when every ``nodeSelector`` label matches and at least one required
        ``nodeSelectorTerms`` entry matches (terms are ORed, expressions ANDed).
    """
    spec = pod.get("spec") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is None:
        return True
    terms = required.get("nodeSelectorTerms") or []
    return any(_match_term(term, node) for term in terms)
