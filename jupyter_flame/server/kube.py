"""The server's view of Kubernetes: runner pods of its namespace, by label.

Configured from the server's own environment, the way kernels are (``$KUBECONFIG``, else the
pod's service account), so a server inside a notebook pod sees that pod's runners. Without any
Kubernetes configuration the server shows local runners only. Blocking calls: the caller runs
them in a thread.
"""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client

from jupyter_flame.backends.kubernetes.api import call, in_cluster, load_api_client
from jupyter_flame.backends.kubernetes.cleanup import RunnerPod, list_runner_pods

__all__ = ["Kube", "kube_from_env"]

RUNNER_CONTAINER = "runner"


class Kube:
    """One namespace of one cluster; ``parent`` is the notebook pod the server runs in."""

    def __init__(self, api_client: client.ApiClient, namespace: str,
                 parent: str | None) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.parent = parent

    def runner_pods(self) -> list[RunnerPod]:
        return list_runner_pods(self.core, self.namespace)

    def existing_pods(self, names: set[str]) -> frozenset[str]:
        """Which of the pods ``names`` exist (the runners' notebook pods); the one this server
        runs in is taken as existing without asking."""
        found = {self.parent} & names if self.parent else set()
        for name in sorted(names - found):
            pod = call("get", "pods", self.namespace, self.core.read_namespaced_pod, name,
                       self.namespace, raw=True, missing_ok=True)
            if pod is not None:
                found.add(name)
        return frozenset(found)

    def delete_pod(self, name: str, grace: int = 5) -> bool:
        """Delete runner pod ``name``; ``False`` when it was already gone."""
        gone = call("delete", "pods", self.namespace, self.core.delete_namespaced_pod, name,
                    self.namespace, grace_period_seconds=grace, raw=True, missing_ok=True)
        return gone is not None

    def pod_log(self, name: str, lines: int) -> str | None:
        """The last ``lines`` lines of the runner container's log; ``None``: no such pod."""
        response = call("get", "pods/log", self.namespace, self.core.read_namespaced_pod_log,
                        name, self.namespace, container=RUNNER_CONTAINER, tail_lines=lines,
                        missing_ok=True)
        return None if response is None else str(response)

    def describe(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "parent": self.parent or "",
                "host": self.core.api_client.configuration.host}


def kube_from_env() -> Kube | None:
    """A :class:`Kube` for this process's Kubernetes configuration, or ``None`` without one."""
    if not (os.environ.get("KUBECONFIG") or in_cluster()):
        return None
    api_client, config_namespace = load_api_client()
    namespace = os.environ.get("POD_NAMESPACE") or config_namespace or "default"
    return Kube(api_client, namespace, os.environ.get("POD_NAME") or None)
