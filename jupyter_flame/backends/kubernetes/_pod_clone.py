"""The two halves of :func:`~jupyter_flame.backends.kubernetes.pod_template.build_runner_pod` around the
template: cloning the parent pod, and forcing the runner's own fields. Pure, no I/O; the rules
are documented in :mod:`jupyter_flame.backends.kubernetes.pod_template`.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from jupyter_flame.backends.base import runner_env_for
from jupyter_flame.backends.kubernetes._pod_parts import (
    ANNOTATION_PREFIX,
    LABEL_POOL,
    label_value,
    parse_quantity,
    runner_labels,
)
from jupyter_flame.errors import ConfigError

if TYPE_CHECKING:
    from jupyter_flame.backends.kubernetes.template import RunnerPodTemplate

__all__ = ["clone_parent", "find_app_container", "force_fields", "generate_name"]

_POD_FIELDS = (
    "tolerations", "nodeSelector", "affinity", "imagePullSecrets", "securityContext",
    "priorityClassName", "runtimeClassName", "schedulerName", "dnsPolicy", "dnsConfig",
    "hostAliases", "enableServiceLinks", "os",
)
_CONTAINER_FIELDS = ("image", "imagePullPolicy", "envFrom", "workingDir")
_SERVER_METADATA = (
    "name", "uid", "resourceVersion", "creationTimestamp", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "finalizers",
)
_FORCED_DROPS = (
    "nodeName", "hostname", "subdomain", "ephemeralContainers", "priority", "overhead",
    "serviceAccount",  # deprecated alias of serviceAccountName
)
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_TOKEN_DIRS = ("/var/run/secrets/kubernetes.io/serviceaccount",)
_SHARED_MODES = {"ReadWriteMany", "ReadOnlyMany"}
_JUPYTER = re.compile(
    r"(?:^|[\s/])(?:jupyter[\w.-]*|start-notebook\.(?:sh|py)|start-singleuser\.(?:sh|py))(?:\s|$)"
)
_APP_NAMES = ("notebook", "jupyter", "jupyterlab", "singleuser")


def find_app_container(parent: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The parent's app container: ``name``, else the one running a Jupyter server, else the
    one named ``notebook`` (or ``jupyter``...), else the first.

    Raises
    ------
    ConfigError
        The pod has no containers, or none is called ``name``.
    """
    containers: list[dict[str, Any]] = (parent.get("spec") or {}).get("containers") or []
    pod = (parent.get("metadata") or {}).get("name", "?")
    if not containers:
        raise ConfigError(f"the notebook pod {pod} has no containers to clone", pod=pod)
    if name is not None:
        for container in containers:
            if container.get("name") == name:
                return container
        names = ", ".join(repr(c.get("name")) for c in containers)
        raise ConfigError(
            f"app_container_name={name!r}: pod {pod} has no such container (it has {names}); "
            "set KubernetesBackend(app_container_name=...) to one of these",
            pod=pod,
        )
    for container in containers:
        words = [*(container.get("command") or []), *(container.get("args") or [])]
        if any(_JUPYTER.search(str(word)) for word in words):
            return container
    for container in containers:
        if container.get("name") in _APP_NAMES:
            return container
    return containers[0]


def generate_name(parent_name: str) -> str:
    """``<parent>-flame-``, the parent's name cut so the generated name stays <= 63 chars."""
    return parent_name[:51].rstrip("-.") + "-flame-"


def _env_stripped(name: str, patterns: Iterable[str]) -> bool:
    return name.startswith("JUPYTER_FLAME_") or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _mount_paths(pod_spec: dict[str, Any]) -> dict[str, list[str]]:
    paths: dict[str, list[str]] = {}
    for container in [*pod_spec.get("containers", []), *pod_spec.get("initContainers", [])]:
        for mount in container.get("volumeMounts") or []:
            paths.setdefault(mount.get("name", ""), []).append(mount.get("mountPath", ""))
    return paths


def token_volumes(pod_spec: dict[str, Any]) -> set[str]:
    """Names of volumes that carry API credentials (service-account tokens)."""
    paths = _mount_paths(pod_spec)
    found = set()
    for volume in pod_spec.get("volumes") or []:
        name = volume.get("name", "")
        sources = (volume.get("projected") or {}).get("sources") or []
        if (
            name.startswith("kube-api-access-")
            or any("serviceAccountToken" in source for source in sources)
            or any(p.startswith(_TOKEN_DIRS) for p in paths.get(name, []))
        ):
            found.add(name)
    return found


def _harden(container_sc: dict[str, Any] | None, pod_sc: dict[str, Any] | None) -> dict[str, Any]:
    sc = copy.deepcopy(container_sc or {})
    pod_sc = pod_sc or {}
    if sc.get("privileged"):
        return sc
    sc.setdefault("allowPrivilegeEscalation", False)
    if "seccompProfile" not in sc and "seccompProfile" not in pod_sc:
        sc["seccompProfile"] = {"type": "RuntimeDefault"}
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is True or (non_root is None and user is not None and user != 0):
        if non_root is None:
            sc["runAsNonRoot"] = True
        sc.setdefault("capabilities", {"drop": ["ALL"]})
    return sc


def _is_gpu(resource: str) -> bool:
    return "gpu" in resource or resource.startswith("nvidia.com/")


def _clone_resources(resources: dict[str, Any]) -> dict[str, Any]:
    requests = {k: v for k, v in (resources.get("requests") or {}).items() if not _is_gpu(k)}
    limits = {k: v for k, v in (resources.get("limits") or {}).items() if not _is_gpu(k)}
    for key, value in limits.items():
        requests.setdefault(key, value)  # what Kubernetes defaults an unset request to
    if "memory" in requests and "memory" not in limits:
        limits["memory"] = requests["memory"]
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _filter_env(env: list[dict[str, Any]], patterns: Iterable[str], token_dirs: list[str]
                ) -> list[dict[str, Any]]:
    kept = []
    for entry in env:
        value = entry.get("value")
        if _env_stripped(entry.get("name", ""), patterns):
            continue
        if isinstance(value, str) and any(value.startswith(d) for d in token_dirs):
            continue
        kept.append(copy.deepcopy(entry))
    return kept


def clone_parent(
    parent: dict[str, Any],
    app: dict[str, Any],
    tpl: RunnerPodTemplate,
    pvc_access_modes: dict[str, list[str]],
) -> dict[str, Any]:
    """Step 1: the runner pod cloned from ``parent`` (its ``app`` container), before the
    template."""
    pspec = parent.get("spec") or {}
    tokens = token_volumes(pspec)
    paths = _mount_paths(pspec)
    token_dirs = [p for name in tokens for p in paths.get(name, [])]
    init = copy.deepcopy(pspec.get("initContainers") or []) if tpl.copy_init_containers else []
    wanted = {m.get("name") for c in [app, *init] for m in c.get("volumeMounts") or []}

    volumes, skipped = [], []
    for volume in pspec.get("volumes") or []:
        name = volume.get("name")
        if name not in wanted or name in tokens:
            continue
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and not tpl.copy_rwo_volumes:
            modes = pvc_access_modes.get(claim)
            if not modes or not _SHARED_MODES & set(modes):
                why = "/".join(modes) if modes else "access modes unknown"
                skipped.append(f"{name} (claim {claim}: {why})")
                continue
        volumes.append(copy.deepcopy(volume))
    kept = {v["name"] for v in volumes}

    def mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
        return [copy.deepcopy(m) for m in container.get("volumeMounts") or []
                if m.get("name") in kept]

    runner: dict[str, Any] = {"name": "runner"}
    for key in _CONTAINER_FIELDS:
        if key in app and (key != "envFrom" or tpl.copy_parent_env):
            runner[key] = copy.deepcopy(app[key])
    if tpl.copy_parent_env:
        runner["env"] = _filter_env(app.get("env") or [], tpl.strip_env, token_dirs)
    runner["securityContext"] = _harden(app.get("securityContext"), pspec.get("securityContext"))
    runner["resources"] = _clone_resources(app.get("resources") or {})
    runner["volumeMounts"] = mounts(app)
    runner["terminationMessagePolicy"] = "FallbackToLogsOnError"
    for key in ("env", "volumeMounts", "resources"):
        if not runner.get(key):
            runner.pop(key, None)

    spec: dict[str, Any] = {k: copy.deepcopy(pspec[k]) for k in _POD_FIELDS if k in pspec}
    spec["containers"] = [runner]
    for container in init:
        container["volumeMounts"] = mounts(container)
        container["env"] = _filter_env(container.get("env") or [], tpl.strip_env, token_dirs)
        for key in ("env", "volumeMounts"):
            if not container[key]:
                del container[key]
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    annotations = {}
    if skipped:
        annotations[ANNOTATION_PREFIX + "skipped-volumes"] = ", ".join(skipped)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": annotations},
            "spec": spec}


