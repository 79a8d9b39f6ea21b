"""What every stored object goes through on its way in (pure but for the request context).

Canonical quantities, a Secret's ``stringData`` folded into ``data``, the
managedFields a write leaves (:mod:`.managed`, for the request in
:mod:`.writes`), and the comparison that tells a no-op write from a change.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from .. import quantity
from .._time import rfc3339
from . import managed, writes
from .status import bad_request


def own(old: dict[str, Any] | None, new: dict[str, Any], subresource: str) -> dict[str, Any]:
    """``new`` with its managedFields after this request's write (see :mod:`.managed`)."""
    request = writes.current()
    if request is None:  # the server's own writes (garbage collection, controllers) keep the record
        return new
    if request.applied is not None and not subresource:
        return managed.apply(old or {}, new, request.applied, request.manager, rfc3339(), request.force)
    managed.record_update(old, new, request.manager, rfc3339(), subresource)
    return new



def strip_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    out["metadata"].pop("managedFields", None)
    return out


def canonical_quantities(obj: dict[str, Any], plural: str) -> None:
    """Store quantities in canonical form (``0.5`` -> ``"500m"``), 400 on garbage."""
    try:
        if plural == "pods":
            spec = obj.get("spec") or {}
            for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
                res = c.get("resources") or {}
                for key in ("requests", "limits"):
                    if key in res:
                        res[key] = quantity.canonical_map(res[key])
            if "overhead" in spec:
                spec["overhead"] = quantity.canonical_map(spec["overhead"])
        elif plural == "nodes":
            status = obj.get("status") or {}
            for key in ("capacity", "allocatable"):
                if key in status:
                    status[key] = quantity.canonical_map(status[key])
    except quantity.QuantityError as exc:
        raise bad_request(f"error decoding request body: {exc}") from exc


def fold_string_data(secret: dict[str, Any]) -> None:
    """Check base64 ``data``; merge ``stringData`` into it as the real server does."""
    for value in (secret.get("data") or {}).values():
        try:
            base64.b64decode(str(value), validate=True)
        except ValueError as exc:
            raise bad_request(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data: {exc}') from exc
    string_data = secret.pop("stringData", None)
    if string_data:
        data = secret.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
