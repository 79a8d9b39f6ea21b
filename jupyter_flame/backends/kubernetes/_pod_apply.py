"""Step 2 and 3 of :func:`~jupyter_flame.backends.kubernetes.pod_template.build_runner_pod`: applying a
:class:`~jupyter_flame.backends.kubernetes.pod_template.RunnerPodTemplate` to the cloned pod. Pure; the
rules are documented in :mod:`jupyter_flame.backends.kubernetes.pod_template`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from jupyter_flame.backends.kubernetes._pod_parts import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TOLERATION,
    dedupe,
    deep_merge,
    dns_label,
    drop_node_label,
    format_cpu,
    format_memory,
    require_node_label,
)
from jupyter_flame.errors import ConfigError

if TYPE_CHECKING:
    from jupyter_flame.backends.kubernetes.template import RunnerPodTemplate

__all__ = ["apply_template"]



def _runner(pod: dict[str, Any]) -> dict[str, Any]:
    for container in pod["spec"]["containers"]:
        if container.get("name") == "runner":
            return container  # type: ignore[no-any-return]
    raise ConfigError("the runner pod has no container named 'runner'")


def _set_env(container: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    env = [e for e in container.get("env", []) if e.get("name") != name]
    env.append(entry)
    container["env"] = env


def apply_template(
    pod: dict[str, Any], tpl: RunnerPodTemplate, *, set_service_account: bool
) -> dict[str, Any]:
    """Apply ``tpl``'s fields to ``pod`` (a clone); returns the new pod. Pure."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    meta = pod.setdefault("metadata", {})
    runner = _runner(pod)
    if tpl.image:
        runner["image"] = tpl.image
    if tpl.image_pull_policy:
        runner["imagePullPolicy"] = tpl.image_pull_policy
    _apply_resources(runner, tpl)
    for name, value in tpl.env.items():
        _set_env(runner, name, {"name": name, "value": str(value)})

    # placement
    if tpl.affinity:
        spec["affinity"] = {**spec.get("affinity", {}), **copy.deepcopy(tpl.affinity)}
    if tpl.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **tpl.node_selector}
        spec["affinity"] = drop_node_label(spec.get("affinity", {}), tpl.node_selector)
    tolerations = [*spec.get("tolerations", []), *copy.deepcopy(tpl.tolerations)]
    if tpl.gpu:
        tolerations.append(dict(GPU_TOLERATION))
    if tolerations:
        spec["tolerations"] = dedupe(tolerations)
    if tpl.gpu_type:
        spec.get("nodeSelector", {}).pop(GPU_PRODUCT_LABEL, None)
        spec["affinity"] = require_node_label(
            spec.get("affinity", {}), GPU_PRODUCT_LABEL, [tpl.gpu_type]
        )
    for key in ("affinity", "nodeSelector"):
        if key in spec and not spec[key]:
            del spec[key]
    if tpl.image_pull_secrets:
        spec["imagePullSecrets"] = dedupe(
            [*spec.get("imagePullSecrets", []), *({"name": s} for s in tpl.image_pull_secrets)]
        )

    _apply_volumes(spec, runner, tpl.volumes)
    if tpl.labels:
        meta["labels"] = {**meta.get("labels", {}), **tpl.labels}
    if tpl.annotations:
        meta["annotations"] = {**meta.get("annotations", {}), **tpl.annotations}
    if set_service_account:
        spec["serviceAccountName"] = tpl.service_account
    if tpl.extra:
        pod = deep_merge(pod, tpl.extra, default_name="runner")
    return pod


def _resource_quantity(key: str, value: Any) -> str:
    """A resource value as a quantity: plain numbers are cores for CPU, bytes for memory-like
    resources and counts otherwise."""
    if key == "cpu":
        return format_cpu(value, "cpu")
    if key in ("memory", "ephemeral-storage") or key.startswith("hugepages-"):
        return format_memory(value, key)
    return format_cpu(value, key)


def _apply_resources(runner: dict[str, Any], tpl: RunnerPodTemplate) -> None:
    resources = runner.setdefault("resources", {})
    requests = dict(resources.get("requests", {}))
    limits = dict(resources.get("limits", {}))
    wanted = {k: _resource_quantity(k, v) for k, v in tpl.requests.items()}
    if tpl.cpu is not None:
        wanted["cpu"] = format_cpu(tpl.cpu, "cpu")
    if tpl.memory is not None:
        wanted["memory"] = format_memory(tpl.memory, "memory")
    for key, value in wanted.items():
        requests[key] = value
        if key in ("cpu", "ephemeral-storage"):
            limits.pop(key, None)  # the parent's limit may be below the new request
        else:
            limits[key] = value  # memory: OOM-kill the runner, not the node; extended: must equal
    for key, given in tpl.limits.items():
        limits[key] = _resource_quantity(key, given)
        requests.setdefault(key, limits[key])
    if tpl.gpu:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(tpl.gpu)
    resources["requests"] = requests
    resources["limits"] = limits
    if not requests:
        del resources["requests"]
    if not limits:
        del resources["limits"]


def _apply_volumes(
    spec: dict[str, Any], runner: dict[str, Any], volumes: list[tuple[str, str]]
) -> None:
    for claim, path in volumes:
        existing = [
            v for v in spec.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == claim
        ]
        if existing:
            name = existing[0]["name"]
        else:
            taken = {v.get("name") for v in spec.get("volumes", [])}
            name = base = dns_label(f"flame-{claim}")
            n = 1
            while name in taken:
                n += 1
                name = dns_label(f"{base}-{n}")
            spec.setdefault("volumes", []).append(
                {"name": name, "persistentVolumeClaim": {"claimName": claim}}
            )
        mounts = [m for m in runner.get("volumeMounts", []) if m.get("mountPath") != path]
        mounts.append({"name": name, "mountPath": path})
        runner["volumeMounts"] = mounts

