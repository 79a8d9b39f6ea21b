"""Runner pods as a pure function of the notebook's own pod.

:func:`build_runner_pod` turns the parent (notebook) pod, as read from the API, into the
manifest of one runner pod. It does no I/O: the Kubernetes backend reads the parent pod (and
the access modes of its claims) and creates what this returns.

Precedence (lowest first; each step overrides the ones before it)
-----------------------------------------------------------------
1. **The clone** of the parent. From the app container: image, ``imagePullPolicy``, ``env``
   (filtered, see below), ``envFrom``, ``workingDir``, ``securityContext`` (hardened, see
   below), ``resources`` (without GPUs) and the mounts of the volumes that are copied. From the
   pod: ``tolerations``, ``nodeSelector``, ``affinity``, ``imagePullSecrets``,
   ``securityContext``, ``priorityClassName``, ``runtimeClassName``, ``schedulerName``,
   ``dnsPolicy``, ``dnsConfig``, ``hostAliases``, ``enableServiceLinks``, ``os``. Nothing
   else is copied: not the parent's labels, annotations, service account, init containers
   or sidecars (unless asked), probes, ports, lifecycle hooks, ``nodeName``, ``hostname``,
   ``subdomain``, ``priority``/``preemptionPolicy`` (admission derives them from the class;
   copying them makes admission reject a changed class), ``overhead``, ``readinessGates``,
   ``topologySpreadConstraints`` (their selectors count the parent's labels, which runners do
   not carry), ``hostNetwork``/``hostPID``/``hostIPC``, ``ephemeralContainers``, ``status``.
2. **The template**: a :class:`RunnerPodTemplate` (its fields, then its ``extra`` deep-merged
   into the pod), *or* a callable ``template(parent_pod) -> dict`` whose result is deep-merged
   over the clone (dicts merge, ``None`` deletes a key, lists of named objects such as
   containers, env, volumes and mounts merge by ``name``, an unnamed container merges into the
   runner container, other lists replace).
3. **The options of the cell** (``spec``, a :class:`~jupyter_flame.backends.base.RunnerSpec`
   from ``%%flame --gpu ... --memory ...``): they win over the template, field by field
   (:meth:`RunnerPodTemplate.merge`).
4. **Forced fields**, applied last, whatever the template or callable said: ``apiVersion: v1``,
   ``kind: Pod``, ``generateName: <parent>-flame-``, the parent's namespace, exactly one
   ownerReference to the parent pod (unless ``omit_owner_reference``), ``restartPolicy:
   Never``, our labels, the runner container first and named ``runner`` running ``python -m
   jupyter_flame.runner`` without probes, the runner environment (the channel key only through
   a ``secretKeyRef``), ``automountServiceAccountToken: false``, no service-account token
   volumes, never the parent's service account, and no server-owned metadata.

Decisions
---------
- **Labels**: only ours (``app.kubernetes.io/managed-by``, ``jupyter-flame/pool``, ``/parent``,
  ``/kernel``, ``/runner``) plus the template's; a label whose key *and* value equal the
  parent's is dropped whatever its source, because the parent's labels are what
  ReplicaSets, StatefulSets and Services select (a runner wearing them gets adopted, killed or
  sent traffic). Values are sanitized (63 chars of ``[A-Za-z0-9._-]``); a value that had to
  change gets a hash suffix and the original goes into an annotation.
- **ownerReference**: ``controller: true`` (no controller can adopt the runner) and no
  ``blockOwnerDeletion``: setting it requires ``update`` on ``pods/finalizers`` of the parent
  under the OwnerReferencesPermissionEnforcement admission plugin, which the notebook's Role
  does not (and should not) grant; garbage collection deletes runners either way.
- **Environment**: the parent's env is copied except the variables matching
  ``RunnerPodTemplate.strip_env`` (by default the hub's and the server's credentials:
  ``JUPYTERHUB_API_TOKEN``, ``JPY_API_TOKEN``, ``JUPYTER_TOKEN`` and any ``JUPYTERHUB_*``
  name containing ``TOKEN``, ``SECRET``, ``PASSWORD`` or ``KEY``), any ``JUPYTER_FLAME_*``
  variable, and variables whose literal value points into a dropped token volume (e.g.
  ``AWS_WEB_IDENTITY_TOKEN_FILE``). Other secrets the user gave their notebook (``HF_TOKEN``
  or ``secretKeyRef`` entries) are kept on purpose: the cell's code needs them on the runner
  as much as in the notebook. Add patterns to ``strip_env`` to drop more.
- **Volumes**: only volumes the app container (and copied init containers) mount. A
  PersistentVolumeClaim is copied only when its access modes include ``ReadWriteMany`` or
  ``ReadOnlyMany``; ``ReadWriteOnce`` claims *and claims whose modes are unknown* are skipped
  unless ``copy_rwo_volumes`` (a runner on another node would hang in ``ContainerCreating``
  on a multi-attach error). Skipped volumes are listed in the annotation
  ``jupyter-flame/skipped-volumes``.
- **Security context**: restricted-profile settings are *filled in where the parent left them
  unset*, never overriding what the parent set: ``allowPrivilegeEscalation: false`` and
  ``seccompProfile: RuntimeDefault`` (unless the pod sets one); when the effective user is
  known to be non-root (``runAsNonRoot: true`` or a non-zero ``runAsUser``) also
  ``runAsNonRoot: true`` and ``capabilities.drop: [ALL]``. A parent that may run as root
  (``runAsUser: 0``, or neither field set) keeps its capabilities and gets no
  ``runAsNonRoot`` (which would stop a root image with ``CreateContainerConfigError``). A
  privileged container's context is copied unchanged.
- **Resources**: requests come from the template (``cpu``/``memory``/``requests``) or else the
  parent's (its limits where it only set limits). The memory limit equals the memory request
  unless a limit is given (runners are OOM-killed, not the node). A CPU request from the
  template removes the parent's CPU limit (no throttling unless ``limits["cpu"]`` is given).
  GPUs are *never* inherited: ``gpu=N`` sets ``nvidia.com/gpu`` requests and limits to ``N``,
  adds the ``nvidia.com/gpu`` ``NoSchedule`` toleration, and a runner without ``gpu`` takes
  none even when its parent holds one. Plain numbers work as in Teraslice: ``cpu`` in cores
  (``0.5`` -> ``500m``), ``memory`` in bytes (``2**30`` -> ``1Gi``).
- **Placement**: the template's ``node_selector`` is merged over the parent's and removes the
  parent's required node-affinity expressions on the same keys; ``gpu_type`` replaces the
  parent's ``nvidia.com/gpu.product`` selector and is ANDed into every required node-affinity
  term; the template's ``affinity`` replaces the parent's per kind (``nodeAffinity``,
  ``podAffinity``, ``podAntiAffinity``); tolerations and pull secrets are appended, deduplicated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.backends.kubernetes._pod_apply import apply_template
from jupyter_flame.backends.kubernetes._pod_clone import (
    clone_parent,
    find_app_container,
    force_fields,
)
from jupyter_flame.backends.kubernetes._pod_parts import (
    LABEL_KERNEL,
    LABEL_PARENT,
    LABEL_POOL,
    LABEL_RUNNER,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    dedupe,
    deep_merge,
    format_cpu,
    format_memory,
    runner_labels,
)
from jupyter_flame.errors import ConfigError

__all__ = [
    "DEFAULT_RUNNER_SERVICE_ACCOUNT",
    "LABEL_KERNEL",
    "LABEL_PARENT",
    "LABEL_POOL",
    "LABEL_RUNNER",
    "MANAGED_BY",
    "MANAGED_BY_VALUE",
    "DEFAULT_STRIP_ENV",
    "RunnerPodTemplate",
    "build_runner_pod",
    "find_app_container",
    "runner_labels",
]

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


PodTemplateCallable = Callable[[dict[str, Any]], dict[str, Any]]


def build_runner_pod(
    parent: dict[str, Any],
    *,
    template: RunnerPodTemplate | PodTemplateCallable | None,
    pool: str,
    runner_id: str,
    kernel_id: str,
    secret_name: str,
    secret_key: str = "key",
    parent_address: tuple[str, int],
    app_container_name: str | None = None,
    omit_owner_reference: bool = False,
    boot_timeout: float = 30.0,
    spec: RunnerSpec | None = None,
    pvc_access_modes: dict[str, list[str]] | None = None,
    service_account: str = DEFAULT_RUNNER_SERVICE_ACCOUNT,
) -> dict[str, Any]:
    """The manifest of one runner pod cloned from ``parent``; see the module docstring.

    Parameters
    ----------
    parent:
        The notebook's pod as a JSON dict (``ApiClient.sanitize_for_serialization`` of the
        client's object, or the raw API JSON). Not modified.
    template:
        A :class:`RunnerPodTemplate`, a callable ``template(parent) -> dict`` (a partial pod
        deep-merged over the clone), or ``None`` (defaults).
    pool, runner_id, kernel_id:
        Identify the runner (labels and environment).
    secret_name, secret_key:
        The per-pool Secret and key holding the channel key (hex).
    parent_address:
        ``(host, port)`` the runner dials.
    app_container_name:
        The parent's container to clone (default: the one running a Jupyter server, else the
        first).
    omit_owner_reference:
        Create no ownerReference (the runner then outlives a deleted notebook pod until
        ``jupyter flame cleanup``).
    boot_timeout:
        Seconds the runner may take to connect (passed in its environment).
    spec:
        The cell's runner options; they win over ``template``.
    pvc_access_modes:
        ``{claim: accessModes}`` of the parent's claims; a claim missing here counts as
        ReadWriteOnce.
    service_account:
        The runners' ServiceAccount when ``template`` is a callable or ``None`` (a
        :class:`RunnerPodTemplate` names its own; a callable's ``spec.serviceAccountName``
        wins over this).

    Returns
    -------
    dict
        A Pod manifest ready for ``create_namespaced_pod``.

    Raises
    ------
    ConfigError
        A bad template value, an unknown ``app_container_name``, requests above limits.
    """
    parent = copy.deepcopy(parent)
    app = find_app_container(parent, app_container_name)
    if template is None or isinstance(template, RunnerPodTemplate):
        tpl = (template or RunnerPodTemplate(service_account=service_account)).with_spec(spec)
        pod = clone_parent(parent, app, tpl, pvc_access_modes or {})
        pod = apply_template(pod, tpl, set_service_account=True)
        runner_sa, python = tpl.service_account, tpl.python
    elif callable(template):
        base = RunnerPodTemplate(service_account=service_account)
        pod = clone_parent(parent, app, base, pvc_access_modes or {})
        pod = apply_template(pod, base, set_service_account=True)
        patch = template(copy.deepcopy(parent))
        if not isinstance(patch, dict):
            raise ConfigError(
                f"the pod template callable {template!r} returned {type(patch).__name__}; "
                "it must return a dict (a partial Pod manifest)"
            )
        pod = deep_merge(pod, patch, default_name="runner")
        if spec is not None:
            pod = apply_template(pod, RunnerPodTemplate.from_spec(spec), set_service_account=False)
        runner_sa, python = base.service_account, base.python
    else:
        raise ConfigError(
            f"template={template!r} must be a RunnerPodTemplate, a callable "
            "template(parent_pod) -> dict, or None"
        )
    return force_fields(
        pod,
        parent,
        python=python,
        pool=pool,
        runner_id=runner_id,
        kernel_id=kernel_id,
        secret_name=secret_name,
        secret_key=secret_key,
        parent_address=parent_address,
        omit_owner_reference=omit_owner_reference,
        boot_timeout=boot_timeout,
        runner_service_account=runner_sa,
    )
