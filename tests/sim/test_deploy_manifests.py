"""deploy/ applied with real kubectl to the stand-in, and a notebook pod made from it running
a %%flame cell, as a user of a cluster would do it.

The notebook container is a real IPython kernel that the stand-in's kubelet runs as the
pod's process: its POD_NAME/POD_NAMESPACE/POD_IP come from the downward API as the kubelet
filled them, it listens on the pod's IP, and it talks to the API with a token of the
``jupyter-flame-notebook`` ServiceAccount bound to its pod (``kubectl create token
--bound-object-kind Pod``, what the kubelet projects on a cluster), so deploy/rbac.yaml is
what authorizes it. Stand-in differences, and only these: the image is swapped for one the
stand-in serves and the command for the kernel (the "edit the image first" step of
deploy/README.md); the token reaches the kernel through a ``KUBECONFIG`` file, since the
stand-in's kubelet mounts no volumes (nor the z2jh ``extraFiles`` Secret: the test reads
the Secret back and hands the kernel its content with ``--config``). NetworkPolicies are
stored and their selectors checked; the stand-in does not enforce them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jupyter_client import BlockingKernelClient
from kernel_harness import Kernel
from sim_harness import MANAGED, Sim

from jupyter_flame.sim.kubeconfig import current_context, kubeconfig_text

pytestmark = [pytest.mark.sim, pytest.mark.kernel, pytest.mark.slow]

Json = dict[str, Any]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "jupyter-flame/notebook:local"  # what the stand-in's registry serves
NOTEBOOK_SA = "jupyter-flame-notebook"


class Kubectl:
    """kubectl as the stand-in's admin, in one namespace."""

    def __init__(self, sim: Sim, namespace: str) -> None:
        binary = "/usr/bin/kubectl" if os.access("/usr/bin/kubectl", os.X_OK) else shutil.which("kubectl")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("kubectl is not installed, and CI must run the kubectl tests")
            pytest.skip("kubectl is not installed")
        self.binary, self.ns, self.sim = binary, namespace, sim
        self.env = dict(os.environ, KUBECONFIG=str(sim.dir / "admin.kubeconfig"), HOME=str(sim.dir))

    def __call__(self, *args: str, input: str | None = None, timeout: float = 90) -> str:
        proc = subprocess.run([self.binary, "-n", self.ns, *args], capture_output=True, text=True,
                              env=self.env, input=input, timeout=timeout)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> Json:
        return dict(json.loads(self("get", *args, "-o", "json")))

    def live_pods(self, selector: str) -> list[Json]:
        return [p for p in self.json("pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]

    def apply_rbac(self) -> str:
        """deploy/rbac.yaml for this namespace, the way deploy/README.md says."""
        text = (DEPLOY / "rbac.yaml").read_text().replace("namespace: default", f"namespace: {self.ns}")
        return self("apply", "-f", "-", input=text)

    def notebook_kubeconfig(self, pod: Json, path: Path) -> None:
        """A token of the notebook ServiceAccount bound to ``pod``, as a kubeconfig at ``path``."""
        meta = pod["metadata"]
        token = self("create", "token", NOTEBOOK_SA, "--bound-object-kind", "Pod", "--bound-object-name",
                     meta["name"], "--bound-object-uid", meta["uid"], "--duration", "2h").strip()
        cur = current_context(self.sim.dir / "admin.kubeconfig")
        path.write_text(kubeconfig_text(cur.server, token, self.ns, cluster=cur.cluster, user=NOTEBOOK_SA))


class PodKernel(Kernel):
    """The kernel a pod's container runs, reached through the connection file it wrote."""

    def __init__(self, connection_file: Path) -> None:  # noqa: D107 - no KernelManager: the pod runs it
        wait_for(f"{connection_file}", lambda: connection_file.exists() and connection_file.stat().st_size, 60)
        self.comm_log = []
        self.kc = BlockingKernelClient(connection_file=str(connection_file))
        self.kc.load_connection_file()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def kernel_container(workdir: Path, config: Path) -> Json:
    """The stand-in's notebook container: a real kernel on the pod's IP, with the deploy/ defaults."""
    return {
        "name": "notebook", "image": IMAGE,
        "command": ["python", "-m", "ipykernel_launcher"],
        "args": ["-f", str(workdir / f"kernel-{uuid.uuid4()}.json"), "--ip=$(POD_IP)", f"--config={config}",
                 "--HistoryManager.enabled=False"],
        "env": [{"name": "KUBECONFIG", "value": str(workdir / "kubeconfig")}],
    }


def connection_file(pod: Json) -> Path:
    args = pod["spec"]["containers"][0]["args"]
    return Path(args[args.index("-f") + 1])


def run_flame_cell(kernel: Kernel, pod: Json, k: Kubectl) -> Json:
    """``%load_ext jupyter_flame`` and a ``%%flame`` cell; returns its runner pod."""
    assert kernel.run("import os").status == "ok"
    env = kernel.value("[os.environ[k] for k in ('POD_NAME', 'POD_NAMESPACE', 'POD_IP')]")
    assert env == [pod["metadata"]["name"], k.ns, pod["status"]["podIP"]]  # the downward API
    res = kernel.run("%load_ext jupyter_flame")
    assert res.status == "ok", res.traceback_text()
    res = kernel.run("%%flame\nimport os\ny = 6 * 7\nos.environ['HOSTNAME']\n", timeout=120)
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("y") == 42
    runner_name = (res.result or "").strip("'")
    [runner] = k.live_pods(MANAGED)
    assert runner["metadata"]["name"] == runner_name
    assert runner_name.startswith(pod["metadata"]["name"] + "-flame-")
    assert [(o["kind"], o["name"], o["uid"]) for o in runner["metadata"]["ownerReferences"]] == [
        ("Pod", pod["metadata"]["name"], pod["metadata"]["uid"])]
    spec = runner["spec"]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("jupyter-flame-runner", False)
    assert [c["image"] for c in spec["containers"]] == [IMAGE]
    assert not set(pod["metadata"]["labels"].items()) & set(runner["metadata"]["labels"].items())
    return runner


def notebook_requests(sim: Sim, namespace: str) -> list[tuple[str, str, int]]:
    """(verb, resource, code) of every request the notebook's ServiceAccount made."""
    user = f"system:serviceaccount:{namespace}:{NOTEBOOK_SA}"
    out = []
    for line in (sim.dir / "audit.log").read_text().splitlines():
        event = json.loads(line)
        if event["user"]["username"] == user:
            ref = event["objectRef"]
            resource = ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")
            out.append((event["verb"], resource, event["responseStatus"]["code"]))
    return out


def shut_down(kernel: Kernel, k: Kubectl) -> int:
    """``%flame shutdown --all``: the runner pods go; returns the kernel's pid."""
    pid = int(kernel.value("os.getpid()"))
    assert kernel.run("%flame shutdown --all").status == "ok"
    wait_for("runner pods gone", lambda: not k.json("pods", "-l", MANAGED)["items"], 30)
    return pid


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_deploy_manifests_make_a_notebook_that_runs_a_flame_cell(sim: Sim, tmp_path: Path) -> None:
    k = Kubectl(sim, "notebooks")
    k("create", "namespace", k.ns)
    assert "rolebinding.rbac.authorization.k8s.io/jupyter-flame created" in k.apply_rbac()
    out = k("apply", "-f", str(DEPLOY / "networkpolicy.yaml"), "-f", str(DEPLOY / "notebook-deployment.yaml"))
    for line in ("networkpolicy.networking.k8s.io/jupyter-flame-notebook-ingress created",
                 "networkpolicy.networking.k8s.io/jupyter-flame-runner-egress created",
                 "deployment.apps/jupyter-notebook created", "service/jupyter-notebook created"):
        assert line in out
    # the example image is not one the stand-in serves: the pod says so, as a cluster would
    selector = "app.kubernetes.io/name=jupyter-notebook"
    first = wait_for("ErrImagePull", lambda: next((p for p in k.live_pods(selector) if any(
        (s.get("state", {}).get("waiting") or {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
        for s in p["status"].get("containerStatuses") or [])), None))
    assert first["spec"]["serviceAccountName"] == NOTEBOOK_SA
    svc = k.json("service", "jupyter-notebook")
    assert svc["spec"]["clusterIP"] and svc["spec"]["ports"][0]["targetPort"] == "http"
    # "edit the image first": one patch makes the container a kernel; the Deployment rolls
    patch = {"spec": {"template": {"spec": {"containers": [
        kernel_container(tmp_path, DEPLOY / "ipython_config.py")]}}}}
    k("patch", "deployment/jupyter-notebook", "-p", json.dumps(patch))
    assert "successfully rolled out" in k("rollout", "status", "deployment/jupyter-notebook", "--timeout=60s")
    assert k("get", "deploy", "jupyter-notebook").splitlines()[1].split()[1:4] == ["1/1", "1", "1"]
    wait_for("the first pod gone", lambda: len(k.live_pods(selector)) == 1)
    [pod] = k.live_pods(selector)
    [rs_ref] = pod["metadata"]["ownerReferences"]
    rs = k.json("rs", rs_ref["name"])
    assert rs["metadata"]["ownerReferences"][0]["name"] == "jupyter-notebook"
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    k.notebook_kubeconfig(pod, tmp_path / "kubeconfig")

    kernel = PodKernel(connection_file(pod))
    runner = run_flame_cell(kernel, pod, k)
    # the ReplicaSet adopts nothing: its selector does not match the runner's labels
    assert k.json("rs", rs_ref["name"])["status"]["replicas"] == 1
    assert runner["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "jupyter-flame"
    # networkpolicy.yaml selects what it says: the notebook pods, and lets runners in
    ingress = k.json("networkpolicy", "jupyter-flame-notebook-ingress")["spec"]
    assert ingress["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    runner_from = ingress["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert runner_from.items() <= runner["metadata"]["labels"].items()
    requests = notebook_requests(sim, k.ns)
    assert ("create", "pods", 201) in requests
    assert all(code < 400 for _, _, code in requests), requests
    pid = shut_down(kernel, k)
    # deleting the Deployment takes its ReplicaSet, the notebook pod and its kernel with it
    k("delete", "deployment", "jupyter-notebook")
    wait_for("the notebook pod gone", lambda: not k.json("pods")["items"] and not k.json("rs")["items"], 40)
    wait_for("the kernel process gone", lambda: gone(pid), 20)
    kernel.kc.stop_channels()


def _z2jh_objects(values: Json, namespace: str, workdir: Path, config: Path) -> list[Json]:
    """The Secret, NetworkPolicy and user pod the chart and KubeSpawner make from ``singleuser``.

    The mapping is the chart's (jupyterhub 4, ``jupyterhub_config.py`` and the
    ``singleuser`` templates): ``serviceAccountName`` -> ``KubeSpawner.service_account``,
    ``extraPodConfig`` merged into the pod spec, ``extraEnv`` -> the container's env,
    ``extraFiles`` -> the ``singleuser`` Secret mounted with ``subPath``, ``networkPolicy``
    -> the ``singleuser`` NetworkPolicy (the chart's own rules plus the values').
    """
    release = {"app": "jupyterhub", "component": "singleuser-server", "release": "jhub"}
    files = values["extraFiles"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "singleuser"}, "type": "Opaque",
              "stringData": {key: f["stringData"] for key, f in files.items()}}
    netpol_values = values["networkPolicy"]
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "singleuser"},
        "spec": {"podSelector": {"matchLabels": release}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {
                     "hub.jupyter.org/network-access-singleuser": "true"}}}],
                              "ports": [{"port": "notebook-port"}]}, *netpol_values["ingress"]],
                 "egress": [*netpol_values["egress"],
                            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]},
    }
    container = kernel_container(workdir, config)
    container["ports"] = [{"name": "notebook-port", "containerPort": 8888}]
    container["env"] = [{"name": "JUPYTERHUB_API_TOKEN", "value": "hub-token-not-for-runners"},
                        {"name": "JUPYTERHUB_USER", "value": "alice"},
                        *[{"name": name, **spec} for name, spec in values["extraEnv"].items()],
                        *container["env"]]
    container["volumeMounts"] = [{"name": "files", "mountPath": f["mountPath"], "subPath": key}
                                 for key, f in files.items()]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "jupyter-alice", "labels": {
            **release, "heritage": "jupyterhub", "hub.jupyter.org/username": "alice",
            "hub.jupyter.org/network-access-hub": "true", "app.kubernetes.io/managed-by": "kubespawner"},
            "annotations": {"hub.jupyter.org/username": "alice"}},
        "spec": {"serviceAccountName": values["serviceAccountName"], **values["extraPodConfig"],
                 "securityContext": {"fsGroup": 100}, "restartPolicy": "OnFailure",
                 "containers": [container],
                 "volumes": [{"name": "files", "secret": {"secretName": "singleuser", "items": [
                     {"key": key, "path": key} for key in files]}}]},
    }
    return [secret, policy, pod]


