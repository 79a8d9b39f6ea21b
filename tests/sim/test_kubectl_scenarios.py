"""Stock kubectl, every version on the machine, used against the stand-in as against a real cluster.

Each scenario runs once per kubectl found (:func:`conftest.kubectl_binaries`: the
one ``.ci/run`` installs and the one a minor older it names in
``$JUPYTER_FLAME_KUBECTL_OLDER``, plus the image's ``/usr/bin/kubectl``), with
client-side validation at its default.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

try:
    from .conftest import OLDER_KUBECTL_ENV, kubectl_binaries
except ImportError:
    from conftest import OLDER_KUBECTL_ENV, kubectl_binaries  # type: ignore[no-redef]

pytestmark = pytest.mark.sim

BINARIES = kubectl_binaries()

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_ci_has_two_kubectl_minors() -> None:
    if not os.environ.get("CI"):
        pytest.skip("only CI promises the older kubectl")
    minors = {version.split(".")[1] for version, _ in BINARIES}
    assert len(minors) >= 2, f"CI must run kubectl and one minor older (${OLDER_KUBECTL_ENV}): {BINARIES}"


@pytest.fixture(scope="module", params=BINARIES or [None], ids=[v for v, _ in BINARIES] or ["none"])
def kc(request: pytest.FixtureRequest, admin_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """kubectl of one version, with its own HOME (so its own discovery and OpenAPI caches)."""
    if request.param is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed, and CI must run the kubectl tests")
        pytest.skip("kubectl is not installed")
    _, binary = request.param
    home = tmp_path_factory.mktemp("home")

    def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 60,
            kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or admin_kubeconfig), HOME=str(home))
        proc = subprocess.run([binary, *args], capture_output=True, text=True, env=env, input=input,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    return run


@pytest.fixture
def space(kc: Run, request: pytest.FixtureRequest) -> str:
    """A namespace of this test and kubectl version."""
    name = "k" + str(abs(hash(request.node.nodeid)) % 10**8)
    kc("create", "namespace", name)
    return name


def _multi(ns: str) -> str:
    return f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{mode: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{token: abc}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  containers:
  - name: main
    image: python:3.11
    ports: [{{containerPort: 8000}}]
"""


def _list(ns: str, extra: str = "") -> str:
    return f"""\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: one, namespace: {ns}}}
  data: {{a: "1"}}
- apiVersion: v1
  kind: ServiceAccount
  metadata: {{name: two, namespace: {ns}}}
{extra}"""


def test_discovery_is_aggregated(kc: Run) -> None:
    # a fresh HOME: no discovery cache, so kubectl asks the server; with aggregated discovery that is
    # /api and /apis only (the legacy form costs one request per group/version)
    out = kc("api-resources", "-v=6")
    gets = [line for line in out.stderr.splitlines() if "GET" in line and "https://" in line]
    paths = {line.split("https://", 1)[1].split("/", 1)[1].split("?")[0] for line in gets}
    assert paths == {"api", "apis"}, gets
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert ["pods", "po", "v1", "true", "Pod"] in rows


def test_create_and_apply_multi_document(kc: Run, space: str) -> None:
    out = kc("create", "-f", "-", input=_multi(space))
    assert out.stdout.splitlines() == ["configmap/settings created", "secret/creds created", "pod/web created"]
    assert out.stderr == ""
    again = kc("apply", "-f", "-", input=_multi(space))
    assert again.stdout.splitlines() == ["configmap/settings configured", "secret/creds configured",
                                         "pod/web configured"]
    # created without last-applied: kubectl warns once per object, as on a real cluster
    assert again.stderr.count("missing the kubectl.kubernetes.io/last-applied-configuration") == 3
    changed = _multi(space).replace("mode: fast", "mode: slow")
    third = kc("apply", "-f", "-", input=changed)
    # stringData is folded into data on the server, so kubectl's three-way diff always finds it
    # missing from the live Secret and sends it again: "configured", as on a real cluster
    assert third.stdout.splitlines() == ["configmap/settings configured", "secret/creds configured",
                                         "pod/web unchanged"]
    assert third.stderr == ""
    data = json.loads(kc("get", "configmap", "settings", "-n", space, "-o", "json").stdout)["data"]
    assert data == {"mode": "slow"}


def test_kind_list(kc: Run, space: str) -> None:
    assert kc("create", "-f", "-", input=_list(space)).stdout.splitlines() == [
        "configmap/one created", "serviceaccount/two created"]
    assert kc("apply", "-f", "-", input=_list(space)).stdout.splitlines() == [
        "configmap/one configured", "serviceaccount/two configured"]
    bad = _list(space).replace("data: {a: \"1\"}", "data: {a: \"1\"}\n  bogus: 3").replace("one", "three")
    out = kc("apply", "-f", "-", input=bad, check=False)
    assert out.returncode == 1
    assert ('error validating data: ValidationError(ConfigMap): unknown field "bogus" in '
            "io.k8s.api.core.v1.ConfigMap") in out.stderr
    assert "three" not in kc("get", "configmaps", "-n", space).stdout


def test_apply_server_side(kc: Run, space: str) -> None:
    out = kc("apply", "--server-side", "-f", "-", input=_multi(space))
    assert out.stdout.splitlines() == ["configmap/settings serverside-applied", "secret/creds serverside-applied",
                                       "pod/web serverside-applied"]
    again = kc("apply", "--server-side", "-f", "-", input=_multi(space).replace("fast", "slow"))
    assert "configmap/settings serverside-applied" in again.stdout
    cm = json.loads(kc("get", "configmap", "settings", "-n", space, "-o", "json", "--show-managed-fields").stdout)
    assert cm["data"] == {"mode": "slow"}
    assert [(m["manager"], m["operation"], m["fieldsV1"]) for m in cm["metadata"]["managedFields"]] == [
        ("kubectl", "Apply", {"f:data": {"f:mode": {}}})]
    unchanged = kc("get", "configmap", "settings", "-n", space, "-o", "jsonpath={.metadata.resourceVersion}")
    kc("apply", "--server-side", "-f", "-", input=_multi(space).replace("fast", "slow"))
    assert kc("get", "configmap", "settings", "-n", space,
              "-o", "jsonpath={.metadata.resourceVersion}").stdout == unchanged.stdout  # a no-op stays one


def test_server_side_apply_conflicts(kc: Run, space: str) -> None:
    kc("create", "-f", "-", input=_multi(space))  # fieldManager kubectl-create owns .data.mode
    out = kc("apply", "--server-side", "-f", "-", input=_multi(space).replace("fast", "slow"), check=False)
    assert out.returncode == 1
    assert ('Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.mode'
            in out.stderr), out.stderr
    same = kc("apply", "--server-side", "-f", "-", input=_multi(space))  # same values: shared, no conflict
    assert "configmap/settings serverside-applied" in same.stdout
    forced = kc("apply", "--server-side", "--force-conflicts", "-f", "-",
                input=_multi(space).replace("mode: fast", "mode: slow, extra: x"))
    assert "configmap/settings serverside-applied" in forced.stdout
    cm = json.loads(kc("get", "configmap", "settings", "-n", space, "-o", "json", "--show-managed-fields").stdout)
    assert cm["data"] == {"mode": "slow", "extra": "x"}
    owned = {m["manager"]: m["fieldsV1"] for m in cm["metadata"]["managedFields"]}
    assert owned["kubectl"] == {"f:data": {"f:extra": {}, "f:mode": {}}}
    assert "f:mode" not in owned.get("kubectl-create", {}).get("f:data", {})
    # a field the manager stops applying, and nobody else owns, is removed
    kc("apply", "--server-side", "-f", "-", input=_multi(space).replace("mode: fast", "mode: slow"))
    data = json.loads(kc("get", "configmap", "settings", "-n", space, "-o", "json").stdout)["data"]
    assert data == {"mode": "slow"}


