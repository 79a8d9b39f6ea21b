"""Node objects the agent registers, and their heartbeat.

Pure: builds the Node JSON (labels, taints, capacity, conditions) from a
:class:`NodeConfig`; the agent sends it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from .._time import rfc3339
from .devices import HOST_IP

__all__ = [
    "NodeConfig",
    "node_object",
    "node_status",
    "GPU_RESOURCE",
    "GPU_PRODUCT_LABEL",
    "EXTERNAL_ANNOTATION",
]

Json = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEFAULT_GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
KUBELET_VERSION = "v1.32.0-jupyter-flame-sim"
#: Pods annotated with this set to ``"true"`` are adopted by the kubelet, not run
#: (``sim up``'s notebook pod). Here, in a light module, so ``sim up`` needs no client.
EXTERNAL_ANNOTATION = "sim.jupyter-flame/external"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class NodeConfig:
    """One simulated node.

    Parameters
    ----------
    name : str
        Node name (also ``kubernetes.io/hostname``).
    cpu, memory : str
        Capacity as Kubernetes quantities (default ``8`` and ``32Gi``).
    pods : int
        Pod capacity (default 110, as a kubelet).
    gpus : int
        ``nvidia.com/gpu`` devices; GPU nodes get the ``nvidia.com/gpu.product``
        label and the ``nvidia.com/gpu:NoSchedule`` taint.
    gpu_product : str
        Value of the product label.
    labels : dict
        Extra labels.
    kubelet_port : int
        ``status.daemonEndpoints.kubeletEndpoint.Port``: where the agent serves the
        kubelet API (``.logserver``), the port it actually bound.
    """

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    gpus: int = 0
    gpu_product: str = DEFAULT_GPU_PRODUCT
    labels: dict[str, str] = field(default_factory=dict)
    kubelet_port: int = 10250


def _resources(cfg: NodeConfig) -> Json:
    res: Json = {
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "pods": str(cfg.pods),
        "ephemeral-storage": "100Gi",
    }
    if cfg.gpus:
        res[GPU_RESOURCE] = str(cfg.gpus)
    return res


def node_status(cfg: NodeConfig, ready: bool = True, since: str | None = None) -> Json:
    """The node's ``status`` with the kubelet's conditions.

    Parameters
    ----------
    cfg : NodeConfig
        The node.
    ready : bool
        ``Ready=True`` (heartbeat) or ``Ready=Unknown`` (agent stopped).
    since : str, optional
        ``lastTransitionTime`` of the conditions (default now).
    """
    stamp = rfc3339()
    since = since or stamp

    def cond(ctype: str, status: str, reason: str, message: str) -> Json:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since,
        }

    conditions = [
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if ready
        else cond("Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
    ]
    return {
        "capacity": _resources(cfg),
        "allocatable": _resources(cfg),
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": cfg.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "architecture": _arch(),
            "operatingSystem": "linux",
            "osImage": "jupyter-flame sim",
            "kernelVersion": platform.release(),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": "sim://1.0",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def node_object(cfg: NodeConfig) -> Json:
    """The Node JSON to create: labels, taints and status."""
    labels = {
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": _arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": _arch(),
        "node.kubernetes.io/instance-type": "jupyter-flame-sim",
        "sim.jupyter-flame/node": "true",
    }
    taints: list[Json] = []
    if cfg.gpus:
        labels[GPU_PRODUCT_LABEL] = cfg.gpu_product
        labels["nvidia.com/gpu.count"] = str(cfg.gpus)
        labels["nvidia.com/gpu.present"] = "true"
        taints.append({"key": GPU_RESOURCE, "effect": "NoSchedule"})
    labels.update(cfg.labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels},
        "spec": {"taints": taints} if taints else {},
        "status": node_status(cfg),
    }
