"""The kinds the stand-in serves, and the discovery documents built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    """One REST resource (a kind served under a group/version).

    Parameters
    ----------
    group, version, plural, kind
        Where it lives and what it holds (``""``/``v1``/``pods``/``Pod``).
    namespaced
        Whether objects live in a namespace.
    short_names
        kubectl short names (``po``).
    verbs
        Verbs advertised by discovery.
    subresources
        Subresource name -> (kind, verbs).
    stored
        False for virtual kinds (reviews, bindings) that are never stored.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
    stored: bool = True

    @property
    def api_version(self) -> str:
        """``v1`` or ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        """Lower-case kind."""
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """(group, plural): the store's key for this resource."""
        return (self.group, self.plural)

    def __hash__(self) -> int:
        return hash((self.group, self.version, self.plural))


_STATUS = ("get", "patch", "update")
_CORE = "rbac.authorization.k8s.io"


def _scaled(kind: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``status`` and ``scale`` (an ``autoscaling/v1 Scale``) subresources of a workload."""
    return {"status": (kind, _STATUS), "scale": ("Scale", _STATUS)}


#: subresources whose kind lives in another group/version (discovery names it)
SUBRESOURCE_GROUP_VERSIONS = {"token": ("authentication.k8s.io", "v1"), "scale": ("autoscaling", "v1")}

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",),
             ("create", "delete", "get", "list", "patch", "update", "watch"),
             {"status": ("Namespace", _STATUS)}),
    Resource("", "v1", "pods", "Pod", True, ("po",), ALL_VERBS,
             {"status": ("Pod", _STATUS), "log": ("Pod", ("get",)),
              "binding": ("Binding", ("create",))}, ("all",)),
    Resource("", "v1", "bindings", "Binding", True, (), ("create",), stored=False),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("", "v1", "nodes", "Node", False, ("no",), ALL_VERBS, {"status": ("Node", _STATUS)}),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ALL_VERBS,
             {"token": ("TokenRequest", ("create",))}),
    Resource("", "v1", "services", "Service", True, ("svc",),
             ("create", "delete", "get", "list", "patch", "update", "watch"),
             {"status": ("Service", _STATUS)}, ("all",)),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ALL_VERBS,
             _scaled("Deployment"), ("all",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ALL_VERBS,
             _scaled("ReplicaSet"), ("all",)),
    Resource(_CORE, "v1", "roles", "Role", True),
    Resource(_CORE, "v1", "rolebindings", "RoleBinding", True),
    Resource(_CORE, "v1", "clusterroles", "ClusterRole", False),
    Resource(_CORE, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
             False, (), ("create",), stored=False),
    Resource("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview",
             False, (), ("create",), stored=False),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview",
             False, (), ("create",), stored=False),
)

GROUP_VERSIONS: dict[str, list[Resource]] = {}
for _r in RESOURCES:
    GROUP_VERSIONS.setdefault(_r.api_version, []).append(_r)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.group, r.kind): r for r in RESOURCES if r.stored}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    """Find a resource by its URL parts."""
    return _BY_PATH.get((group, version, plural))


def by_kind(group: str, kind: str) -> Resource | None:
    """Find a stored resource by group and kind."""
    return _BY_KIND.get((group, kind))


def by_api_version_kind(api_version: str, kind: str) -> Resource | None:
    """Find a stored resource from an ``apiVersion`` and ``kind`` pair."""
    group = api_version.rpartition("/")[0]
    return by_kind(group, kind)


def resource_list(group_version: str) -> dict[str, Any]:
    """``APIResourceList`` for ``/api/v1`` or ``/apis/<g>/<v>``."""
    out = []
    for r in GROUP_VERSIONS[group_version]:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub, (kind, verbs) in r.subresources.items():
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": list(verbs),
            }
            if sub in SUBRESOURCE_GROUP_VERSIONS:
                sub_group, sub_version = SUBRESOURCE_GROUP_VERSIONS[sub]
                sub_entry.update(group=sub_group, version=sub_version)
            out.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}


def _group_entry(name: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def group_names() -> list[str]:
    """Named API groups (not the core group)."""
    return sorted({r.group for r in RESOURCES if r.group})


def group_list() -> dict[str, Any]:
    """``APIGroupList`` for ``/apis``."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_entry(g) for g in group_names()]}


def group(name: str) -> dict[str, Any] | None:
    """``APIGroup`` for ``/apis/<group>``."""
    if name not in group_names():
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(name)}


def versions(address: str) -> dict[str, Any]:
    """``APIVersions`` for ``/api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }
