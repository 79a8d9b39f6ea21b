"""``RunnerPodTemplate``: what a runner pod changes relative to its parent (pure data).

:func:`jupyter_flame.backends.kubernetes.pod_template.build_runner_pod` applies it; the module
docstring there gives the precedence of clone, template, cell options and forced fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.backends.kubernetes._pod_parts import (
    dedupe,
    deep_merge,
    format_cpu,
    format_memory,
)
from jupyter_flame.errors import ConfigError

__all__ = ["DEFAULT_RUNNER_SERVICE_ACCOUNT", "DEFAULT_STRIP_ENV", "Quantity", "RunnerPodTemplate"]

#: The service account runner pods use unless told otherwise (created by deploy/rbac.yaml).
DEFAULT_RUNNER_SERVICE_ACCOUNT = "jupyter-flame-runner"

#: Environment variable name patterns (``fnmatch``) never copied from the parent.
DEFAULT_STRIP_ENV: tuple[str, ...] = (
    "JUPYTERHUB_API_TOKEN",
    "JPY_API_TOKEN",
    "JUPYTER_TOKEN",
    "JUPYTERHUB_*TOKEN*",
    "JUPYTERHUB_*SECRET*",
    "JUPYTERHUB_*PASSWORD*",
    "JUPYTERHUB_*KEY*",
)

Quantity = str | int | float


@dataclass
class RunnerPodTemplate:
    """What a runner pod changes relative to its parent (the notebook's pod).

    Parameters
    ----------
    cpu:
        CPU request: a quantity (``"500m"``, ``"2"``) or a number of cores.
    memory:
        Memory request, and limit unless ``limits["memory"]`` is given: a quantity
        (``"24Gi"``) or a number of bytes.
    requests, limits:
        Any other container resources (quantities or plain numbers), e.g.
        ``{"ephemeral-storage": "10Gi"}``.
    gpu:
        Number of ``nvidia.com/gpu`` devices (requests = limits); adds the GPU toleration.
    gpu_type:
        Required ``nvidia.com/gpu.product`` node label value (e.g. ``"NVIDIA-H100-80GB-HBM3"``).
    env:
        Extra environment variables (win over the parent's).
    image, image_pull_policy, image_pull_secrets:
        Image override (default: the app container's), its pull policy, and extra pull secret
        names (appended to the parent's).
    node_selector, tolerations, affinity:
        Placement, merged with the parent's as described in the module docstring.
    volumes:
        ``(claim, mount_path)`` pairs: existing PersistentVolumeClaims to mount.
    labels, annotations:
        Added to the runner pod (our labels win; labels equal to the parent's are dropped).
    service_account:
        The runner's service account (never the notebook's). Its token is never mounted.
    copy_init_containers:
        Copy the parent's init containers (default: no; e.g. JupyterHub's privileged
        ``block-cloud-metadata``).
    copy_rwo_volumes:
        Copy ReadWriteOnce (or unknown) claims too (default: no).
    copy_parent_env:
        Copy the app container's ``env`` (filtered) and ``envFrom`` (default: yes).
    strip_env:
        Name patterns of parent variables not copied (default :data:`DEFAULT_STRIP_ENV`).
    python:
        The interpreter in the image that runs ``-m jupyter_flame.runner`` (default ``python``).
    extra:
        A partial pod manifest deep-merged into the pod after every other field (before the
        forced fields).
    """

    cpu: Quantity | None = None
    memory: Quantity | None = None
    requests: dict[str, Quantity] = field(default_factory=dict)
    limits: dict[str, Quantity] = field(default_factory=dict)
    gpu: int = 0
    gpu_type: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    image_pull_policy: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    volumes: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    service_account: str = DEFAULT_RUNNER_SERVICE_ACCOUNT
    copy_init_containers: bool = False
    copy_rwo_volumes: bool = False
    copy_parent_env: bool = True
    strip_env: tuple[str, ...] = DEFAULT_STRIP_ENV
    python: str = "python"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0:
            raise ConfigError(f"gpu={self.gpu!r} must be a whole number >= 0 (e.g. gpu=1)")
        if self.cpu is not None:
            format_cpu(self.cpu, "cpu")
        if self.memory is not None:
            format_memory(self.memory, "memory")
        for claim, path in self.volumes:
            if not claim or not str(path).startswith("/"):
                raise ConfigError(
                    f"volume {claim}:{path} must be CLAIM:/absolute/path (e.g. data:/mnt/data)"
                )
        for toleration in self.tolerations:
            if not isinstance(toleration, dict):
                raise ConfigError(
                    f"toleration {toleration!r} must be a dict such as "
                    "{'key': 'dedicated', 'operator': 'Exists', 'effect': 'NoSchedule'}"
                )
        if not self.service_account:
            raise ConfigError("service_account must name a ServiceAccount (e.g. "
                              f"{DEFAULT_RUNNER_SERVICE_ACCOUNT!r})")

    @classmethod
    def from_spec(cls, spec: RunnerSpec) -> RunnerPodTemplate:
        """The template that a cell's runner options (``%%flame --gpu ...``) describe."""
        tolerations = []
        for key, value, effect in spec.tolerations:
            toleration: dict[str, Any] = {"key": key}
            if value:
                toleration.update(operator="Equal", value=value)
            else:
                toleration["operator"] = "Exists"
            if effect:
                toleration["effect"] = effect
            tolerations.append(toleration)
        return cls(
            cpu=spec.cpu,
            memory=spec.memory,
            gpu=spec.gpu,
            gpu_type=spec.gpu_type,
            image=spec.image,
            node_selector=dict(spec.node_selector),
            tolerations=tolerations,
            env=dict(spec.env),
            volumes=list(spec.volumes),
        )

    def merge(self, other: RunnerPodTemplate) -> RunnerPodTemplate:
        """A new template: ``other``'s fields that are set win over this one's.

        Scalars are replaced when ``other`` sets them (differ from the default); dicts merge
        (``other`` wins per key); tolerations, pull secrets and ``strip_env`` are appended
        without repeats; volumes are appended (``other`` wins per mount path);
        ``copy_init_containers`` and ``copy_rwo_volumes`` are OR-ed (either template asks) and
        ``copy_parent_env`` is AND-ed (either template can turn it off); ``extra`` is
        deep-merged.
        """
        defaults = RunnerPodTemplate()
        merged: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("copy_init_containers", "copy_rwo_volumes"):
                merged[f.name] = mine or theirs
            elif f.name == "copy_parent_env":
                merged[f.name] = mine and theirs
            elif f.name in ("tolerations", "image_pull_secrets"):
                merged[f.name] = dedupe([*mine, *theirs])
            elif f.name == "strip_env":
                merged[f.name] = tuple(dedupe([*mine, *theirs]))
            elif f.name == "volumes":
                paths = {path for _, path in theirs}
                merged[f.name] = [v for v in mine if v[1] not in paths] + list(theirs)
            elif f.name == "extra":
                merged[f.name] = deep_merge(mine, theirs)
            elif isinstance(mine, dict):
                merged[f.name] = {**mine, **theirs}
            else:
                merged[f.name] = theirs if theirs != getattr(defaults, f.name) else mine
        return replace(self, **merged)

    def with_spec(self, spec: RunnerSpec | None) -> RunnerPodTemplate:
        """This template with a cell's options applied over it (the options win)."""
        return self if spec is None else self.merge(RunnerPodTemplate.from_spec(spec))
