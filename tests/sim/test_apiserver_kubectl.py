"""kubectl against the stand-in API server: get, get -w, describe, logs, apply, delete."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jupyter_flame.sim.apiserver.launch import ApiServerProcess

pytestmark = pytest.mark.sim

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kc
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: kc
  labels: {app: web}
spec:
  containers:
  - name: main
    image: python:3.11
    command: ["python", "-m", "http.server"]
    env: [{name: A, value: "1"}]
"""


@pytest.fixture(scope="module")
def applied(kubectl: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifests") / "web.yaml"
    path.write_text(MANIFEST)
    out = kubectl("apply", "-f", str(path))
    assert out.stdout.split("\n")[:2] == ["namespace/kc created", "pod/web created"]
    assert "warning" not in out.stderr.lower()
    return path


def test_get_pods_table(kubectl: Callable[..., Any], applied: Path) -> None:
    lines = kubectl("get", "pods", "-n", "kc").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["web", "0/1", "Pending", "0"]
    wide = kubectl("get", "pods", "-n", "kc", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[5:7] == ["IP", "NODE"]
    obj = json.loads(kubectl("get", "pod", "web", "-n", "kc", "-o", "json").stdout)
    assert obj["spec"]["restartPolicy"] == "Always"
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert kubectl("get", "po", "-n", "kc", "-l", "app=nope").stderr.strip() == "No resources found in kc namespace."
    missing = kubectl("get", "pod", "nope", "-n", "kc", check=False)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr
    assert "kc" in kubectl("get", "namespaces").stdout


def test_apply_again_patches(kubectl: Callable[..., Any], applied: Path, kube: client.ApiClient) -> None:
    before = client.CoreV1Api(kube).read_namespaced_pod("web", "kc")
    assert "unchanged" in kubectl("apply", "-f", str(applied)).stdout
    applied.write_text(MANIFEST.replace("{app: web}", "{app: web, tier: front}").replace('value: "1"', 'value: "1"}, {name: B, value: "2"'))
    out = kubectl("apply", "-f", str(applied), check=False)
    # env is immutable on a pod: the real server refuses it too
    assert out.returncode == 1 and "pod updates may not change fields" in out.stderr
    applied.write_text(MANIFEST.replace("{app: web}", "{app: web, tier: front}"))
    assert "pod/web configured" in kubectl("apply", "-f", str(applied)).stdout
    after = client.CoreV1Api(kube).read_namespaced_pod("web", "kc")
    assert after.metadata.labels == {"app": "web", "tier": "front"}
    assert after.metadata.uid == before.metadata.uid


def test_describe_shows_events(kubectl: Callable[..., Any], applied: Path, kube: client.ApiClient) -> None:
    pod = client.CoreV1Api(kube).read_namespaced_pod("web", "kc")
    client.CoreV1Api(kube).create_namespaced_event("kc", {
        "metadata": {"name": "web.1"}, "reason": "FailedScheduling", "type": "Warning",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "kc", "name": "web",
                           "uid": pod.metadata.uid},
        "source": {"component": "default-scheduler"}, "count": 1,
        "firstTimestamp": pod.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": pod.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")})
    out = kubectl("describe", "pod", "web", "-n", "kc").stdout
    assert "Name:             web" in out and "Status:           Pending" in out
    assert "FailedScheduling" in out and "Insufficient nvidia.com/gpu" in out
    events = kubectl("get", "events", "-n", "kc").stdout
    assert "FailedScheduling" in events and "pod/web" in events


def test_logs(kubectl: Callable[..., Any], applied: Path, apiserver: ApiServerProcess) -> None:
    log = apiserver.log_dir / "kc" / "web" / "main.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("hello\nworld\n")
    assert kubectl("logs", "web", "-n", "kc").stdout == "hello\nworld\n"
    assert kubectl("logs", "web", "-n", "kc", "--tail=1").stdout == "world\n"


def test_get_watch(kubectl: Callable[..., Any], applied: Path, kube: client.ApiClient,
                   admin_kubeconfig: Path, kubectl_binary: str) -> None:
    binary = kubectl_binary
    env = dict(os.environ, KUBECONFIG=str(admin_kubeconfig), HOME=str(admin_kubeconfig.parent))
    proc = subprocess.Popen([binary, "get", "pods", "-n", "kc", "-w", "--request-timeout=10s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.0)
        client.CoreV1Api(kube).patch_namespaced_pod_status("web", "kc", {"status": {"phase": "Running"}})
        time.sleep(0.7)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=5)
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:3] == ["NAME", "READY", "STATUS"], (out, err)
    assert [row[2] for row in lines[1:]] == ["Pending", "Running"], (out, err)


def test_delete(kubectl: Callable[..., Any], applied: Path, kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("kc", {"metadata": {"name": "tmp"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert "deleted" in kubectl("delete", "pod", "tmp", "-n", "kc").stdout
    assert [p.metadata.name for p in v1.list_namespaced_pod("kc").items] == ["web"]
    out = kubectl("delete", "-f", str(applied), "--wait=false").stdout
    assert 'namespace "kc" deleted' in out
    for _ in range(50):
        if not any(n.metadata.name == "kc" for n in v1.list_namespace().items):
            break
        time.sleep(0.05)
    assert not any(n.metadata.name == "kc" for n in v1.list_namespace().items)


def test_kubectl_create_generators_and_whoami(kubectl: Callable[..., Any], kube: client.ApiClient) -> None:
    # these kubectl commands post protobuf bodies
    kubectl("create", "namespace", "gen")
    kubectl("create", "secret", "generic", "s1", "--from-literal=a=b", "-n", "gen")
    kubectl("create", "configmap", "c1", "--from-literal=x=y", "-n", "gen")
    kubectl("create", "serviceaccount", "robot", "-n", "gen")
    v1 = client.CoreV1Api(kube)
    assert v1.read_namespaced_secret("s1", "gen").data == {"a": "Yg=="}
    assert v1.read_namespaced_config_map("c1", "gen").data == {"x": "y"}
    assert v1.read_namespaced_service_account("robot", "gen").metadata.uid
    assert "kubernetes-admin" in kubectl("auth", "whoami").stdout
    # delete waits for the object to go (a watch with the watch-list protocol on newer kubectl)
    assert 'secret "s1" deleted' in kubectl("delete", "secret", "s1", "-n", "gen", timeout=15).stdout
    kubectl("delete", "namespace", "gen", timeout=15)
