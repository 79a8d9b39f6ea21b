"""The upstream Kubernetes object schemas, as the stand-in publishes and enforces them.

The definitions come from the ``kubernetes-validate`` package, which ships the
JSON schemas generated from each Kubernetes release's own OpenAPI document
(``_definitions.json`` keeps the ``x-kubernetes-*`` extensions: group/version/
kind, patch strategies, list types).  We turn them back into the OpenAPI shape
a real API server serves (one ``type``, ``$ref`` into ``#/definitions`` or
``#/components/schemas``, ``Quantity`` and ``IntOrString`` as strings) and keep
only what the served kinds reach.  Nothing here is hand-written schema.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: The Kubernetes release whose API the stand-in claims to be (``/version``, schemas).
KUBE_MAJOR, KUBE_MINOR = 1, 37
KUBE_VERSION = f"v{KUBE_MAJOR}.{KUBE_MINOR}.0"

_STRINGS = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
}
#: Kinds served by every group/version (errors, deletes, watches, discovery).
META_KINDS = ("Status", "DeleteOptions", "WatchEvent", "APIResourceList", "APIGroup", "APIGroupList",
              "APIVersions")


class SchemasUnavailable(RuntimeError):
    """``kubernetes-validate`` is missing or lacks this release's schemas."""


def _schema_dir() -> Path:
    # find_spec locates the package without importing it (its import pulls in jsonschema: ~1 s)
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise SchemasUnavailable(
            "the stand-in publishes the upstream schemas from the kubernetes-validate package, which "
            "is not installed: pip install 'jupyter-flame[sim]' (or 'kubernetes-validate>=1.37')")
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema" / f"{KUBE_VERSION}-local"


def require() -> None:
    """Raise :class:`SchemasUnavailable` now, with the fix, if the schemas cannot be loaded."""
    path = _schema_dir() / "_definitions.json"
    if not path.is_file():
        raise SchemasUnavailable(
            f"kubernetes-validate has no schemas for Kubernetes {KUBE_VERSION} ({path}): "
            "pip install -U 'kubernetes-validate>=1.37'")


@functools.lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    require()
    defs: dict[str, Any] = json.loads((_schema_dir() / "_definitions.json").read_bytes())["$defs"]
    return defs


def _normalize(node: Any, prefix: str) -> Any:
    """One schema node in OpenAPI form (refs under ``prefix``)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            value = types[0] if len(types) == 1 else types
        elif key == "$ref":
            value = prefix + value.rpartition("/")[2]
        elif key == "properties":
            value = {name: _normalize(sub, prefix) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _normalize(value, prefix)
        elif key in ("allOf", "anyOf", "oneOf"):
            value = [_normalize(sub, prefix) for sub in value]
        out[key] = value
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rpartition("/")[2]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def gvks(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The (group, version, kind) triples a definition is registered as."""
    return [(g.get("group", ""), g.get("version", ""), g.get("kind", ""))
            for g in schema.get("x-kubernetes-group-version-kind") or []]


def names_for(kinds: Iterable[tuple[str, str, str]]) -> list[str]:
    """Definition names registered as any of ``kinds`` (group, version, kind)."""
    wanted = set(kinds)
    return sorted(name for name, schema in _raw().items() if wanted & set(gvks(schema)))


def closure(roots: Iterable[str]) -> list[str]:
    """``roots`` and every definition they reference, sorted."""
    raw = _raw()
    seen: set[str] = set()
    todo = [r for r in roots if r in raw]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(ref for ref in _refs(raw[name]) if ref not in seen)
    return sorted(seen)


def definitions(names: Iterable[str], prefix: str) -> dict[str, Any]:
    """The named definitions, normalized, with ``$ref`` under ``prefix``."""
    raw = _raw()
    out = {}
    for name in names:
        schema = raw[name]
        if name in _STRINGS:
            schema = {"description": schema.get("description", ""), **_STRINGS[name]}
        out[name] = _normalize(schema, prefix)
    return out


@functools.cache
def by_gvk(group: str, version: str, kind: str) -> dict[str, Any] | None:
    """The definition of one kind with refs under ``#/definitions/`` (``None`` if unknown)."""
    for name in names_for([(group, version, kind)]):
        found: dict[str, Any] = definitions([name], "#/definitions/")[name]
        return found
    return None


@functools.cache
def definition(name: str) -> dict[str, Any]:
    """One normalized definition by name (refs under ``#/definitions/``)."""
    found: dict[str, Any] = definitions([name], "#/definitions/")[name]
    return found
