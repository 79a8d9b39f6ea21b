"""Kubernetes' strategic merge, on JSON values (pure): one table of merge keys and one
implementation, shared by the product (runner pod templates merged over the cloned notebook
pod, :mod:`jupyter_flame.backends.kubernetes._pod_parts`) and the stand-in's API server
(``application/strategic-merge-patch+json``, :mod:`jupyter_flame.sim.apiserver.patch`), so
both merge the way a real API server does and are tested on the same cases.

Lists whose field has a merge key (``x-kubernetes-patch-merge-key`` upstream: containers, env,
volumes by ``name``; ``volumeMounts`` by ``mountPath``; ``ports`` by ``containerPort``...)
merge item by item; other lists are replaced; ``finalizers`` merge as a set; ``None`` deletes a
key; the ``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList`` and ``$setElementOrder``
directives are honoured. It depends on nothing else of the package.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["MERGE_KEYS", "SET_LISTS", "strategic_merge_patch"]

#: list field name -> merge key (strategic merge); other lists are replaced.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "addresses": "type",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}

#: primitive lists merged as sets.
SET_LISTS = frozenset({"finalizers"})


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch and return the result (inputs untouched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _smp_map(out: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(out.get(name), list):
                out[name] = [v for v in out[name] if v not in value]
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(out[key] if isinstance(out.get(key), dict) else {}, value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(key, out.get(key), value)
        else:
            out[key] = value
    if isinstance(retain, list):
        for key in list(out):
            if key not in retain:
                del out[key]
    return out


def _smp_list(name: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    cur = list(current) if isinstance(current, list) else []
    if name in SET_LISTS:
        for v in patch:
            if v not in cur:
                cur.append(v)
        return cur
    key = MERGE_KEYS.get(name)
    if key is None or not all(isinstance(p, dict) for p in patch):
        return [copy.deepcopy(p) for p in patch]
    for item in patch:
        if item.get("$patch") == "delete":
            cur = [c for c in cur if not (isinstance(c, dict) and c.get(key) == item.get(key))]
            continue
        for i, c in enumerate(cur):
            if isinstance(c, dict) and key in item and c.get(key) == item[key]:
                cur[i] = _smp_map(c, item) or {}
                break
        else:
            cur.append(_smp_map({}, item) or {})
    return cur
