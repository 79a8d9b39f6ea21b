"""Pod status as the kubelet reports it: container states, phase, conditions.

Pure: the kubelet keeps :class:`ContainerRun` / :class:`PodRun` records and this
module turns them into the ``status`` JSON (``phase``, ``conditions``,
``containerStatuses``, ``initContainerStatuses``, IPs, ``startTime``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from .._time import rfc3339

__all__ = ["ContainerRun", "PodRun", "container_spec", "pod_phase", "pod_status", "qos_class"]

Json = dict[str, Any]


@dataclass(eq=False)
class ContainerRun:
    """The kubelet's record of one container of a pod.

    Parameters
    ----------
    name, image : str
        From the container spec.
    init : bool
        An init container.
    """

    name: str
    image: str
    init: bool = False
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    container_id: str = ""
    image_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    crash_backoff: float = 0.0
    retry_backoff: float = 0.0
    busy: bool = False
    attempt: int = 0
    memory_limit: int | None = None  # bytes (resources.limits.memory), enforced by .oom
    oom_killed: bool = False  # killed for going over it; the exit is reported OOMKilled

    @property
    def running(self) -> bool:
        """A process is alive for this container."""
        return self.proc is not None

    def status(self) -> Json:
        """The ``containerStatuses`` entry."""
        return {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "containerID": self.container_id,
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


@dataclass(eq=False)
class PodRun:
    """The kubelet's record of one pod on one of its nodes."""

    uid: str
    namespace: str
    name: str
    node: str
    pod: Json
    ip: str = ""
    host_ip: str = ""
    gpus: list[int] = field(default_factory=list)
    init: list[ContainerRun] = field(default_factory=list)
    app: list[ContainerRun] = field(default_factory=list)
    init_done: bool = False
    started: bool = False
    start_time: str = ""
    scheduled_time: str = ""
    final_phase: str = ""
    terminating: bool = False
    external: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_sent: Json = field(default_factory=dict)

    @property
    def restart_policy(self) -> str:
        """``spec.restartPolicy`` (default ``Always``)."""
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")

    def alive(self) -> list[ContainerRun]:
        """Containers with a live process."""
        return [c for c in (*self.init, *self.app) if c.proc is not None]


def pod_phase(run: PodRun) -> str:
    """The pod phase, following the kubelet's ``getPhase``."""
    if run.final_phase:
        return run.final_phase
    if not run.init_done:
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for c in run.app:
        if "running" in c.state:
            running += 1
        elif "terminated" in c.state:
            stopped += 1
            succeeded += c.state["terminated"].get("exitCode") == 0
        elif c.last_state.get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    policy = run.restart_policy
    if policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Running" if policy == "OnFailure" else "Failed"


def qos_class(pod: Json) -> str:
    """``Guaranteed``, ``Burstable`` or ``BestEffort`` from requests and limits.

    Over init and app containers alike, as the API server computes it.
    """
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        any_set = any_set or bool(req) or bool(lim)
        for name in ("cpu", "memory"):
            if name not in lim or str(req.get(name, lim[name])) != str(lim[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _condition(run: PodRun, ctype: str, ok: bool, reason: str = "", message: str = "") -> Json:
    status = "True" if ok else "False"
    prev = run.transitions.get(ctype)
    if prev is None or prev[0] != status:
        run.transitions[ctype] = (status, rfc3339())
    cond: Json = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": run.transitions[ctype][1],
    }
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_status(run: PodRun) -> Json:
    """The full ``status`` object of a pod the kubelet runs."""
    phase = pod_phase(run)
    unready = [c.name for c in run.app if not c.ready]
    uninit = [c.name for c in run.init if "terminated" not in c.state]
    completed = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    ready_msg = "" if completed else f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition(run, "PodReadyToStartContainers", bool(run.ip) and not completed),
        _condition(
            run,
            "Initialized",
            run.init_done or (completed and not uninit),
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninit)}]",
        ),
        _condition(run, "Ready", not unready and not completed, ready_reason, ready_msg),
        _condition(run, "ContainersReady", not unready and not completed, ready_reason, ready_msg),
    ]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": run.scheduled_time or run.start_time,
        }
    )
    status: Json = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": run.host_ip,
        "hostIPs": [{"ip": run.host_ip}] if run.host_ip else [],
        "podIP": run.ip or None,
        "podIPs": [{"ip": run.ip}] if run.ip else [],
        "startTime": run.start_time,
        # The API server sets qosClass at creation; it stays (computed only when missing).
        "qosClass": (run.pod.get("status") or {}).get("qosClass") or qos_class(run.pod),
        "containerStatuses": [c.status() for c in run.app],
    }
    if run.init:
        status["initContainerStatuses"] = [c.status() for c in run.init]
    return status


def container_spec(run: PodRun, c: ContainerRun) -> Json:
    """The spec of container ``c`` in ``run``'s pod (just its name if the pod lost it)."""
    key = "initContainers" if c.init else "containers"
    for spec in (run.pod.get("spec") or {}).get(key) or []:
        if spec.get("name") == c.name:
            return dict(spec)
    return {"name": c.name}
