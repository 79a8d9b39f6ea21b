"""Field ownership (``metadata.managedFields``) and server-side apply conflicts (pure).

A real API server records, for every object, which manager set which fields
(``FieldsV1``: ``f:<field>`` for struct and map keys, ``k:{...}`` for items of
lists keyed by ``x-kubernetes-list-map-keys``, ``v:<value>`` for set lists;
atomic lists and scalars are leaves).  An update (create, PUT, any patch but
apply) gives its manager the fields it changed and takes them from the
others; an apply gives its manager exactly the fields of the applied
configuration, fails with 409 when another manager owns one of them with a
different value (unless forced, which takes it), and removes the fields the
manager applied last time but no longer does, when nobody else owns them.
The list semantics come from the upstream schemas (:mod:`.schemas`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from . import schemas
from .status import ApiError, status_body

Path = tuple[str, ...]
#: Fields nobody owns: identity and bookkeeping the server sets.
_UNOWNED_TOP = {"f:apiVersion", "f:kind", "f:status"}
_UNOWNED_META = {"f:name", "f:namespace", "f:uid", "f:resourceVersion", "f:creationTimestamp",
                 "f:generation", "f:managedFields", "f:deletionTimestamp", "f:deletionGracePeriodSeconds",
                 "f:selfLink", "f:generateName"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas.definition(schema["$ref"].rpartition("/")[2])
    return schema


def _key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item}, separators=(",", ":"))


def leaves(obj: Any, schema: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Every owned leaf path of ``obj`` with its value (keyed list items also get a ``.`` leaf)."""
    out: dict[Path, Any] = {}
    schema = _resolve(schema)
    if isinstance(obj, dict) and obj and (schema.get("properties") or schema.get("additionalProperties")
                                          or schema.get("type") == "object"):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for name, value in obj.items():
            elem = "f:" + name
            if not prefix and elem in _UNOWNED_TOP or prefix == ("f:metadata",) and elem in _UNOWNED_META:
                continue
            sub = props.get(name) or (extra if isinstance(extra, dict) else {})
            out.update(leaves(value, sub, (*prefix, elem)))
        return out
    if isinstance(obj, list) and obj:
        kind = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or (
            [schema["x-kubernetes-patch-merge-key"]] if schema.get("x-kubernetes-patch-merge-key") else None)
        items = schema.get("items") or {}
        if keys and kind != "atomic" and all(isinstance(i, dict) for i in obj):
            for item in obj:
                path = (*prefix, _key(item, keys))
                here: Path = (*path, ".")
                out[here] = None
                out.update(leaves(item, items, path))
            return out
        if kind == "set":
            for item in obj:
                member: Path = (*prefix, "v:" + json.dumps(item, separators=(",", ":")))
                out[member] = item
            return out
    out[prefix] = obj
    return out


def to_fields_v1(paths: set[Path] | list[Path]) -> dict[str, Any]:
    """The ``fieldsV1`` tree of a set of leaf paths."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for elem in path:
            node = node.setdefault(elem, {})
    return root


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    """Leaf paths of a ``fieldsV1`` tree."""
    out: set[Path] = set()
    for elem, sub in tree.items():
        path = (*prefix, elem)
        if isinstance(sub, dict) and sub:
            out |= from_fields_v1(sub, path)
        else:
            out.add(path)
    return out


def shown(path: Path) -> str:
    """A path as conflict messages print it: ``.spec.containers[name="main"].image``."""
    out = ""
    for elem in path:
        kind, _, rest = elem.partition(":")
        if elem == ".":
            continue
        if kind == "f":
            out += "." + rest
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
    return out


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(e) for e in (obj.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], now: str,
           subresource: str) -> dict[str, Any]:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
             "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _kind_schema(obj: dict[str, Any]) -> dict[str, Any] | None:
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    return schemas.by_gvk(group, version, str(obj.get("kind", "")))


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, now: str,
                  subresource: str = "") -> None:
    """Set ``new``'s managedFields after a create or an update by ``manager`` (in place)."""
    schema = _kind_schema(new)
    meta = new.setdefault("metadata", {})
    entries = _entries(old or {}) if old is not None else []
    if schema is None:
        meta.pop("managedFields", None)
        return
    before = leaves(old, schema) if old is not None else {}
    after = leaves(new, schema)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    if not changed and old is not None:
        meta["managedFields"] = entries
        return
    kept = []
    mine: set[Path] = set(changed)
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1") or {}) & set(after)
        same = (entry.get("manager"), entry.get("operation"), entry.get("subresource", "")) == (
            manager, "Update", subresource)
        if same:
            mine |= paths
            continue
        paths -= changed
        if paths:
            kept.append({**entry, "fieldsV1": to_fields_v1(paths)})
    kept.append(_entry(manager, "Update", str(new.get("apiVersion")), mine, now, subresource))
    meta["managedFields"] = kept


