"""Service-account tokens and RBAC on the stand-in API server (official client and kubectl)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from jupyter_flame.sim.apiserver.launch import ApiServerProcess

pytestmark = pytest.mark.sim

ROLE_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]


@pytest.fixture(scope="module")
def flame_sa(apiserver: ApiServerProcess, kube: client.ApiClient) -> dict[str, Any]:
    """Namespace ``ns`` with SA ``flame`` bound to the jupyter-flame Role, and its token."""
    ns = f"r-{uuid.uuid4().hex[:6]}"
    v1, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    v1.create_namespace({"metadata": {"name": ns}})
    v1.create_namespaced_service_account(ns, {"metadata": {"name": "flame"}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "flame"}, "rules": ROLE_RULES})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "flame"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flame"},
        "subjects": [{"kind": "ServiceAccount", "name": "flame", "namespace": ns}]})
    tr = v1.create_namespaced_service_account_token("flame", ns, {"spec": {"expirationSeconds": 3600}})
    assert tr.status.token and tr.status.expiration_timestamp
    token = tr.status.token
    kubeconfig = apiserver.write_kubeconfig(apiserver.state_dir / "flame.kubeconfig", token=token, namespace=ns)
    return {"ns": ns, "token": token, "kubeconfig": kubeconfig}


def test_role_allows_and_forbids(apiserver: ApiServerProcess, flame_sa: dict[str, Any]) -> None:
    ns = flame_sa["ns"]
    api = client.ApiClient(apiserver.client_configuration(flame_sa["token"]))
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert [p.metadata.name for p in v1.list_namespaced_pod(ns).items] == ["p"]
    v1.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"a": "b"}}})
    v1.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    v1.read_namespaced_secret("s", ns)
    with pytest.raises(ApiException) as err:
        v1.list_namespaced_secret(ns)
    assert err.value.status == 403
    assert json.loads(err.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'secrets is forbidden: User "system:serviceaccount:{ns}:flame" cannot list resource '
                   f'"secrets" in API group "" in the namespace "{ns}"',
        "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403}
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_pod("p", ns, v1.read_namespaced_pod("p", ns))
    assert json.loads(err.value.body)["message"] == (
        f'pods "p" is forbidden: User "system:serviceaccount:{ns}:flame" cannot update resource "pods" '
        f'in API group "" in the namespace "{ns}"')
    assert json.loads(err.value.body)["details"] == {"name": "p", "kind": "pods"}
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", {"metadata": {"name": "p"},
                                             "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert json.loads(err.value.body)["message"] == (
        f'pods is forbidden: User "system:serviceaccount:{ns}:flame" cannot create resource "pods" '
        'in API group "" in the namespace "default"')
    with pytest.raises(ApiException) as err:
        v1.list_node()
    assert json.loads(err.value.body)["message"].endswith('cannot list resource "nodes" in API group "" at the cluster scope')
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod_status("p", ns, {"status": {"phase": "Running"}})
    assert 'cannot patch resource "pods/status"' in json.loads(err.value.body)["message"]
    v1.delete_namespaced_pod("p", ns)
    api.close()


def test_token_dies_with_its_service_account(apiserver: ApiServerProcess, kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_service_account("default", {"metadata": {"name": "short"}})
    token = v1.create_namespaced_service_account_token("short", "default", {"spec": {}}).status.token
    api = client.ApiClient(apiserver.client_configuration(token))
    review = client.AuthenticationV1Api(api).create_self_subject_review({})
    assert review.status.user_info.username == "system:serviceaccount:default:short"
    v1.delete_namespaced_service_account("short", "default")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_pod("default")
    assert err.value.status == 401
    api.close()


def test_kubectl_auth_can_i(kubectl: Callable[..., Any], flame_sa: dict[str, Any]) -> None:
    ns, kc = flame_sa["ns"], flame_sa["kubeconfig"]
    assert kubectl("auth", "can-i", "create", "pods", kubeconfig=kc).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "get", "pods", "--subresource=log", kubeconfig=kc).stdout.strip() == "yes"
    no = kubectl("auth", "can-i", "list", "secrets", kubeconfig=kc, check=False)
    assert no.returncode == 1 and no.stdout.strip() == "no"
    no = kubectl("auth", "can-i", "create", "pods", "-n", "default", kubeconfig=kc, check=False)
    assert no.stdout.strip() == "no"
    as_sa = kubectl("auth", "can-i", "delete", "secrets", "-n", ns, f"--as=system:serviceaccount:{ns}:flame")
    assert as_sa.stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "create", "nodes").stdout.strip() == "yes"  # admin
    denied = kubectl("get", "secrets", kubeconfig=kc, check=False)
    assert denied.returncode == 1
    assert (f'secrets is forbidden: User "system:serviceaccount:{ns}:flame" cannot list resource "secrets" '
            f'in API group "" in the namespace "{ns}"') in denied.stderr
    token = kubectl("create", "token", "flame", "-n", ns).stdout.strip()
    assert token.count(".") == 2


def test_legacy_token_secret(apiserver: ApiServerProcess, kube: client.ApiClient,
                             flame_sa: dict[str, Any]) -> None:
    ns = flame_sa["ns"]
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_secret(ns, {
        "metadata": {"name": "flame-token", "annotations": {"kubernetes.io/service-account.name": "flame"}},
        "type": "kubernetes.io/service-account-token"})
    secret = v1.read_namespaced_secret("flame-token", ns)
    assert set(secret.data) == {"token", "namespace", "ca.crt"}
    token = base64.b64decode(secret.data["token"]).decode()
    api = client.ApiClient(apiserver.client_configuration(token))
    assert client.CoreV1Api(api).list_namespaced_pod(ns).items is not None
    v1.delete_namespaced_secret("flame-token", ns)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_pod(ns)
    assert err.value.status == 401
    api.close()
