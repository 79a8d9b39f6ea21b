"""The container runtime of the kubelet: image "pulls", environments, processes.

Each method does one step of starting a container and records the events a
kubelet and containerd record for it; the kubelet decides what happens next
(retries, back-off, restart policy).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from .._paths import log_path
from .._time import rfc3339
from .api import Api, ApiException
from .images import ImageStore
from .node import GPU_RESOURCE
from .oom import memory_limit
from .podenv import ContainerConfigError, build_env, decode_secret, resolve_command
from .podstatus import ContainerRun, PodRun
from .process import ProcessTable
from .scheduler import pod_requests

__all__ = ["Runtime", "field_path", "container_event"]

Json = dict[str, Any]


def field_path(c: ContainerRun) -> str:
    """``spec.containers{name}``: what events about a container point at."""
    kind = "initContainers" if c.init else "containers"
    return f"spec.{kind}{{{c.name}}}"


def container_event(run: PodRun, c: ContainerRun) -> dict[str, str]:
    """The ``host`` and ``field_path`` keywords of an event about container ``c``."""
    return {"host": run.node, "field_path": field_path(c)}


class Runtime:
    """Pulls, configures and spawns containers as local processes.

    Parameters
    ----------
    state_dir : Path
        Container logs go to ``logs/<namespace>/<pod>/<container>.log`` here.
    api : Api
        Reads Secrets and ConfigMaps for the environment.
    record : callable
        The event recorder.
    images : ImageStore
        The pull allow-list.
    procs : ProcessTable
        Spawns and reaps processes.
    """

    def __init__(
        self, state_dir: Path, api: Api, record: Any, images: ImageStore, procs: ProcessTable
    ) -> None:
        self.state_dir = state_dir
        self.api = api
        self.record = record
        self.images = images
        self.procs = procs

    def pull(self, run: PodRun, c: ContainerRun, spec: Json) -> Json | None:
        """Make the image present; None when it is, else the ``waiting`` state."""
        ev = container_event(run, c)
        image = spec.get("image", "")
        policy = spec.get("imagePullPolicy")
        present = self.images.present(run.node, image)
        if self.images.needs_pull(policy, image, present):
            self.record(run.pod, "Normal", "Pulling", f'Pulling image "{image}"', **ev)
            if not self.images.pullable(image):
                message = self.images.pull_error(image)
                self.record(run.pod, "Warning", "Failed", message, **ev)
                self.record(run.pod, "Warning", "Failed", "Error: ErrImagePull", **ev)
                return {"reason": "ErrImagePull", "message": message}
            self.images.mark_present(run.node, image)
            message = (
                f'Successfully pulled image "{image}" in 1ms (1ms including waiting). '
                "Image size: 0 bytes."
            )
            self.record(run.pod, "Normal", "Pulled", message, **ev)
        elif not present and policy == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            self.record(run.pod, "Warning", "ErrImageNeverPull", message, **ev)
            return {"reason": "ErrImageNeverPull", "message": message}
        else:
            message = f'Container image "{image}" already present on machine'
            self.record(run.pod, "Normal", "Pulled", message, **ev)
        c.image_id = f"sim://{image}"
        return None

    def back_off_pull(self, run: PodRun, c: ContainerRun, spec: Json) -> Json:
        """Record the image pull back-off; return the ``ImagePullBackOff`` waiting state."""
        ev = container_event(run, c)
        message = f'Back-off pulling image "{spec.get("image", "")}"'
        self.record(run.pod, "Normal", "BackOff", message, **ev)
        self.record(run.pod, "Warning", "Failed", "Error: ImagePullBackOff", **ev)
        return {"reason": "ImagePullBackOff", "message": message}

    def environment(self, run: PodRun, c: ContainerRun, spec: Json) -> dict[str, str]:
        """The container's environment, GPUs included.

        Raises
        ------
        ContainerConfigError
            A Secret/ConfigMap or key is missing; the event is recorded.
        """
        try:
            env = build_env(spec, run.pod, pod_ip=run.ip, host_ip=run.host_ip, lookup=self._lookup)
        except ContainerConfigError as exc:
            ev = container_event(run, c)
            self.record(run.pod, "Warning", "Failed", f"Error: {exc}", **ev)
            raise
        wants_gpu = int(pod_requests({"spec": {"containers": [spec]}}).get(GPU_RESOURCE, 0))
        if run.gpus and wants_gpu:
            ids = ",".join(str(i) for i in run.gpus)
            env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = ids
        return env

    def start(self, run: PodRun, c: ContainerRun, spec: Json, env: dict[str, str]) -> Json | None:
        """Create and start the process; None on success, else a ``StartError`` termination."""
        ev = container_event(run, c)
        c.container_id = f"sim://{uuid.uuid4().hex}"
        self.record(run.pod, "Normal", "Created", f"Created container: {c.name}", **ev)
        try:
            argv = resolve_command(spec, env)
            cwd = spec.get("workingDir") or None
            if cwd:
                os.makedirs(cwd, exist_ok=True)
            c.proc = self.procs.spawn(
                (run.uid, c.name, c.container_id),
                argv,
                env,
                cwd,
                log_path(self.state_dir, run.namespace, run.name, c.name),
            )
        except (OSError, ContainerConfigError) as exc:
            detail = str(exc)
            if isinstance(exc, FileNotFoundError):
                detail = f'exec: "{exc.filename}": executable file not found in $PATH'
            message = (
                "failed to create containerd task: failed to create shim task: OCI runtime "
                f"create failed: runc create failed: unable to start container process: {detail}"
            )
            self.record(run.pod, "Warning", "Failed", f"Error: {message}", **ev)
            stamp = rfc3339()
            return {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": stamp,
                "finishedAt": stamp,
                "containerID": c.container_id,
            }
        c.started_at = rfc3339()
        c.memory_limit = memory_limit(spec)
        c.oom_killed = False
        self.record(run.pod, "Normal", "Started", f"Started container {c.name}", **ev)
        return None

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "Secret":
                return decode_secret(self.api.read_secret(namespace, name))
            data = self.api.read_config_map(namespace, name)
            return {k: str(v) for k, v in (data.get("data") or {}).items()}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ContainerConfigError(
                f"failed to read {kind.lower()} {namespace}/{name}: {exc.reason}"
            ) from exc