def conflict(conflicts: list[tuple[str, Path]], api_version: str) -> ApiError:
    """409 ``Apply failed with N conflict(s)`` as a real server words it."""
    by_manager: dict[str, list[Path]] = {}
    for manager, path in conflicts:
        by_manager.setdefault(manager, []).append(path)
    parts = []
    for manager, paths in by_manager.items():
        if len(paths) == 1:
            parts.append(f'conflict with "{manager}" using {api_version}: {shown(paths[0])}')
        else:
            parts.append(f'conflicts with "{manager}" using {api_version}:\n'
                         + "\n".join(f"- {shown(p)}" for p in paths))
    n = len(conflicts)
    message = f"Apply failed with {n} conflict{'s' if n != 1 else ''}: " + "\n".join(parts)
    causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using {api_version}',
               "field": shown(p)} for m, p in conflicts]
    return ApiError(status_body(409, "Conflict", message, {"causes": causes}))


def apply(live: dict[str, Any], merged: dict[str, Any], applied: dict[str, Any], manager: str, now: str,
          force: bool) -> dict[str, Any]:
    """Ownership after ``manager`` applies ``applied`` to ``live`` (``merged``: the merge of the two).

    Returns the object to store, with its managedFields; raises the 409 of
    :func:`conflict` when other managers own applied fields with other values.
    """
    schema = _kind_schema(merged)
    if schema is None:
        return merged
    live_leaves, applied_leaves = leaves(live, schema), leaves(applied, schema)
    mine = set(applied_leaves)
    entries = _entries(live)
    conflicts = []
    for entry in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            continue
        for path in sorted(from_fields_v1(entry.get("fieldsV1") or {}) & mine):
            if path[-1] != "." and live_leaves.get(path) != applied_leaves.get(path):
                conflicts.append((str(entry.get("manager")), path))
    if conflicts and not force:
        raise conflict(conflicts, str(merged.get("apiVersion")))
    forced = {p for _, p in conflicts}
    previous: set[Path] = set()
    kept = []
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            previous = paths
            if paths == mine:
                now = str(entry.get("time") or now)  # nothing changed hands: a no-op apply stays one
            continue
        paths -= forced
        if paths:
            kept.append({**entry, "fieldsV1": to_fields_v1(paths)})
    others = set().union(*(from_fields_v1(e["fieldsV1"]) for e in kept)) if kept else set()
    out = copy.deepcopy(merged)
    for path in sorted(previous - mine - others, key=len, reverse=True):
        _remove(out, path)
    kept.append(_entry(manager, "Apply", str(merged.get("apiVersion")), mine, now, ""))
    out.setdefault("metadata", {})["managedFields"] = kept
    return out


def _remove(obj: Any, path: Path) -> None:
    """Delete the field or list item at ``path`` (a keyed item when the path ends in its ``.``)."""
    if path and path[-1] == ".":
        path = path[:-1]
    node = obj
    for elem in path[:-1]:
        node = _child(node, elem)
        if node is None:
            return
    last = path[-1] if path else ""
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(node, dict):
        node.pop(rest, None)
    elif kind in ("k", "v") and isinstance(node, list):
        node[:] = [item for item in node if not _matches(item, kind, rest)]


def _matches(item: Any, kind: str, rest: str) -> bool:
    if kind == "v":
        return bool(json.dumps(item, separators=(",", ":")) == rest)
    want = json.loads(rest)
    return isinstance(item, dict) and all(item.get(k) == v for k, v in want.items())


def _child(node: Any, elem: str) -> Any:
    kind, _, rest = elem.partition(":")
    if kind == "f" and isinstance(node, dict):
        return node.get(rest)
    if kind in ("k", "v") and isinstance(node, list):
        return next((item for item in node if _matches(item, kind, rest)), None)
    return None
