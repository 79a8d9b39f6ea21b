"""The Kubernetes backend: runners are pods cloned from the notebook's own pod.

The notebook finds its own pod through the downward API (``POD_NAME``, ``POD_NAMESPACE``,
``POD_IP``) and talks to the API with its service account (in-cluster) or ``KUBECONFIG``. Each
runner is a pod built by :func:`~jupyter_flame.backends.kubernetes.pod_template.build_runner_pod` from the
notebook pod, created in the notebook's namespace, owned by the notebook pod (so Kubernetes
deletes runners when the notebook pod goes) and dialling back to ``POD_IP``.

Keys: each pool's channel key lives in a Secret ``<pod>-flame-<pool>-<kernel>-key`` (type
Opaque, our labels, owned by the notebook pod), created at the pool's first boot and deleted by
:meth:`KubernetesBackend.release_pool` / :meth:`~KubernetesBackend.close`; runner pods read it
through a ``secretKeyRef``, never as a literal. The kernel's id is part of the name so that two
kernels of one notebook pod, each with a ``default`` pool, do not overwrite each other's key.

Events: ``requested`` (boot called), ``scheduling`` (pod created; again with ``reason=
"Unschedulable"`` and the scheduler's message while no node fits: the pool then fails the boot
at ``boot_timeout`` with that message), ``pulling``, ``starting`` (container running), then the
pool's ``connected``/``busy``/``idle``; ``stopping``/``stopped`` on terminate; ``failed`` when
the image cannot be pulled, the container config is wrong, the container exits before
connecting (``reason="exited"``), the pod fails (``Evicted``, ``OOMKilled``...) or is deleted
by someone else. A boot failure resolves ``handle.failed`` at once with a
:class:`~jupyter_flame.errors.BootError` carrying Kubernetes' reason and message and the pod's
log tail, and deletes the pod. Everything is watched (``watch.Watch().stream``), never polled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client
from traitlets import Bool, Callable, Instance, Unicode, Union
from traitlets.config import Config

from jupyter_flame.backends.base import BootRequest, RunnerHandle
from jupyter_flame.backends.kubernetes._pod_parts import (
    LABEL_KERNEL,
    LABEL_PARENT,
    LABEL_POOL,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    label_value,
    selector,
)
from jupyter_flame.backends.kubernetes.api import call, load_api_client, missing_pod_env
from jupyter_flame.backends.kubernetes.cleanup import (
    RunnerPod,
    cleanup_runner_pods,
    list_runner_pods,
    secret_name,
)
from jupyter_flame.backends.kubernetes.live import live_publisher, mark_kernel_process
from jupyter_flame.backends.kubernetes.pod_template import (
    DEFAULT_RUNNER_SERVICE_ACCOUNT,
    PodTemplateCallable,
    RunnerPodTemplate,
    build_runner_pod,
)
from jupyter_flame.backends.kubernetes.runner_pod import PodRunners, Runner
from jupyter_flame.config import given
from jupyter_flame.errors import BackendError, BootError, ConfigError, FlameError

__all__ = ["KubernetesBackend", "RunnerPod", "cleanup_runner_pods", "list_runner_pods"]

log = logging.getLogger(__name__)


@dataclass
class _PoolLock:
    """Serializes the work on one pool's Secret; dropped when nobody holds or awaits it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class KubernetesBackend(PodRunners):
    """Runners as pods cloned from the notebook's own pod.

    Every option is a configurable trait (``c.KubernetesBackend.namespace = "ml"`` in
    ``ipython_config.py``), listed with its help below and in docs/configuration.md; a keyword
    given here wins. ``api_client`` (a ready ``kubernetes.client.ApiClient``) skips the
    kubeconfig.
    """

    name = "kubernetes"
    encrypt_channel = True  # frames cross the pod network

    namespace = Unicode(None, allow_none=True, help=(
        "Where runner pods go. None: $POD_NAMESPACE, else the in-cluster or kubeconfig "
        "namespace. Must be the notebook pod's namespace (owner references cannot cross "
        "namespaces).")).tag(config=True)
    template = Union([Instance(RunnerPodTemplate), Callable()], default_value=None,
                     allow_none=True, help=(
        "A RunnerPodTemplate, or a callable template(parent_pod) -> dict merged over the clone "
        "of the notebook's pod; the cell's options win over it. None: the clone as it is."
    )).tag(config=True)
    app_container_name = Unicode(None, allow_none=True, help=(
        "The notebook pod's container to clone. None: the one running Jupyter.")
    ).tag(config=True)
    omit_owner_reference = Bool(False, help=(
        "Do not make the notebook pod the runners' owner (they then outlive it until "
        "jupyter flame cleanup).")).tag(config=True)
    service_account = Unicode(DEFAULT_RUNNER_SERVICE_ACCOUNT, help=(
        "The runners' ServiceAccount (created by deploy/rbac.yaml); its token is never "
        "mounted. A template's own service_account wins.")).tag(config=True)
    kubeconfig = Unicode(None, allow_none=True, help=(
        "A kubeconfig file. None: $KUBECONFIG, else the in-cluster service account.")
    ).tag(config=True)
    context = Unicode(None, allow_none=True, help="The kubeconfig context. None: its current one."
                      ).tag(config=True)
    pod_name = Unicode(None, allow_none=True, help=(
        "The notebook pod's name. None: $POD_NAME.")).tag(config=True)
    pod_ip = Unicode(None, allow_none=True, help=(
        "The notebook pod's IP, where the kernel listens for runners. None: $POD_IP, else the "
        "pod's status.podIP.")).tag(config=True)
    api_client = Instance(client.ApiClient, allow_none=True, help=(
        "A ready kubernetes.client.ApiClient (custom authentication, tests); skips the "
        "kubeconfig.")).tag(config=True)

    def __init__(
        self,
        namespace: str | None = None,
        template: RunnerPodTemplate | PodTemplateCallable | None = None,
        app_container_name: str | None = None,
        omit_owner_reference: bool | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        pod_name: str | None = None,
        pod_ip: str | None = None,
        *,
        context: str | None = None,
        api_client: client.ApiClient | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(**given(
            namespace=namespace, template=template, app_container_name=app_container_name,
            omit_owner_reference=omit_owner_reference, service_account=service_account,
            kubeconfig=kubeconfig, pod_name=pod_name, pod_ip=pod_ip, context=context,
            api_client=api_client, config=config))
        self.namespace = self.namespace or os.environ.get("POD_NAMESPACE") or None
        self.pod_name = self.pod_name or os.environ.get("POD_NAME") or None
        self.pod_ip = self.pod_ip or os.environ.get("POD_IP") or None
        service_account = self.service_account
        template = self.template
        if template is None:
            template = RunnerPodTemplate(service_account=service_account)
        elif isinstance(template, RunnerPodTemplate):
            if template.service_account == DEFAULT_RUNNER_SERVICE_ACCOUNT:
                template = replace(template, service_account=service_account)
        self.template = template
        self._api = self.api_client
        self._core: client.CoreV1Api | None = None
        self._parent: dict[str, Any] | None = None  # the notebook pod, as the API sent it
        self._claims: dict[str, list[str]] = {}
        self._setup_lock = threading.Lock()
        self._secrets: dict[str, tuple[str, bytes]] = {}
        self._secret_locks: dict[str, _PoolLock] = {}
        self._runners: dict[str, Runner] = {}
        self._closed = False
        self.publisher = live_publisher(self._pod_of)

    def _pod_of(self, runner_id: str) -> tuple[client.CoreV1Api, str, str] | None:
        runner = self._runners.get(runner_id)
        return None if runner is None or not self.namespace else (self.core, self.namespace,
                                                                  runner.name)

    # -- the notebook pod --------------------------------------------------------------------
    @property
    def core(self) -> client.CoreV1Api:
        """The CoreV1 API (configured on first use)."""
        self._setup()
        assert self._core is not None
        return self._core

    def _setup(self) -> dict[str, Any]:
        """Configure the client and read the notebook pod (blocking; once)."""
        with self._setup_lock:
            if self._parent is not None:
                return self._parent
            if self._api is None:
                try:
                    self._api, config_namespace = load_api_client(self.kubeconfig, self.context)
                except ConfigError as exc:
                    if self.pod_name:
                        raise
                    # Neither a cluster nor a pod: say both, with the YAML to add.
                    pod_error = missing_pod_env("its own pod's name (POD_NAME)")
                    raise ConfigError(f"{exc}\n\nAlso: {pod_error}") from exc
                self.namespace = self.namespace or config_namespace
            self._core = client.CoreV1Api(self._api)
            if not self.pod_name:
                raise missing_pod_env("its own pod's name (POD_NAME)")
            if not self.namespace:
                raise missing_pod_env("its own pod's namespace (POD_NAMESPACE)")
            parent = call("get", "pods", self.namespace, self._core.read_namespaced_pod,
                          self.pod_name, self.namespace, raw=True, missing_ok=True)
            if parent is None:
                raise missing_pod_env(
                    f"its own pod: POD_NAME={self.pod_name!r} is not a pod in namespace "
                    f"{self.namespace!r}")
            for volume in (parent.get("spec") or {}).get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    try:
                        pvc = call("get", "persistentvolumeclaims", self.namespace,
                                   self._core.read_namespaced_persistent_volume_claim, claim,
                                   self.namespace, raw=True, missing_ok=True)
                    except BackendError:  # no RBAC for claims: unknown = not copied
                        continue
                    if pvc:
                        modes = (pvc.get("status") or {}).get("accessModes") or (
                            pvc.get("spec") or {}).get("accessModes") or []
                        self._claims[claim] = list(modes)
            self._parent = parent
            return self._parent

    def parent_host(self) -> str:
        """The notebook pod's IP (``pod_ip``, ``$POD_IP``, else ``status.podIP``)."""
        if not self.pod_ip:
            ip = ((self._setup().get("status") or {}).get("podIP")) or None
            if not ip:
                raise missing_pod_env("its pod IP (POD_IP; the pod has no status.podIP yet)")
            self.pod_ip = ip
        return self.pod_ip

    def describe(self) -> str:
        return f"kubernetes ({self.namespace or '?'}/{self.pod_name or '?'})"

    # -- secrets -----------------------------------------------------------------------------
    def _owner(self) -> list[dict[str, Any]]:
        if self.omit_owner_reference or self._parent is None:
            return []
        meta = self._parent["metadata"]
        return [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}]

    @contextlib.asynccontextmanager
    async def _secret_lock(self, pool: str) -> AsyncIterator[None]:
        """Hold ``pool``'s Secret lock (creating and releasing it never overlap)."""
        entry = self._secret_locks.setdefault(pool, _PoolLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users and self._secret_locks.get(pool) is entry:
                del self._secret_locks[pool]

    async def _ensure_secret(self, request: BootRequest) -> str:
        async with self._secret_lock(request.pool):
            name = secret_name(self.pod_name or "", request.pool, request.kernel_id)
            if self._secrets.get(request.pool) == (name, request.key):
                return name
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {
                        MANAGED_BY: MANAGED_BY_VALUE,
                        LABEL_POOL: label_value(request.pool),
                        LABEL_PARENT: label_value(self.pod_name or ""),
                        LABEL_KERNEL: label_value(request.kernel_id),
                    },
                    "ownerReferences": self._owner(),
                },
                "data": {"key": base64.b64encode(request.key.hex().encode()).decode()},
            }
            core, ns = self.core, self.namespace or ""
            try:
                await asyncio.to_thread(call, "create", "secrets", ns,
                                        core.create_namespaced_secret, ns, body)
            except BackendError as exc:
                if exc.status != 409:
                    raise
                # a Secret of a previous pool of this name (and kernel): replace it
                await asyncio.to_thread(call, "delete", "secrets", ns,
                                        core.delete_namespaced_secret, name, ns, missing_ok=True)
                await asyncio.to_thread(call, "create", "secrets", ns,
                                        core.create_namespaced_secret, ns, body)
            self._secrets[request.pool] = (name, request.key)
            return name

    async def release_pool(self, pool: str) -> None:
        """Delete ``pool``'s key Secret (the pool shut down). Idempotent."""
        async with self._secret_lock(pool):  # after a boot's _ensure_secret, never amid it
            entry = self._secrets.pop(pool, None)
            if entry is not None and self._core is not None:
                ns = self.namespace or ""
                await asyncio.to_thread(call, "delete", "secrets", ns,
                                        self._core.delete_namespaced_secret, entry[0], ns,
                                        missing_ok=True)

    async def _release_quietly(self, pool: str) -> None:
        try:
            await self.release_pool(pool)
        except Exception as exc:
            log.warning("could not delete the key Secret of pool %s: %s", pool, exc)

    # -- boot --------------------------------------------------------------------------------
    async def boot(self, request: BootRequest) -> RunnerHandle:
        self.check_boot(request, closed=self._closed, known=self._runners)
        handle = RunnerHandle(request.runner_id, request.pool, {"backend": self.name})
        self.emit(handle, "requested")
        try:
            parent = await asyncio.to_thread(self._setup)
            secret = await self._ensure_secret(request)
            if self._closed:  # close() ran meanwhile, maybe before this Secret existed
                await self._release_quietly(request.pool)
                raise self.closed_error(request)
            manifest = build_runner_pod(
                parent, template=self.template, pool=request.pool,
                runner_id=request.runner_id, kernel_id=request.kernel_id, secret_name=secret,
                parent_address=request.parent_address,
                app_container_name=self.app_container_name,
                omit_owner_reference=self.omit_owner_reference,
                boot_timeout=request.boot_timeout, spec=request.spec,
                pvc_access_modes=self._claims, service_account=self.service_account)
            mark_kernel_process(manifest)
            ns = self.namespace or ""
            created = await asyncio.to_thread(call, "create", "pods", ns,
                                              self.core.create_namespaced_pod, ns, manifest,
                                              raw=True)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.emit(handle, "failed", reason=str(reason), message=str(exc))
            if isinstance(exc, FlameError):
                raise
            raise BootError(f"Runner {request.runner_id} of pool {request.pool!r} could not be "
                            f"created: {exc}", reason=type(exc).__name__, pool=request.pool,
                            runner=request.runner_id) from exc
        meta = created["metadata"]
        container = manifest["spec"]["containers"][0]
        handle.info.update(pod=meta["name"], namespace=self.namespace, image=container["image"],
                           resources=container.get("resources", {}), gpus=request.spec.gpu,
                           parent=self.pod_name)
        host, port = request.parent_address
        loop = asyncio.get_running_loop()
        runner = Runner(handle, meta["name"], meta["uid"], f"{host}:{port}",
                         gone=loop.create_future())
        self._runners[handle.id] = runner
        self._watch(runner, meta.get("resourceVersion"), loop)
        if self._closed:  # close() ran while the pod was created, and did not see it
            try:
                await self.terminate(handle, grace=2.0)
            finally:
                await self._release_quietly(request.pool)
            raise self.closed_error(request)
        self.emit(handle, "scheduling", pod=runner.name, namespace=self.namespace)
        return handle

    # -- close, sweep ------------------------------------------------------------------------
    async def close(self) -> None:
        """Delete every runner pod of this backend, then the pools' Secrets. Idempotent."""
        self._closed = True
        runners = list(self._runners.values())
        results = await asyncio.gather(*(self.terminate(r.handle, grace=2.0) for r in runners),
                                       return_exceptions=True)
        for pool in list(self._secrets):
            await self._release_quietly(pool)
        for runner in runners:
            runner.stop_watching()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def sweep(self, kernel_id: str, pool: str | None = None) -> list[str]:
        """Delete leftovers when a pool starts; returns their names.

        Leftovers are runner pods of this notebook pod that (a) belong to this kernel (and
        ``pool``) but were not started by this backend, or (b) belong to any kernel of this
        notebook pod and have finished (phase ``Succeeded``/``Failed``): their runner exited
        after its kernel died (e.g. SIGKILLed), and nobody else would delete them.
        """
        await asyncio.to_thread(self._setup)
        ns = self.namespace or ""
        parent = selector({LABEL_PARENT: label_value(self.pod_name or "")})
        listed = await asyncio.to_thread(list_runner_pods, self.core, ns, parent)
        ours = {r.name for r in self._runners.values()}
        kernel = label_value(kernel_id)
        names = []
        for pod in listed:
            name = pod.get("name")
            if not name or name in ours:
                continue
            # compared as label values, as the pods' labels carry them
            mine = label_value(pod.get("kernel_id", "")) == kernel and (
                pool is None or label_value(pod.get("pool", "")) == label_value(pool))
            if mine or pod.get("phase") in ("Succeeded", "Failed"):
                names.append(name)
        for name in names:
            await asyncio.to_thread(call, "delete", "pods", ns, self.core.delete_namespaced_pod,
                                    name, ns, grace_period_seconds=1, raw=True, missing_ok=True)
        return names

