"""The Kubernetes backend: runner pods cloned from the notebook's own pod.

``backend`` (:class:`KubernetesBackend`), ``api`` (client configuration and API errors),
``watch`` (pod and event watches), ``runner_pod`` (one booting or running pod), ``cleanup``
(sweeps, Secrets, orphans), ``pod_template`` (the pure parent pod -> runner pod builder, with
``_pod_clone``, ``_pod_apply`` and ``_pod_parts``).
"""

from __future__ import annotations

from jupyter_flame._lazy import lazy_exports

__all__ = ["KubernetesBackend", "RunnerPodTemplate", "build_runner_pod"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "KubernetesBackend": "backend",
    "RunnerPodTemplate": "pod_template",
    "build_runner_pod": "pod_template",
}, globals())