def test_explain(kc: Run) -> None:
    out = kc("explain", "pod.spec.containers").stdout
    assert "FIELD: containers <[]Container>" in out
    assert "A single application container that you want to run within a pod." in out
    assert "image\t<string>" in out and "resources\t<ResourceRequirements>" in out
    deep = kc("explain", "pod.spec.containers.resources.limits").stdout
    assert "FIELD: limits <map[string]" in deep and "Limits describes the maximum amount" in deep
    v2 = kc("explain", "pod.spec.containers", "--output=plaintext-openapiv2").stdout
    assert "RESOURCE: containers <[]Object>" in v2 and "image\t<string>" in v2
    assert "KIND:       RoleBinding" in kc("explain", "rolebindings.rbac.authorization.k8s.io").stdout
    missing = kc("explain", "pod.spec.nope", check=False)
    assert missing.returncode == 1 and 'field "nope" does not exist' in missing.stderr


def test_strict_server_side_validation(kc: Run, space: str) -> None:
    pod = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: typo, namespace: {space}}}
spec:
  containers:
  - name: main
    image: python:3.11
    imagePullPolice: Always
"""
    out = kc("apply", "-f", "-", input=pod, check=False)
    assert out.returncode == 1
    assert ('Error from server (BadRequest): error when creating "STDIN": Pod in version "v1" cannot be '
            'handled as a Pod: strict decoding error: unknown field "spec.containers[0].imagePullPolice"'
            ) in out.stderr
    warned = kc("create", "-f", "-", "--validate=warn", input=pod)
    assert 'Warning: unknown field "spec.containers[0].imagePullPolice"' in warned.stderr
    stored = json.loads(kc("get", "pod", "typo", "-n", space, "-o", "json").stdout)
    assert "imagePullPolice" not in stored["spec"]["containers"][0]
    bad = kc("create", "configmap", "Bad_Name", "-n", space, check=False)
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in bad.stderr


def test_auth_can_i(kc: Run, space: str) -> None:
    rbac = (Path(__file__).parents[2] / "deploy" / "rbac.yaml").read_text().replace(
        "namespace: default", f"namespace: {space}")
    kc("apply", "-n", space, "-f", "-", input=rbac)
    who = f"--as=system:serviceaccount:{space}:jupyter-flame-notebook"
    assert kc("auth", "can-i", "create", "pods", "-n", space, who).stdout.strip() == "yes"
    assert kc("auth", "can-i", "get", "pods", "--subresource=log", "-n", space, who).stdout.strip() == "yes"
    denied = kc("auth", "can-i", "delete", "nodes", who, check=False)
    assert denied.returncode == 1 and denied.stdout.strip() == "no"
    assert kc("auth", "can-i", "create", "pods", "-n", "default", who, check=False).stdout.strip() == "no"


def _ready_later(kube: client.ApiClient, ns: str, name: str, delay: float) -> threading.Thread:
    def flip() -> None:
        time.sleep(delay)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.CoreV1Api(kube).patch_namespaced_pod_status(name, ns, {"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "main", "image": "python:3.11", "imageID": "", "ready": True,
                                   "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": now}}}]}})

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    return thread


def test_wait_for_ready(kc: Run, space: str, kube: client.ApiClient) -> None:
    kc("create", "-f", "-", input=_multi(space))
    thread = _ready_later(kube, space, "web", 1.5)
    t0 = time.monotonic()
    out = kc("wait", "--for=condition=Ready", "pod/web", "-n", space, "--timeout=30s")
    assert out.stdout.strip() == "pod/web condition met"
    assert time.monotonic() - t0 >= 1.0
    thread.join()
    # no scheduler runs beside this API server: PodScheduled never comes
    never = kc("wait", "--for=condition=PodScheduled", "pod/web", "-n", space, "--timeout=2s", check=False)
    assert never.returncode == 1 and "timed out waiting for the condition" in never.stderr


def test_get_watch(kc: Run, space: str, kube: client.ApiClient, admin_kubeconfig: Path) -> None:
    kc("create", "-f", "-", input=_multi(space))
    proc_out: dict[str, Any] = {}

    def watch() -> None:
        proc_out["run"] = kc("get", "pods", "-n", space, "-w", "--request-timeout=4s", check=False)

    thread = threading.Thread(target=watch)
    thread.start()
    _ready_later(kube, space, "web", 1.5).join()
    thread.join()
    rows = [line.split() for line in proc_out["run"].stdout.splitlines()]
    assert rows[0][:3] == ["NAME", "READY", "STATUS"], proc_out
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("web", "0/1", "Pending"), ("web", "1/1", "Running")]
