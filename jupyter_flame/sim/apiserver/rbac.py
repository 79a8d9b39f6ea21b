"""Role-based access control evaluated from stored RBAC objects (pure).

The rules are those of ``rbac.authorization.k8s.io/v1``: a RoleBinding grants
the rules of its Role (same namespace) or ClusterRole within its namespace; a
ClusterRoleBinding grants a ClusterRole everywhere.  Members of the
``system:masters`` group are allowed everything, as on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user (what ``SelfSubjectReview`` reports)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The ``userInfo`` JSON shape."""
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass(frozen=True)
class Attributes:
    """What a request wants to do (``authorizer.Attributes``)."""

    user: UserInfo
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True


def _subject_matches(subject: dict[str, Any], user: UserInfo, binding_ns: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.name == f"system:serviceaccount:{ns}:{name}"
    return False


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    vals = list(values or [])
    return "*" in vals or wanted in vals


def _resource_matches(rule_resources: list[str], resource: str, sub: str) -> bool:
    full = f"{resource}/{sub}" if sub else resource
    for r in rule_resources:
        if r == "*" or r == full:
            return True
        if sub and r == f"*/{sub}":
            return True
        if not sub and r == resource:
            return True
    return False


def rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    """Whether one PolicyRule covers ``attrs``."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1])):
                return True
        return False
    if not _has(rule.get("apiGroups"), attrs.group):
        return False
    if not _resource_matches(list(rule.get("resources") or []), attrs.resource, attrs.subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def authorize(attrs: Attributes, objects: RbacObjects) -> bool:
    """Whether the stored RBAC objects allow ``attrs``."""
    if MASTERS in attrs.user.groups:
        return True
    for crb in objects.cluster_role_bindings:
        if any(_subject_matches(s, attrs.user, "") for s in crb.get("subjects") or []):
            role = objects.cluster_role(crb.get("roleRef", {}).get("name", ""))
            if role and any(rule_allows(r, attrs) for r in role.get("rules") or []):
                return True
    if not attrs.namespace or not attrs.resource_request:
        return False
    for rb in objects.role_bindings:
        ns = rb["metadata"].get("namespace", "")
        if ns != attrs.namespace:
            continue
        if not any(_subject_matches(s, attrs.user, ns) for s in rb.get("subjects") or []):
            continue
        ref = rb.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            role = objects.cluster_role(ref.get("name", ""))
        else:
            role = objects.role(ns, ref.get("name", ""))
        if role and any(rule_allows(r, attrs) for r in role.get("rules") or []):
            return True
    return False


@dataclass
class RbacObjects:
    """A snapshot of the RBAC objects the authorizer reads."""

    roles: dict[tuple[str, str], dict[str, Any]]
    cluster_roles: dict[str, dict[str, Any]]
    role_bindings: list[dict[str, Any]]
    cluster_role_bindings: list[dict[str, Any]]

    def role(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Role by namespace and name."""
        return self.roles.get((namespace, name))

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        """A ClusterRole by name."""
        return self.cluster_roles.get(name)


def rules_for(user: UserInfo, namespace: str, objects: RbacObjects) -> list[dict[str, Any]]:
    """Every PolicyRule that applies to ``user`` in ``namespace`` (SelfSubjectRulesReview)."""
    if MASTERS in user.groups:
        return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    rules: list[dict[str, Any]] = []
    for crb in objects.cluster_role_bindings:
        if any(_subject_matches(s, user, "") for s in crb.get("subjects") or []):
            role = objects.cluster_role(crb.get("roleRef", {}).get("name", ""))
            rules += list((role or {}).get("rules") or [])
    for rb in objects.role_bindings:
        ns = rb["metadata"].get("namespace", "")
        if ns != namespace or not any(_subject_matches(s, user, ns) for s in rb.get("subjects") or []):
            continue
        ref = rb.get("roleRef") or {}
        role = objects.cluster_role(ref.get("name", "")) if ref.get("kind") == "ClusterRole" else objects.role(ns, ref.get("name", ""))
        rules += list((role or {}).get("rules") or [])
    return rules


def forbidden_reason(attrs: Attributes) -> str:
    """The ``User "x" cannot ...`` text of a 403 (``forbiddenMessage`` upstream)."""
    if not attrs.resource_request:
        return f'User "{attrs.user.name}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    head = f'User "{attrs.user.name}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}"'
    if attrs.namespace:
        return f'{head} in the namespace "{attrs.namespace}"'
    return f"{head} at the cluster scope"


def bootstrap_policy() -> list[dict[str, Any]]:
    """ClusterRoles and bindings every cluster starts with (a useful subset)."""
    rbac = "rbac.authorization.k8s.io/v1"

    def cr(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}

    def crb(name: str, group: str) -> dict[str, Any]:
        return {
            "apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }

    return [
        cr("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]),
        cr("system:discovery", [{
            "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
            "verbs": ["get"],
        }]),
        cr("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
             "verbs": ["create"]},
        ]),
        crb("cluster-admin", MASTERS),
        crb("system:discovery", "system:authenticated"),
        crb("system:basic-user", "system:authenticated"),
    ]
