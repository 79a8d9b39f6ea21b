"""The server's shared state and the requests that are not plain CRUD.

Holds the store, registry, deleter, workload controllers and token authority, seeds a fresh
cluster (system namespaces, default service accounts, bootstrap RBAC), and
implements authentication, authorization, TokenRequest and the review APIs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .._time import rfc3339
from .deletion import Deleter
from .rbac import (
    MASTERS,
    Attributes,
    RbacObjects,
    UserInfo,
    authorize,
    bootstrap_policy,
    forbidden_reason,
    rules_for,
)
from .registry import Registry
from .resources import Resource, by_api_version_kind, lookup
from .status import ApiError, FieldError, forbidden, invalid, not_found, unauthorized
from .store import Change, Store
from .tokens import TokenAuthority, service_account_user
from .workloads import WorkloadControllers

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_SA = ("", "serviceaccounts")


def _res(plural: str, group: str = "") -> Resource:
    r = lookup(group, "v1", plural)
    assert r is not None
    return r


class ServerState:
    """Everything one API server process holds.

    Parameters
    ----------
    state_dir
        Directory for ``apiserver.json`` and the pod log files.
    history_size
        Watch history kept for ``resourceVersion`` resumes (older gives 410).
    admin_token
        Fixed admin token (random if omitted).
    """

    def __init__(self, state_dir: Path, history_size: int = 1000, admin_token: str | None = None) -> None:
        self.state_dir = state_dir
        self.store = Store(history_size)
        self.registry = Registry(self.store)
        self.deleter = Deleter(self.registry)
        #: the deployment and replica-set controllers (kube-controller-manager's, in-process)
        self.workloads = WorkloadControllers(self.registry, self.deleter)
        self.tokens = TokenAuthority(admin_token)
        self.address = ""
        self.store.listeners.append(self._on_change)
        #: audit.k8s.io/v1 Events, one JSON line per resource request (kube-apiserver's
        #: --audit-log-path at level Metadata)
        self.audit_path = state_dir / "audit.log"
        self._audit_file: Any = None
        self._seed()

    def audit(self, attrs: Attributes, code: int, stamp: str) -> None:
        """Record one resource request (who, verb, resource, subresource, namespace, code)."""
        if self._audit_file is None:
            self._audit_file = open(self.audit_path, "a", buffering=1)  # noqa: SIM115
        ref = {"resource": attrs.resource, "namespace": attrs.namespace, "name": attrs.name,
               "apiGroup": attrs.group}
        if attrs.subresource:
            ref["subresource"] = attrs.subresource
        event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                 "stage": "ResponseComplete", "verb": attrs.verb,
                 "user": {"username": attrs.user.name, "groups": list(attrs.user.groups)},
                 "objectRef": ref, "responseStatus": {"code": code},
                 "requestReceivedTimestamp": stamp, "stageTimestamp": rfc3339()}
        self._audit_file.write(json.dumps(event) + "\n")

    def _seed(self) -> None:
        for name in SYSTEM_NAMESPACES:
            self.registry.create(_res("namespaces"), "", {"metadata": {"name": name}})
        for obj in bootstrap_policy():
            res = by_api_version_kind(obj["apiVersion"], obj["kind"])
            assert res is not None
            self.registry.create(res, "", obj)

    def _on_change(self, change: Change) -> None:
        # the service-account controller: every namespace gets a "default" SA
        if change.res == ("", "namespaces") and change.type == "ADDED":
            ns = change.obj["metadata"]["name"]
            if self.store.get(_SA, ns, "default") is None:
                self.registry.create(_res("serviceaccounts"), ns, {"metadata": {"name": "default"}})
        if change.res == ("", "secrets") and change.type == "ADDED":
            self._fill_sa_token_secret(change.obj)

    def _fill_sa_token_secret(self, secret: dict[str, Any]) -> None:
        meta = secret["metadata"]
        sa_name = (meta.get("annotations") or {}).get("kubernetes.io/service-account.name")
        if secret.get("type") != "kubernetes.io/service-account-token" or not sa_name:
            return
        if (secret.get("data") or {}).get("token"):
            return
        sa = self.store.get(_SA, meta["namespace"], sa_name)
        if sa is None:
            return
        import base64

        token, _ = self.tokens.issue(meta["namespace"], sa_name, sa["metadata"]["uid"], None,
                                     bound={"kind": "Secret", "name": meta["name"], "uid": meta["uid"]})
        new = copy.deepcopy(secret)
        new["metadata"].setdefault("annotations", {})["kubernetes.io/service-account.uid"] = sa["metadata"]["uid"]
        new["data"] = {
            "token": base64.b64encode(token.encode()).decode(),
            "namespace": base64.b64encode(meta["namespace"].encode()).decode(),
            "ca.crt": "",
        }
        self.store.replace(("", "secrets"), new)

    # -- authn / authz -----------------------------------------------------
    def authenticate(self, header: str | None) -> UserInfo:
        """Map an ``Authorization`` header to a user; 401 otherwise."""
        if not header or not header.startswith("Bearer "):
            raise unauthorized()
        token = header[len("Bearer "):].strip()
        if token == self.tokens.admin_token:
            return self.tokens.admin()
        claim = self.tokens.verify(token)
        if claim is None:
            raise unauthorized()
        sa = self.store.get(_SA, claim.namespace, claim.name)
        if sa is None or sa["metadata"]["uid"] != claim.uid:
            raise unauthorized()
        if claim.secret is not None:  # legacy token secret: revoked with the secret
            secret = self.store.get(("", "secrets"), claim.namespace, claim.secret)
            if secret is None or secret["metadata"]["uid"] != claim.secret_uid:
                raise unauthorized()
        return service_account_user(claim.namespace, claim.name, claim.uid)

    def rbac_objects(self) -> RbacObjects:
        """A snapshot of the stored RBAC objects."""
        g = "rbac.authorization.k8s.io"
        roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.store.list((g, "roles"))}
        croles = {o["metadata"]["name"]: o for o in self.store.list((g, "clusterroles"))}
        return RbacObjects(roles, croles, self.store.list((g, "rolebindings")),
                           self.store.list((g, "clusterrolebindings")))

    def allowed(self, attrs: Attributes) -> bool:
        """Whether RBAC allows ``attrs``."""
        if MASTERS in attrs.user.groups:  # before the snapshot: authorize() needs none
            return True
        return authorize(attrs, self.rbac_objects())

    def check(self, attrs: Attributes) -> None:
        """Raise the real 403 ``Status`` when ``attrs`` is not allowed."""
        if not self.allowed(attrs):
            raise forbidden(attrs.resource, attrs.name or None, attrs.group, forbidden_reason(attrs))

    # -- special endpoints --------------------------------------------------
    def access_review(self, user: UserInfo, body: dict[str, Any]) -> dict[str, Any]:
        """``SelfSubjectAccessReview``: fill ``status.allowed`` for the caller."""
        spec = body.get("spec") or {}
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            attrs = Attributes(user, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                               ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
        elif nra:
            attrs = Attributes(user, nra.get("verb", ""), path=nra.get("path", ""), resource_request=False)
        else:
            raise invalid("SelfSubjectAccessReview", "", [FieldError(
                "spec.resourceAttributes", "FieldValueRequired",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified")],
                "authorization.k8s.io")
        ok = self.allowed(attrs)
        out: dict[str, Any] = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec,
               "status": {"allowed": ok}}
        if ok and attrs.resource_request and "system:masters" not in user.groups:
            out["status"]["reason"] = "RBAC: allowed"
        return out

    def rules_review(self, user: UserInfo, body: dict[str, Any]) -> dict[str, Any]:
        """``SelfSubjectRulesReview`` (``kubectl auth can-i --list``)."""
        spec = body.get("spec") or {}
        rules = rules_for(user, spec.get("namespace", ""), self.rbac_objects())
        resource_rules = [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in r}
                          for r in rules if "nonResourceURLs" not in r]
        non_resource = [{"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}
                        for r in rules if "nonResourceURLs" in r]
        return {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec,
                "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource,
                           "incomplete": False}}

    def subject_review(self, user: UserInfo) -> dict[str, Any]:
        """``SelfSubjectReview`` (``kubectl auth whoami``)."""
        return {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "status": {"userInfo": user.to_json()}}

    def token_request(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``TokenRequest``: sign a token for service account ``namespace/name``."""
        sa = self.store.get(_SA, namespace, name)
        if sa is None:
            raise not_found("serviceaccounts", name)
        spec = dict(body.get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise invalid("TokenRequest", name, [FieldError(
                "spec.expirationSeconds", "FieldValueInvalid", "may not specify a duration less than 10 minutes",
                seconds, show_value=True)], "authentication.k8s.io")
        spec["expirationSeconds"] = seconds
        spec.setdefault("audiences", ["https://kubernetes.default.svc.cluster.local"])
        token, exp = self.tokens.issue(namespace, name, sa["metadata"]["uid"], seconds, spec["audiences"],
                                       spec.get("boundObjectRef"))
        expires = rfc3339(exp or 0)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": spec, "status": {"token": token, "expirationTimestamp": expires}}


__all__ = ["ApiError", "ServerState"]
