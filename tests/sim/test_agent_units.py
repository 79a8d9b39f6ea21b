"""Pure parts of the node agent: env building, images, allocators, pod phase."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest

from jupyter_flame.sim.agent.devices import GpuAllocator, IpAllocator
from jupyter_flame.sim.agent.images import ImageStore, normalize_image
from jupyter_flame.sim.agent.node import NodeConfig, node_object
from jupyter_flame.sim.agent.podenv import ContainerConfigError, build_env, expand, resolve_command
from jupyter_flame.sim.agent.podstatus import ContainerRun, PodRun, pod_phase, pod_status, qos_class

# Pure functions: no stand-in is started, so these run without the `sim` marker.

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "n0", "serviceAccountName": "sa"},
}
SECRETS = {
    ("Secret", "ns", "s"): {"key": "k3y", "other": "o"},
    ("ConfigMap", "ns", "cm"): {"A": "1", "B": "2"},
}


def lookup(kind: str, ns: str, name: str) -> dict[str, str] | None:
    return SECRETS.get((kind, ns, name))


def env_of(*env: dict[str, Any], env_from: list[dict[str, Any]] | None = None) -> dict[str, str]:
    container = {"name": "c", "env": list(env), "envFrom": env_from or []}
    return build_env(
        container, POD, pod_ip="127.0.0.2", host_ip="127.0.0.1", lookup=lookup, base={}
    )


def test_env_values_field_refs_and_expansion() -> None:
    env = env_of(
        {"name": "A", "value": "x"},
        {"name": "B", "value": "$(A)-y-$$(A)"},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
    )
    assert env["B"] == "x-y-$(A)"
    assert (env["IP"], env["NODE"], env["NS"], env["SA"], env["L"]) == (
        "127.0.0.2",
        "n0",
        "ns",
        "sa",
        "x",
    )
    assert env["HOSTNAME"] == "p"


def test_env_secret_and_config_map_refs() -> None:
    env = env_of(
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "B"}}},
        {
            "name": "O",
            "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
        },
        env_from=[{"configMapRef": {"name": "cm"}, "prefix": "P_"}, {"secretRef": {"name": "s"}}],
    )
    assert (env["S"], env["C"], env["P_A"], env["other"]) == ("k3y", "2", "1", "o")
    assert "O" not in env


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"secretKeyRef": {"name": "x", "key": "k"}}, 'secret "x" not found'),
        ({"secretKeyRef": {"name": "s", "key": "k"}}, "couldn't find key k in Secret ns/s"),
        ({"configMapKeyRef": {"name": "y", "key": "k"}}, 'configmap "y" not found'),
    ],
)
def test_env_errors_use_kubelet_wording(ref: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerConfigError) as info:
        env_of({"name": "X", "valueFrom": ref})
    assert str(info.value) == message


def test_secret_data_is_base64_decoded() -> None:
    from jupyter_flame.sim.agent.podenv import decode_secret

    assert decode_secret({"data": {"a": base64.b64encode(b"hi").decode()}}) == {"a": "hi"}


def test_command_resolves_python_and_expands() -> None:
    argv = resolve_command({"command": ["python", "-c"], "args": ["print('$(X)')"]}, {"X": "1"})
    assert argv == [sys.executable, "-c", "print('1')"]
    assert resolve_command({"command": ["python3.11"]}, {})[0] == sys.executable
    assert resolve_command({"command": ["/bin/echo"]}, {}) == ["/bin/echo"]
    with pytest.raises(ContainerConfigError):
        resolve_command({}, {})
    assert expand("$(MISSING)", {}) == "$(MISSING)"


def test_images_allow_list() -> None:
    store = ImageStore(["jupyter-flame/notebook:local", "python:3.11"])
    assert store.pullable("docker.io/library/python:3.11")
    assert not store.pullable("python")
    assert normalize_image("python") == "python:latest"
    assert store.needs_pull(None, "python", present=True)
    assert not store.needs_pull(None, "python:3.11", present=True)
    assert not store.needs_pull("Never", "x", present=False)
    assert 'Failed to pull image "nope:1"' in store.pull_error("nope:1")


def test_ip_allocator_is_deterministic_and_skips_host() -> None:
    ips = IpAllocator()
    assert [ips.allocate(f"p{i}") for i in range(3)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert ips.allocate("p1") == "127.0.0.3"
    ips.release("p1")
    assert ips.allocate("p9") == "127.0.0.3"
    ips.reserve("old", "127.0.0.5")
    assert ips.allocate("new") == "127.0.0.6"
    many = IpAllocator()
    addresses = [many.allocate(str(i)) for i in range(300)]
    assert "127.0.0.255" not in addresses and "127.0.1.0" not in addresses
    assert len(set(addresses)) == 300


def test_gpu_allocator_is_exclusive() -> None:
    gpus = GpuAllocator(4)
    assert gpus.allocate("a", 1) == [0]
    assert gpus.allocate("b", 2) == [1, 2]
    assert gpus.allocate("c", 2) is None
    gpus.release("a")
    assert gpus.allocate("c", 2) == [0, 3]
    assert gpus.free() == 0


def run_with(*states: dict[str, Any], policy: str = "Never", last: bool = False) -> PodRun:
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": []}}
    run = PodRun("u", "ns", "p", "n0", pod, ip="127.0.0.2", host_ip="127.0.0.1", init_done=True)
    for i, s in enumerate(states):
        c = ContainerRun(f"c{i}", "img")
        c.state = s
        if last:
            c.last_state = {"terminated": {"exitCode": 1}}
        run.app.append(c)
    return run


RUNNING = {"running": {"startedAt": "t"}}
OK = {"terminated": {"exitCode": 0}}
BAD = {"terminated": {"exitCode": 2}}
WAIT = {"waiting": {"reason": "ContainerCreating"}}


@pytest.mark.parametrize(
    ("states", "policy", "last", "phase"),
    [
        ([WAIT], "Never", False, "Pending"),
        ([RUNNING], "Never", False, "Running"),
        ([RUNNING, OK], "Never", False, "Running"),
        ([OK, OK], "Never", False, "Succeeded"),
        ([OK, BAD], "Never", False, "Failed"),
        ([OK, BAD], "OnFailure", False, "Running"),
        ([OK], "Always", False, "Running"),
        ([{"waiting": {"reason": "CrashLoopBackOff"}}], "Always", True, "Running"),
    ],
)
def test_pod_phase(states: list[dict[str, Any]], policy: str, last: bool, phase: str) -> None:
    assert pod_phase(run_with(*states, policy=policy, last=last)) == phase


def test_pod_status_conditions() -> None:
    run = run_with(RUNNING)
    run.app[0].ready = True
    status = pod_status(run)
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert status["podIPs"] == [{"ip": "127.0.0.2"}]
    done = pod_status(run_with(OK))
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodCompleted"


def test_qos_class() -> None:
    assert qos_class({"spec": {"containers": [{}]}}) == "BestEffort"
    lim = {"cpu": "1", "memory": "1Gi"}
    assert qos_class({"spec": {"containers": [{"resources": {"limits": lim}}]}}) == "Guaranteed"
    assert qos_class({"spec": {"containers": [{"resources": {"requests": lim}}]}}) == "Burstable"


def test_gpu_node_object() -> None:
    obj = node_object(NodeConfig("g0", gpus=2))
    assert obj["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert obj["spec"]["taints"] == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert obj["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == "g0"
    assert "taints" not in node_object(NodeConfig("c0"))["spec"]
