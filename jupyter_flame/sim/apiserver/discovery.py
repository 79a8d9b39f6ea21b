"""Aggregated discovery (``apidiscovery.k8s.io/v2``), negotiated as a real API server does (pure).

Since Kubernetes 1.30 ``/api`` and ``/apis`` answer a client that asks for
``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`` with
every group, version and resource in one document (kubectl and client-go ask
for it first, so they need two requests instead of one per group/version);
other clients get the legacy ``APIVersions``/``APIGroupList``.  The documents
are built from :data:`.resources.GROUP_VERSIONS`, like the legacy ones.
"""

from __future__ import annotations

from typing import Any

from .resources import GROUP_VERSIONS, Resource

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_WANTED = {"g": "apidiscovery.k8s.io", "v": "v2", "as": "APIGroupDiscoveryList"}


def wants_aggregated(accept: str | None) -> bool:
    """Whether the best clause of ``accept`` that we can serve is the aggregated v2 form."""
    clauses = []
    for index, part in enumerate((accept or "").split(",")):
        media, *raw = (p.strip() for p in part.split(";"))
        params = dict(p.partition("=")[::2] for p in raw if "=" in p)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            clauses.append((-q, index, media, params))
    for _, _, media, params in sorted(clauses, key=lambda c: (c[0], c[1])):
        if media in ("application/json", "application/*", "*/*") and params == _WANTED:
            return True
        if media in ("application/json", "application/*", "*/*") and not params:
            return False
    return False


def _resource(r: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    subs = []
    for name, (kind, verbs) in r.subresources.items():
        group, version = {"token": ("authentication.k8s.io", "v1"), "scale": ("autoscaling", "v1")}.get(
            name, (r.group, r.version))
        subs.append({"subresource": name, "responseKind": {"group": group, "version": version, "kind": kind},
                     "verbs": list(verbs)})
    if subs:
        entry["subresources"] = subs
    return entry


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"creationTimestamp": None}
    if name:
        meta["name"] = name
    return {"metadata": meta, "versions": [
        {"version": gv.rpartition("/")[2], "resources": [_resource(r) for r in GROUP_VERSIONS[gv]],
         "freshness": "Current"} for gv in versions]}


def aggregated(core: bool) -> dict[str, Any]:
    """``APIGroupDiscoveryList`` for ``/api`` (``core``) or ``/apis``."""
    groups: dict[str, list[str]] = {}
    for gv in GROUP_VERSIONS:
        group = gv.rpartition("/")[0]
        if (group == "") == core:
            groups.setdefault(group, []).append(gv)
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": [_group(name, versions) for name, versions in sorted(groups.items())]}
