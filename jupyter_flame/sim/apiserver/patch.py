"""Patch formats the API server accepts (pure functions on JSON values).

* JSON merge patch (RFC 7386, ``application/merge-patch+json``);
* strategic merge patch (``application/strategic-merge-patch+json``): lists merged by key
  (containers and volumes by ``name``, volumeMounts by ``mountPath``, conditions by
  ``type``, ownerReferences by ``uid``...), ``finalizers`` as a set, the ``$patch``,
  ``$retainKeys``, ``$deleteFromPrimitiveList`` and ``$setElementOrder`` directives. The
  table and the code are :mod:`jupyter_flame._strategic_merge`, which the product's pod
  templates use too (one merge, tested on the same cases);
* JSON patch (RFC 6902, ``application/json-patch+json``).
"""

from __future__ import annotations

import copy
from typing import Any

from jupyter_flame._strategic_merge import MERGE_KEYS, SET_LISTS, strategic_merge_patch

__all__ = ["MERGE_KEYS", "SET_LISTS", "PatchError", "json_patch", "merge_patch",
           "strategic_merge_patch"]


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