def _check_resources(container: dict[str, Any]) -> None:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for key in set(requests) & set(limits):
        request = parse_quantity(requests[key], f"requests[{key!r}]")
        limit = parse_quantity(limits[key], f"limits[{key!r}]")
        if limit < request:
            raise ConfigError(
                f"runner resources: {key} request {requests[key]} is above its limit "
                f"{limits[key]}; give limits={{{key!r}: ...}} at least the request, or drop "
                "the limit"
            )


def force_fields(
    pod: dict[str, Any],
    parent: dict[str, Any],
    *,
    python: str,
    pool: str,
    runner_id: str,
    kernel_id: str,
    secret_name: str,
    secret_key: str,
    parent_address: tuple[str, int],
    omit_owner_reference: bool,
    boot_timeout: float,
    runner_service_account: str,
) -> dict[str, Any]:
    """Step 4: the fields a runner pod must have whatever the template said."""
    pod = copy.deepcopy(pod)
    pmeta = parent.get("metadata") or {}
    pspec = parent.get("spec") or {}
    parent_name = pmeta.get("name")
    if not parent_name:
        raise ConfigError("the notebook pod has no metadata.name; cannot name its runners")
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    pod.pop("status", None)

    meta = pod.setdefault("metadata", {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    meta["generateName"] = generate_name(parent_name)
    meta["namespace"] = pmeta.get("namespace") or "default"
    if omit_owner_reference:
        meta.pop("ownerReferences", None)
    else:
        if not pmeta.get("uid"):
            raise ConfigError(
                f"the notebook pod {parent_name} has no metadata.uid (read it from the API); "
                "or pass omit_owner_reference=True",
                pod=parent_name,
            )
        meta["ownerReferences"] = [{
            "apiVersion": "v1",
            "kind": "Pod",
            "name": parent_name,
            "uid": pmeta["uid"],
            "controller": True,
        }]
    ours = runner_labels(pool=pool, parent=parent_name, kernel_id=kernel_id, runner_id=runner_id)
    parent_labels = pmeta.get("labels") or {}
    labels = {
        k: str(v) for k, v in (meta.get("labels") or {}).items()
        if parent_labels.get(k) != v and not k.startswith(ANNOTATION_PREFIX)
    }
    meta["labels"] = {**labels, **ours}
    host, port = parent_address
    annotations = {**(meta.get("annotations") or {})}
    annotations[ANNOTATION_PREFIX + "parent-address"] = f"{host}:{port}"
    if ours[LABEL_POOL] != pool:
        annotations[ANNOTATION_PREFIX + "pool-name"] = pool
    if kernel_id and label_value(kernel_id) != kernel_id:
        annotations[ANNOTATION_PREFIX + "kernel-id"] = kernel_id
    meta["annotations"] = annotations

    spec = pod.setdefault("spec", {})
    spec["restartPolicy"] = "Never"
    spec["automountServiceAccountToken"] = False
    parent_sa = pspec.get("serviceAccountName") or pspec.get("serviceAccount")
    account = spec.get("serviceAccountName")
    if not account or (account == parent_sa and account != runner_service_account):
        spec["serviceAccountName"] = runner_service_account
    for key in _FORCED_DROPS:
        spec.pop(key, None)
    tokens = token_volumes(spec)
    if tokens:
        spec["volumes"] = [v for v in spec.get("volumes", []) if v.get("name") not in tokens]
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            if "volumeMounts" in container:
                container["volumeMounts"] = [
                    m for m in container["volumeMounts"] if m.get("name") not in tokens
                ]

    containers = spec.get("containers") or []
    runners = [c for c in containers if c.get("name") == "runner"]
    if not runners:
        raise ConfigError("the pod template removed the 'runner' container; keep it")
    runner = runners[0]
    spec["containers"] = [runner, *(c for c in containers if c is not runner)]
    runner["command"] = [python, "-m", "jupyter_flame.runner"]
    runner.pop("args", None)
    for probe in _PROBES:
        runner.pop(probe, None)
    values = runner_env_for(pool, runner_id, parent_address, boot_timeout)
    env = [e for e in runner.get("env") or [] if not e.get("name", "").startswith("JUPYTER_FLAME_")]
    env += [{"name": k, "value": v} for k, v in values.items()]
    env.append({
        "name": "JUPYTER_FLAME_KEY",
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}},
    })
    runner["env"] = env
    _check_resources(runner)
    return pod
