"""The life of one runner pod, as its watches tell it: events, failures, exit, deletion.

:class:`PodRunners` is the half of :class:`~jupyter_flame.backends.kubernetes.backend.KubernetesBackend`
that reacts to what the pod and event watches deliver (on the event loop) and terminates pods;
the backend adds configuration, Secrets and creation.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from jupyter_flame.backends.base import (
    LOG_TAIL_LINES,
    PHASES,
    PRE_CONNECT,
    Backend,
    RunnerHandle,
    exit_message,
)
from jupyter_flame.backends.kubernetes.api import call
from jupyter_flame.backends.kubernetes.watch import DELETED_EXIT_CODE, Observation, Watcher, observe
from jupyter_flame.errors import BackendError, BootError

__all__ = ["PodRunners", "Runner"]

log = logging.getLogger(__name__)

_DELETE_SLACK = 10.0  # seconds past the grace period to wait for the pod to disappear
_HINTS = {
    "ErrImagePull": "check the image name and tag, and that the cluster may pull it "
                    "(imagePullSecrets); choose another with --image or "
                    "RunnerPodTemplate(image=...)",
    "CreateContainerConfigError": "a Secret, ConfigMap or key the pod refers to is missing",
}
_HINTS["ImagePullBackOff"] = _HINTS["InvalidImageName"] = _HINTS["ErrImagePull"]


@dataclass(eq=False)
class Runner:
    """What the backend tracks about one runner pod."""

    handle: RunnerHandle
    name: str
    uid: str
    address: str
    gone: asyncio.Future[None]
    watchers: list[Watcher] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    last: dict[str, Any] = field(default_factory=dict)
    events: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=6))
    progress: tuple[str, str, str] = ("", "", "")
    stopping: bool = False
    failing: bool = False
    finished: bool = False
    delete_grace: float | None = None

    def stop_watching(self, events_only: bool = False) -> None:
        for watcher in self.watchers[1:] if events_only else self.watchers:
            watcher.stop()


class PodRunners(Backend):
    """Runner pods followed by watches; subclasses create them (see the module docstring)."""

    namespace: str | None
    _runners: dict[str, Runner]

    @property
    def core(self) -> client.CoreV1Api:
        raise NotImplementedError

    def _watch(self, runner: Runner, version: str | None,
               loop: asyncio.AbstractEventLoop) -> None:
        core, ns = self.core, self.namespace or ""

        def reread() -> tuple[dict[str, Any] | None, str | None]:
            pod = call("get", "pods", ns, core.read_namespaced_pod, runner.name, ns, raw=True,
                       missing_ok=True)
            return pod, (pod or {}).get("metadata", {}).get("resourceVersion")

        runner.watchers = [
            Watcher(core.list_namespaced_pod, ns, f"metadata.name={runner.name}", version,
                    functools.partial(self._on_pod, runner), loop, reread,
                    name=f"flame-watch-{runner.name}"),
            Watcher(core.list_namespaced_event, ns, f"involvedObject.uid={runner.uid}",
                    version, functools.partial(self._on_event, runner), loop,
                    name=f"flame-events-{runner.name}"),
        ]
        for watcher in runner.watchers:
            watcher.start()

    # -- what the watches say ----------------------------------------------------------------
    def _progress(self, runner: Runner, phase: str, reason: str = "", message: str = "") -> None:
        handle = runner.handle
        if runner.stopping or runner.failing or handle.phase not in PRE_CONNECT:
            return
        current, new = PHASES.index(handle.phase), PHASES.index(phase)
        if new < current or (new == current and (
                phase == "starting" or (phase, reason, message) == runner.progress
                or not (reason or message))):
            return
        runner.progress = (phase, reason, message)
        node = handle.info.get("node") or ((runner.last or {}).get("spec") or {}).get("nodeName")
        self.emit(handle, phase, reason, message, pod=runner.name, node=node or "")

    def _on_event(self, runner: Runner, kind: str, event: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED") or runner.finished:
            return
        reason, message = event.get("reason") or "", event.get("message") or ""
        line = f"{event.get('type', 'Normal')} {reason}: {message}"
        if line not in runner.events:
            runner.events.append(line)
            runner.handle.info["events"] = list(runner.events)
        if reason == "Scheduled" and " to " in message and not runner.handle.info.get("node"):
            # "Successfully assigned ns/pod to NODE": the event stream may run ahead of the pod's
            runner.handle.info["node"] = message.rsplit(" to ", 1)[1].strip()
        if reason == "FailedScheduling":
            self._progress(runner, "scheduling", "Unschedulable", message)
        elif reason in ("Scheduled", "Pulling", "Pulled"):
            self._progress(runner, "pulling", reason, message)
        elif reason == "Started":
            self._progress(runner, "starting", reason, message)

    def _on_pod(self, runner: Runner, kind: str, pod: dict[str, Any]) -> None:
        if pod:
            runner.last = pod
        if kind in ("DELETED", "GONE"):
            self._finish(runner)
            return
        if kind not in ("ADDED", "MODIFIED") or runner.finished:
            return
        seen = observe(pod)
        info = runner.handle.info
        if seen.node:
            info["node"] = seen.node
        if seen.pod_ip:
            info["pod_ip"] = seen.pod_ip
        if seen.exit_code is not None:
            runner.finished = True
            runner.stop_watching(events_only=True)
            self._background(runner, self._exited(runner, seen, seen.exit_code))
        elif seen.failure is not None and not runner.stopping and not runner.failing:
            runner.failing = True
            self._background(runner, self._cannot_start(runner, *seen.failure))
        elif seen.phase is not None:
            if seen.phase == "starting":
                runner.stop_watching(events_only=True)
            self._progress(runner, seen.phase, seen.reason, seen.message)

    async def _log_tail(self, runner: Runner, fallback: str = "") -> str:
        ns = self.namespace or ""
        try:
            text = await asyncio.to_thread(
                call, "get", "pods/log", ns, self.core.read_namespaced_pod_log, runner.name, ns,
                container="runner", tail_lines=LOG_TAIL_LINES)
        except BackendError:
            return fallback
        return str(text or "") or fallback

    def _describe_pod(self, runner: Runner) -> str:
        text = f"pod {self.namespace}/{runner.name}"
        if runner.events:
            text += "; recent events: " + " | ".join(runner.events)
        return text

    async def _cannot_start(self, runner: Runner, reason: str, message: str) -> None:
        handle = runner.handle
        tail = await self._log_tail(runner)
        hint = _HINTS.get(reason)
        text = (f"Runner {handle.id} of pool {handle.pool!r} cannot start: {reason}: {message} "
                f"(image {handle.info.get('image')}, {self._describe_pod(runner)})")
        if hint:
            text += f". Fix: {hint}"
        handle.info["log_tail"] = tail
        if handle.phase in PRE_CONNECT:
            handle.set_failed(BootError(text + ".", reason=reason, log_tail=tail or None,
                                        pool=handle.pool, runner=handle.id, pod=runner.name))
        self.emit(handle, "failed", reason, message, pod=runner.name, log_tail=tail)
        await self._delete(runner, 0)

    def _background(self, runner: Runner, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``runner`` without waiting; failures are logged, never lost."""
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("runner %s (pod %s/%s)", runner.handle.id, self.namespace,
                              runner.name)

        task = asyncio.get_running_loop().create_task(guarded())
        runner.tasks.add(task)
        task.add_done_callback(runner.tasks.discard)

    async def _exited(self, runner: Runner, seen: Observation, code: int) -> None:
        """The runner container exited with ``code`` (``seen.exit_code``)."""
        handle = runner.handle
        handle.info["exit_code"] = code
        before = handle.phase in PRE_CONNECT
        if runner.stopping or runner.failing or (code == 0 and not before):
            if not runner.failing:
                self.emit(handle, "stopped", message=f"Runner {handle.id} exited with code {code}",
                          exit_code=code)
        else:
            tail = await self._log_tail(runner, seen.terminated_message)
            handle.info["log_tail"] = tail
            normal = seen.terminated_reason in ("Error", "Completed", "")
            reason = "exited" if normal else seen.terminated_reason
            message = exit_message(handle.id, handle.pool, code, before_connecting=before,
                                   parent=runner.address)
            if not normal:
                message += f": {seen.terminated_reason}"
                if seen.terminated_message and seen.terminated_message != tail:
                    message += f" ({seen.terminated_message.strip()})"
                handle.info["exit_reason"] = _terminated_reason(seen.terminated_reason,
                                                                 runner.last)
            if before:
                handle.set_failed(BootError(f"{message}; {self._describe_pod(runner)}.",
                                            reason=reason, log_tail=tail or None,
                                            pool=handle.pool, runner=handle.id, pod=runner.name))
            self.emit(handle, "failed", reason, message, exit_code=code, log_tail=tail)
        handle.set_exited(code)
        await self._delete(runner, 0)

    def _finish(self, runner: Runner) -> None:
        """The pod is gone (DELETED, or not found)."""
        if not runner.gone.done():
            runner.gone.set_result(None)
        runner.stop_watching()
        if self._runners.get(runner.handle.id) is runner:
            del self._runners[runner.handle.id]
        if runner.finished:
            return
        runner.finished = True
        handle = runner.handle
        seen = observe(runner.last) if runner.last else Observation()
        code = seen.exit_code if seen.exit_code is not None else DELETED_EXIT_CODE
        handle.info["exit_code"] = code
        if runner.stopping and not runner.failing:
            self.emit(handle, "stopped", message=f"Runner {handle.id}'s pod was deleted",
                      exit_code=code)
        elif not runner.failing:
            message = (f"Runner {handle.id} of pool {handle.pool!r}: its pod "
                       f"{self.namespace}/{runner.name} was deleted")
            if handle.phase in PRE_CONNECT:
                message += " before the runner connected"
                handle.set_failed(BootError(message + ".", reason="deleted", pool=handle.pool,
                                            runner=handle.id, pod=runner.name))
            self.emit(handle, "failed", "deleted", message, exit_code=code)
        handle.set_exited(code)

    async def _delete(self, runner: Runner, grace: float) -> None:
        if runner.gone.done() or (runner.delete_grace is not None
                                  and runner.delete_grace <= grace):
            return
        ns = self.namespace or ""
        found = await asyncio.to_thread(
            call, "delete", "pods", ns, self.core.delete_namespaced_pod, runner.name, ns,
            grace_period_seconds=int(math.ceil(grace)), raw=True, missing_ok=True)
        # recorded once sent: a DELETE that failed does not stop a later one
        if runner.delete_grace is None or grace < runner.delete_grace:
            runner.delete_grace = grace
        if found is None:
            self._finish(runner)

    async def terminate(self, handle: RunnerHandle, grace: float = 5.0) -> None:
        runner = self._runners.get(handle.id)
        if runner is None or runner.handle is not handle:
            return
        if not runner.stopping:
            runner.stopping = True
            if not handle.exited.done() and not runner.failing:
                self.emit(handle, "stopping", grace=grace)
        await self._delete(runner, grace)
        try:
            await asyncio.wait_for(asyncio.shield(runner.gone), grace + _DELETE_SLACK)
        except asyncio.TimeoutError:
            await self._delete(runner, 0)
            try:
                await asyncio.wait_for(asyncio.shield(runner.gone), _DELETE_SLACK)
            except asyncio.TimeoutError:
                log.warning("pod %s/%s still exists after deletion", self.namespace, runner.name)
                self._finish(runner)


def _terminated_reason(reason: str, pod: dict[str, Any] | None) -> str:
    """Why Kubernetes ended the runner container, for the cell's RunnerLostError; out of
    memory names the limit and how to raise it."""
    if reason != "OOMKilled":
        return f"Kubernetes: {reason}"
    limit = "?"
    for c in ((pod or {}).get("spec") or {}).get("containers") or []:
        if c.get("name") == "runner":
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory", "none set")
    return (f"out of memory: Kubernetes OOMKilled the runner pod at its memory limit of "
            f"{limit} (ask for more with --memory, or RunnerSpec(memory=...))")

