"""Garbage-collection decisions from ownerReferences (pure, no I/O).

A dependent is garbage when *every* one of its owners is gone (no live object
with the owner's uid, cluster-scoped or in the dependent's own namespace, as
the real collector resolves owners).  Owners being deleted in the foreground keep their
``foregroundDeletion`` finalizer until their blocking dependents are gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Item = tuple[tuple[str, str], dict[str, Any]]


def garbage(items: Iterable[Item]) -> list[Item]:
    """Objects whose owners are all gone (and not already being deleted)."""
    items = list(items)
    where = {obj["metadata"].get("uid"): obj["metadata"].get("namespace") or "" for _, obj in items}
    out = []
    for res, obj in items:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if not refs or meta.get("deletionTimestamp"):
            continue
        ns = meta.get("namespace") or ""
        # an owner only counts when cluster-scoped or in the dependent's namespace
        if all(ref.get("uid") not in where or where[ref["uid"]] not in ("", ns) for ref in refs):
            out.append((res, obj))
    return out


def foreground_dependents(items: Iterable[Item]) -> tuple[list[Item], list[Item]]:
    """Split work for owners deleted in the foreground.

    Returns
    -------
    (to_delete, owners_done)
        Dependents of foreground-deleting owners not yet being deleted, and
        owners whose dependents are all gone (their finalizer can go).
    """
    items = list(items)
    waiting = {
        obj["metadata"]["uid"]: (res, obj)
        for res, obj in items
        if obj["metadata"].get("deletionTimestamp")
        and "foregroundDeletion" in (obj["metadata"].get("finalizers") or [])
    }
    if not waiting:
        return [], []
    to_delete: list[Item] = []
    blocked: set[str] = set()
    for res, obj in items:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid") in waiting:
                blocked.add(ref["uid"])
                if not obj["metadata"].get("deletionTimestamp"):
                    to_delete.append((res, obj))
    done = [pair for uid, pair in waiting.items() if uid not in blocked]
    return to_delete, done
