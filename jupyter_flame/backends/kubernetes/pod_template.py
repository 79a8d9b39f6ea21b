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
    deep_merge,
    runner_labels,
)
from jupyter_flame.backends.kubernetes.template import (
    DEFAULT_RUNNER_SERVICE_ACCOUNT,
    DEFAULT_STRIP_ENV,
    RunnerPodTemplate,
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
