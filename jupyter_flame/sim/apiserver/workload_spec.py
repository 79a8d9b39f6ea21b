"""The spec side of apps/v1 workloads and Services: defaults, validation, hashes (pure).

What the real API server does on create and update of a ``Deployment``,
``ReplicaSet`` or ``Service`` before anything is stored:

* defaults (``SetDefaults_Deployment`` and friends): ``replicas: 1``, the
  ``RollingUpdate`` strategy with 25 %/25 %, ``revisionHistoryLimit: 10``,
  ``progressDeadlineSeconds: 600``, and the pod template's defaults (restart and
  DNS policy, grace period, scheduler, per-container termination message, pull
  policy, ``resources: {}``, port protocol); Services get ``type: ClusterIP``,
  ``sessionAffinity: None``, IP families and ``targetPort`` = ``port``;
* validation with the real wording for the mistakes people make (no selector,
  a selector that does not match the template's labels, a template whose
  ``restartPolicy`` is not ``Always``, negative replicas, a changed selector);
* the ``pod-template-hash`` of a template (FNV-32a, encoded with the same
  alphabet as the controller manager's) and the ``autoscaling/v1 Scale`` view.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .selectors import match_labels, parse_labels
from .status import FieldError

__all__ = [
    "HASH_LABEL",
    "WORKLOADS",
    "default_service",
    "default_workload",
    "label_selector_text",
    "pod_template_hash",
    "scale_of",
    "selector_matches",
    "template_without_hash",
    "validate_service",
    "validate_workload",
    "workload_update_errors",
]

Json = dict[str, Any]
#: plurals with a pod template, ``replicas`` and the ``scale`` subresource
WORKLOADS = frozenset({"deployments", "replicasets"})
HASH_LABEL = "pod-template-hash"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def _pull_policy(image: str) -> str:
    tail = image.rsplit("/", 1)[-1]
    if "@" not in tail and (":" not in tail or tail.endswith(":latest")):
        return "Always"
    return "IfNotPresent"


def _default_template(template: Json) -> None:
    """The defaults a pod template gets (those of a pod without admission's additions)."""
    spec = template.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec.get("serviceAccountName") or spec["serviceAccount"]
        spec["serviceAccount"] = spec["serviceAccountName"]
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        if c.get("image"):
            c.setdefault("imagePullPolicy", _pull_policy(str(c["image"])))
        c.setdefault("resources", {})
        for port in c.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("fieldRef")
            if ref is not None:
                ref.setdefault("apiVersion", "v1")


def default_workload(obj: Json, plural: str) -> None:
    """Fill in the defaults of a Deployment or ReplicaSet (in place)."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    if plural == "deployments":
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    if isinstance(template, dict):
        _default_template(template)


def label_selector_text(selector: Json | None) -> str:
    """A ``metav1.LabelSelector`` as the string form (``app=x,tier in (a,b)``)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def selector_matches(selector: Json | None, labels: dict[str, str] | None) -> bool:
    """Whether ``labels`` satisfy a ``LabelSelector`` (an empty selector matches nothing here)."""
    text = label_selector_text(selector)
    if not text:
        return False
    return match_labels(parse_labels(text), {"metadata": {"labels": labels or {}}})


def _go_map(labels: dict[str, Any]) -> str:
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return f"map[string]string{{{inner}}}"


def validate_workload(obj: Json, plural: str) -> list[FieldError]:
    """The checks ``ValidateDeployment``/``ValidateReplicaSet`` make that matter here."""
    errs: list[FieldError] = []
    spec = obj.get("spec") or {}
    what = "deployment" if plural == "deployments" else "replicaset"
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        errs.append(FieldError("spec.replicas", "FieldValueInvalid", "must be greater than or equal to 0",
                               replicas, show_value=True))
    selector = spec.get("selector")
    if selector is None:
        errs.append(FieldError("spec.selector", "FieldValueRequired", ""))
    elif not label_selector_text(selector):
        errs.append(FieldError("spec.selector", "FieldValueInvalid", f"empty selector is invalid for {what}",
                               selector, show_value=True))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector is not None and label_selector_text(selector) and not selector_matches(selector, labels):
        errs.append(FieldError("spec.template.metadata.labels", "FieldValueInvalid",
                               f"{_go_map(labels)}: `selector` does not match template `labels`"))
    pod_spec = template.get("spec") or {}
    if not pod_spec.get("containers"):
        errs.append(FieldError("spec.template.spec.containers", "FieldValueRequired", ""))
    for i, c in enumerate(pod_spec.get("containers") or []):
        if not c.get("name"):
            errs.append(FieldError(f"spec.template.spec.containers[{i}].name", "FieldValueRequired", ""))
        if not c.get("image"):
            errs.append(FieldError(f"spec.template.spec.containers[{i}].image", "FieldValueRequired", ""))
    policy = pod_spec.get("restartPolicy", "Always")
    if policy != "Always":
        errs.append(FieldError("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                               'supported values: "Always"', policy, show_value=True))
    strategy = spec.get("strategy") or {}
    if plural == "deployments":
        if strategy.get("type") not in ("RollingUpdate", "Recreate"):
            errs.append(FieldError("spec.strategy.type", "FieldValueNotSupported",
                                   'supported values: "Recreate", "RollingUpdate"', strategy.get("type"),
                                   show_value=True))
        elif strategy["type"] == "Recreate" and strategy.get("rollingUpdate"):
            errs.append(FieldError("spec.strategy.rollingUpdate", "FieldValueForbidden",
                                   "may not be specified when strategy `type` is 'Recreate'"))
    return errs


def workload_update_errors(old: Json, new: Json) -> list[FieldError]:
    """apps/v1 selectors are immutable."""
    before, after = (old.get("spec") or {}).get("selector"), (new.get("spec") or {}).get("selector")
    if before != after:
        return [FieldError("spec.selector", "FieldValueInvalid", "field is immutable", after, show_value=True)]
    return []


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _semantic(value: Any) -> Any:
    """``apiequality.Semantic`` for JSON: null, ``{}`` and ``[]`` are the same as absent."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def template_without_hash(template: Json) -> Json:
    """A pod template without the ``pod-template-hash`` label, for semantic comparison.

    Nulls and empty objects are dropped, so a template that went through a Go client
    (``creationTimestamp: null``, ``resources: {}``) compares equal to the stored one.
    """
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return dict(_semantic(out))


def pod_template_hash(template: Json, collision_count: int | None = None) -> str:
    """``controller.ComputeHash``: FNV-32a of the template (and collision count), safe-encoded."""
    text = json.dumps(template_without_hash(template), sort_keys=True, separators=(",", ":"))
    if collision_count:
        text += str(collision_count)
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in str(_fnv32a(text.encode())))


def scale_of(obj: Json) -> Json:
    """The ``autoscaling/v1 Scale`` view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": label_selector_text((obj.get("spec") or {}).get("selector"))},
    }


# -- Services ---------------------------------------------------------------------
def default_service(svc: Json, free_ip: str) -> None:
    """Service defaults; ``free_ip`` becomes the ``clusterIP`` unless one is set."""
    spec = svc.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = free_ip
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    svc["status"] = svc.get("status") or {"loadBalancer": {}}


def validate_service(svc: Json) -> list[FieldError]:
    """Ports are required (except ``ExternalName`` and headless Services)."""
    spec = svc.get("spec") or {}
    errs: list[FieldError] = []
    if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
        errs.append(FieldError("spec.ports", "FieldValueRequired", ""))
    for i, port in enumerate(spec.get("ports") or []):
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            errs.append(FieldError(f"spec.ports[{i}].port", "FieldValueInvalid",
                                   "must be between 1 and 65535, inclusive", number, show_value=True))
    return errs
