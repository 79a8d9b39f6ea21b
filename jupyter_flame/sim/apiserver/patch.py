"""Patch formats the API server accepts (pure functions on JSON values).

* JSON merge patch (RFC 7386, ``application/merge-patch+json``);
* strategic merge patch (``application/strategic-merge-patch+json``) for the
  fields we use: lists merged by key (containers and volumes by ``name``,
  conditions by ``type``, ownerReferences by ``uid``...), ``finalizers`` as a
  set, the ``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList`` and
  ``$setElementOrder`` directives;
* JSON patch (RFC 6902, ``application/json-patch+json``).
"""

from __future__ import annotations

import copy
from typing import Any

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


class PatchError(ValueError):
    """A patch that cannot be applied (the server answers 422 or 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch and return the result (inputs untouched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


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


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            try:
                doc = doc[int(p)]
            except (ValueError, IndexError) as exc:
                raise PatchError(f"invalid index {p!r}") from exc
        elif isinstance(doc, dict):
            if p not in doc:
                raise PatchError(f"doc is missing path: {p}")
            doc = doc[p]
        else:
            raise PatchError(f"cannot walk into {p!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError as exc:
                raise PatchError(f"invalid index {last!r}") from exc
            if idx < 0 or idx > len(parent):
                raise PatchError(f"index {idx} out of bounds")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot add at {last!r}")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            return doc, parent.pop(int(last))
        if isinstance(parent, dict):
            return doc, parent.pop(last)
    except (KeyError, ValueError, IndexError) as exc:
        raise PatchError(f"unable to remove nonexistent key: {last}") from exc
    raise PatchError(f"cannot remove {last!r}")


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("each JSON patch operation needs an 'op'")
        kind = op["op"]
        parts = _pointer(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, parts)
        elif kind == "replace":
            doc, _ = _remove(doc, parts) if parts else (doc, None)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            if kind == "move":
                doc, value = _remove(doc, src)
            else:
                value = copy.deepcopy(_walk(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"testing value {op.get('path')} failed")
        else:
            raise PatchError(f"unexpected kind: {kind}")
    return doc
