"""The notebook pod ``sim up`` registers: a pod like a JupyterHub user pod, annotated
``sim.jupyter-flame/external`` so that the agent reports it Running without starting anything
(the "notebook" is the user's own Jupyter server)."""

from __future__ import annotations

from typing import Any

from .agent.node import EXTERNAL_ANNOTATION

__all__ = ["NOTEBOOK_POD", "NOTEBOOK_SA", "notebook_pod"]

NOTEBOOK_POD = "jupyter-flame-notebook-0"
NOTEBOOK_SA = "jupyter-flame-notebook"
Json = dict[str, Any]


def notebook_pod(namespace: str, node: str, image: str) -> Json:
    def field(path: str) -> Json:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": NOTEBOOK_POD,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "jupyter-flame-notebook",
                "app.kubernetes.io/instance": "sim",
                "app.kubernetes.io/component": "notebook",
                "controller-revision-hash": "jupyter-flame-notebook-sim",
                "statefulset.kubernetes.io/pod-name": NOTEBOOK_POD,
            },
            "annotations": {EXTERNAL_ANNOTATION: "true"},
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": NOTEBOOK_SA,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": "notebook",
                    "image": image,
                    "command": ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"],
                    "ports": [{"name": "http", "containerPort": 8888, "protocol": "TCP"}],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                        {"name": "POD_IP", "valueFrom": field("status.podIP")},
                    ],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                }
            ],
        },
    }
