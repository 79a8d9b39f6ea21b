"""Small pure helpers for building runner pods: quantities, labels, merges, placement.

No I/O. Used by :mod:`jupyter_flame.backends.kubernetes.pod_template` and the Kubernetes backend.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jupyter_flame._strategic_merge import strategic_merge_patch
from jupyter_flame.backends.quantity import parse_quantity

__all__ = [
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GPU_TOLERATION",
    "deep_merge",
    "dedupe",
    "format_cpu",
    "format_memory",
    "label_value",
    "parse_quantity",
    "require_node_label",
]

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TOLERATION: dict[str, Any] = {
    "key": GPU_RESOURCE,
    "operator": "Exists",
    "effect": "NoSchedule",
}

# ---------------------------------------------------------------------------------- quantities

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

def format_cpu(value: object, option: str = "cpu") -> str:
    """A CPU amount as a quantity string: plain numbers are cores (``0.5`` -> ``"500m"``)."""
    if isinstance(value, str):
        parse_quantity(value, option)
        return value.strip()
    cores = parse_quantity(value, option)
    if cores.denominator == 1:
        return str(cores.numerator)
    millis = -((-cores * 1000) // 1)  # round up: never request less than asked
    return f"{millis}m"


def format_memory(value: object, option: str = "memory") -> str:
    """A memory amount as a quantity string: plain numbers are bytes (``2**30`` -> ``"1Gi"``)."""
    if isinstance(value, str):
        parse_quantity(value, option)
        return value.strip()
    amount = parse_quantity(value, option)
    whole = -((-amount) // 1)  # bytes, rounded up
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        if whole and whole % _BINARY[suffix] == 0:
            return f"{whole // _BINARY[suffix]}{suffix}"
    return str(whole)


# --------------------------------------------------------------------------------------- labels

_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(value: str) -> str:
    """``value`` made a valid label value (<= 63 chars of ``[A-Za-z0-9._-]``, alnum ends).

    A value that had to change gets a short hash of the original appended, so that two
    different names never share a label value.
    """
    clean = _LABEL_BAD.sub("-", value).strip("-._")
    if clean == value and len(value) <= 63:
        return value
    digest = hashlib.sha1(value.encode()).hexdigest()[:8]
    clean = clean[: 63 - len(digest) - 1].strip("-._")
    return f"{clean}-{digest}" if clean else digest


def dns_label(value: str, limit: int = 63) -> str:
    """``value`` made a DNS-1123 label (lower-case alnum and ``-``), at most ``limit`` chars."""
    clean = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    if clean == value and len(value) <= limit:
        return value
    digest = hashlib.sha1(value.encode()).hexdigest()[:6]
    clean = clean[: limit - len(digest) - 1].strip("-")
    return f"{clean}-{digest}" if clean else digest


# --------------------------------------------------------------------------------------- merging


def deep_merge(base: Any, patch: Any, *, default_name: str | None = None) -> Any:
    """Merge ``patch`` over ``base`` the way Kubernetes' strategic merge does; a new value.

    One table of merge keys for the product and the stand-in (:mod:`jupyter_flame._strategic_merge`):
    containers, env, volumes by ``name``, volumeMounts by ``mountPath``, ports by
    ``containerPort``...; other lists replace the base list; ``None`` deletes a key.
    ``default_name`` names an unnamed entry of the pod's ``spec.containers`` (it merges into
    the runner container).
    """
    if default_name is not None and isinstance(patch, dict):
        spec = patch.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            patch = {**patch, "spec": {**spec, "containers": [
                {"name": default_name, **c} if isinstance(c, dict) and "name" not in c else c
                for c in spec["containers"]]}}
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return strategic_merge_patch(base, patch)


def dedupe(items: Iterable[Any]) -> list[Any]:
    """``items`` without repeats (by value, order kept)."""
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# ------------------------------------------------------------------------------------ placement


def require_node_label(affinity: Mapping[str, Any], key: str, values: list[str]) -> dict[str, Any]:
    """Return ``affinity`` with required node affinity ``key In values`` ANDed into every term.

    Existing expressions on the same ``key`` are replaced (a runner asking for another GPU
    product than its parent must not inherit an unsatisfiable ``AND``).
    """
    out = copy.deepcopy(dict(affinity))
    node = out.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    expression = {"key": key, "operator": "In", "values": list(values)}
    new_terms = []
    for term in terms:
        term = dict(term)
        kept = [e for e in term.get("matchExpressions", []) if e.get("key") != key]
        term["matchExpressions"] = [*kept, expression]
        new_terms.append(term)
    required["nodeSelectorTerms"] = new_terms
    return out


def drop_node_label(affinity: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Return ``affinity`` without required node-affinity expressions on ``keys``."""
    keys = set(keys)
    out = copy.deepcopy(dict(affinity))
    required = out.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not keys or not required:
        return out
    terms = []
    for term in required.get("nodeSelectorTerms", []):
        term = dict(term)
        if "matchExpressions" in term:
            term["matchExpressions"] = [
                e for e in term["matchExpressions"] if e.get("key") not in keys
            ]
            if not term["matchExpressions"]:
                del term["matchExpressions"]
        if term:
            terms.append(term)
    if terms:
        required["nodeSelectorTerms"] = terms
    else:
        del out["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        if not out["nodeAffinity"]:
            del out["nodeAffinity"]
    return out


# --------------------------------------------------------------------------------- our labels

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "jupyter-flame"
LABEL_POOL = "jupyter-flame/pool"
LABEL_PARENT = "jupyter-flame/parent"
LABEL_KERNEL = "jupyter-flame/kernel"
LABEL_RUNNER = "jupyter-flame/runner"
ANNOTATION_PREFIX = "jupyter-flame/"


def runner_labels(*, pool: str, parent: str, kernel_id: str, runner_id: str) -> dict[str, str]:
    """The labels every runner pod carries (values sanitized with :func:`label_value`)."""
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        LABEL_POOL: label_value(pool),
        LABEL_PARENT: label_value(parent),
        LABEL_KERNEL: label_value(kernel_id),
        LABEL_RUNNER: label_value(runner_id),
    }


def selector(labels: Mapping[str, str]) -> str:
    """A label selector string matching all of ``labels``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())
