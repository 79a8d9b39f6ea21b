"""Watching one runner pod (and the events about it) from threads; reading pod status.

:func:`observe` is pure: it turns a pod's JSON into what the backend reports (lifecycle
phase, failure, exit). :class:`Watcher` runs a Kubernetes watch (``watch.Watch().stream``) in a
daemon thread and hands every object to the event loop; it resumes from the last
``resourceVersion`` when the server ends the stream, and re-reads when that version expired
(410 Gone). Nothing here polls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

__all__ = ["FAILING_WAIT_REASONS", "Observation", "Watcher", "observe"]

log = logging.getLogger(__name__)

#: Container waiting reasons that mean the runner will never start: the boot fails at once.
FAILING_WAIT_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
    "CrashLoopBackOff",
})
#: What ``handle.exited`` holds when Kubernetes reported no exit code (the pod was deleted).
DELETED_EXIT_CODE = -15
_WATCH_SECONDS = 240  # server-side timeout of one watch request; the watcher then resumes


@dataclass(frozen=True)
class Observation:
    """What a pod's status says about its runner.

    Attributes
    ----------
    phase:
        ``scheduling``, ``pulling`` or ``starting`` (``None``: nothing new to say).
    reason, message:
        Why (``Unschedulable`` and the scheduler's message; a waiting reason).
    failure:
        ``(reason, message)`` when the runner can never start.
    exit_code:
        The runner container's exit code once the pod is terminal.
    terminated_reason, terminated_message:
        Kubernetes' reason (``Error``, ``OOMKilled``, ``Evicted``...) and message for a
        terminal pod (with ``FallbackToLogsOnError``, the message holds the log tail).
    node, pod_ip:
        Where it runs.
    """

    phase: str | None = None
    reason: str = ""
    message: str = ""
    failure: tuple[str, str] | None = None
    exit_code: int | None = None
    terminated_reason: str = ""
    terminated_message: str = ""
    node: str = ""
    pod_ip: str = ""


def _runner_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == "runner":
            return status  # type: ignore[no-any-return]
    return statuses[0] if statuses else {}


def observe(pod: dict[str, Any]) -> Observation:
    """Read a runner pod's JSON into an :class:`Observation`. Pure."""
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    pod_ip = status.get("podIP") or ""

    def seen(**values: Any) -> Observation:
        return Observation(node=node, pod_ip=pod_ip, **values)

    container = _runner_status(pod)
    state = container.get("state") or {}
    last = container.get("lastState") or {}
    terminated = state.get("terminated") or last.get("terminated")
    phase = status.get("phase") or "Pending"
    if phase in ("Succeeded", "Failed"):
        if terminated:
            return seen(
                exit_code=int(terminated.get("exitCode", 1)),
                terminated_reason=terminated.get("reason") or phase,
                terminated_message=terminated.get("message") or "")
        # the pod failed without its container running (Evicted, DeadlineExceeded...)
        return seen(exit_code=1 if phase == "Failed" else 0,
                    terminated_reason=status.get("reason") or phase,
                    terminated_message=status.get("message") or "")
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FAILING_WAIT_REASONS:
        return seen(failure=(waiting["reason"], waiting.get("message") or ""))
    if "running" in state or terminated:
        return seen(phase="starting")
    if not node:
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return seen(phase="scheduling", reason=condition.get("reason") or "",
                            message=condition.get("message") or "")
        return seen(phase="scheduling")
    return seen(phase="pulling", reason=waiting.get("reason") or "",
                message=waiting.get("message") or "")


class Watcher:
    """Watch one kind of object in a daemon thread; deliver ``(type, object)`` to the loop.

    Parameters
    ----------
    list_func:
        The client's list method (``CoreV1Api.list_namespaced_pod``...).
    namespace, field_selector:
        What to watch.
    resource_version:
        Start after this version (the ``resourceVersion`` of the created pod); ``None``:
        from now, with the current objects first.
    deliver:
        ``deliver(type, raw_object)``, called on the event loop (``type`` is ``ADDED``,
        ``MODIFIED``, ``DELETED``; ``GONE`` when a re-read found nothing).
    reread:
        ``reread() -> (raw_object | None, resource_version)`` after a 410 Gone (the object's
        current state, or ``None`` when it no longer exists); ``None`` to resume from now.
    make_watch:
        What makes the client's watch (default ``kubernetes.watch.Watch``): an object with
        ``stream(list_func, **kwargs)`` and ``stop()``.
    """

    def __init__(
        self,
        list_func: Callable[..., Any],
        namespace: str,
        field_selector: str,
        resource_version: str | None,
        deliver: Callable[[str, dict[str, Any]], None],
        loop: asyncio.AbstractEventLoop,
        reread: Callable[[], tuple[dict[str, Any] | None, str | None]] | None = None,
        name: str = "jupyter-flame-watch",
        make_watch: Callable[[], Any] | None = None,
    ) -> None:
        self._make_watch = make_watch or watch.Watch
        self._list = list_func
        self._namespace = namespace
        self._fields = field_selector
        self._version = resource_version
        self._deliver = deliver
        self._loop = loop
        self._reread = reread
        self._stopped = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop soon: mark the watcher stopped and close the open stream (best effort).

        Does not wait for the thread to end (it is a daemon; it leaves at its next step)."""
        self._stopped.set()
        current = self._watch
        if current is not None:
            current.stop()  # type: ignore[no-untyped-call]
            response = getattr(current, "_resp", None)
            if response is not None:
                try:
                    response.close()
                except Exception:  # closing a stream another thread reads: best effort
                    pass

    def _post(self, kind: str, obj: dict[str, Any]) -> bool:
        if self._stopped.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._deliver, kind, obj)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stopped.set()
            return False
        return True

    def _recover(self) -> None:
        if self._reread is None:
            self._version = None
            return
        obj, self._version = self._reread()
        if obj is None:
            self._post("GONE", {})
            self._stopped.set()
        else:
            self._post("MODIFIED", obj)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            self._watch = self._make_watch()
            kwargs: dict[str, Any] = {
                "field_selector": self._fields,
                "timeout_seconds": _WATCH_SECONDS,
                "_request_timeout": (10, _WATCH_SECONDS + 30),
            }
            if self._version:
                kwargs["resource_version"] = self._version
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                        self._list, self._namespace, **kwargs):
                    failures = 0
                    obj = event.get("raw_object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._version = version
                    if not self._post(event.get("type", ""), obj):
                        return
            except ApiException as exc:
                if self._stopped.is_set():
                    return
                if exc.status == 410:
                    try:
                        self._recover()
                        continue
                    except Exception as err:  # the re-read failed: retry like any failure
                        log.debug("re-reading %s after 410 Gone failed: %s", self._fields, err)
                failures += 1
                log.debug("watch %s failed: %s", self._fields, exc)
            except Exception as exc:  # connection reset, server gone, stream closed by stop()
                if self._stopped.is_set():
                    return
                failures += 1
                log.debug("watch %s broke: %s", self._fields, exc)
            if failures:
                if failures > 30:
                    log.warning("giving up watching %s after %d failures", self._fields,
                                failures)
                    self._stopped.set()
                    return
                self._stopped.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))
                if failures > 2 and self._reread is not None:
                    try:
                        self._recover()
                    except Exception:
                        pass