def test_z2jh_singleuser_values_make_a_user_pod_that_runs_a_flame_cell(sim: Sim, tmp_path: Path) -> None:
    k = Kubectl(sim, "jhub")
    k("create", "namespace", k.ns)
    k.apply_rbac()
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())["singleuser"]
    config = tmp_path / "ipython_config.py"
    secret, policy, pod = _z2jh_objects(values, k.ns, tmp_path, config)
    out = k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, policy]}))
    assert "networkpolicy.networking.k8s.io/singleuser created" in out
    # what the extraFiles mount would show the kernel at /etc/ipython/ipython_config.py
    stored = k.json("secret", "singleuser")["data"]["jupyter-flame-ipython-config"]
    config.write_text(base64.b64decode(stored).decode())
    assert config.read_text() == (DEPLOY / "ipython_config.py").read_text()
    assert "pod/jupyter-alice created" in k("apply", "-f", "-", input=json.dumps(pod))
    k("wait", "--for=condition=Ready", "pod/jupyter-alice", "--timeout=60s")
    live = k.json("pod", "jupyter-alice")
    assert live["spec"]["automountServiceAccountToken"] is True
    k.notebook_kubeconfig(live, tmp_path / "kubeconfig")

    kernel = PodKernel(connection_file(live))
    assert kernel.value("get_ipython().config.KubernetesBackend.app_container_name") == "notebook"
    runner = run_flame_cell(kernel, live, k)
    [container] = runner["spec"]["containers"]
    names = {e["name"] for e in container.get("env") or []}
    assert "JUPYTERHUB_API_TOKEN" not in names and {"POD_NAME", "POD_IP"} <= names
    # the chart's policy isolates the user pod only; runners match the values' ingress rule
    selected = [p["metadata"]["name"] for p in k.live_pods("app=jupyterhub,component=singleuser-server,"
                                                            "release=jhub")]
    assert selected == ["jupyter-alice"]
    allowed = values["networkPolicy"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= runner["metadata"]["labels"].items()
    assert all(code < 400 for _, _, code in notebook_requests(sim, k.ns))
    pid = shut_down(kernel, k)
    k("delete", "pod", "jupyter-alice")
    wait_for("the kernel process gone", lambda: gone(pid), 40)
    kernel.kc.stop_channels()
