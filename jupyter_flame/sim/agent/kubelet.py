"""The kubelet: runs the pods bound to the agent's nodes as local processes.

A state machine per pod, driven by pod watch events, process exits and timers,
all on the agent's one loop thread (no thread per pod). Each step records the
events and container states a real kubelet records: ``Pulling``/``Pulled``,
``ErrImagePull``/``ImagePullBackOff``, ``CreateContainerConfigError``,
``Created``/``Started``, ``CrashLoopBackOff``/``BackOff``, ``Killing``.

Pods annotated ``sim.jupyter-flame/external: "true"`` are *adopted*: the
kubelet gives them an IP and reports them Running and Ready without starting
anything (the notebook pod of ``sim up`` is such a pod: its process is the
user's Jupyter server).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._time import rfc3339
from .api import Api, ApiException
from .devices import HOST_IP, GpuAllocator, IpAllocator
from .images import ImageStore
from .node import EXTERNAL_ANNOTATION, GPU_RESOURCE, NodeConfig
from .oom import over_limit
from .podenv import ContainerConfigError
from .podstatus import ContainerRun, PodRun, container_spec, pod_phase, pod_status
from .process import ProcessTable
from .runtime import Runtime, container_event
from .scheduler import pod_requests

__all__ = ["Kubelet", "EXTERNAL_ANNOTATION"]

Json = dict[str, Any]
Recorder = Callable[..., None]
CallLater = Callable[[float, Callable[[], None]], None]
MAX_CRASH_BACKOFF = 300.0
MAX_RETRY_BACKOFF = 10.0  # CreateContainerConfigError retries: 1 s doubling to 10 s
IMAGE_BACKOFF = (10.0, 300.0)  # the kubelet's image pull back-off: 10 s doubling to 5 min


class Kubelet:
    """Runs pods for a set of nodes in one process.

    Parameters
    ----------
    nodes : dict of str to NodeConfig
        The nodes this kubelet serves.
    state_dir : Path
        Logs and process records live here.
    api : Api
        The cluster.
    record : callable
        ``record(pod, type, reason, message, component=..., host=..., field_path=...)``.
    images : ImageStore
        The pull allow-list.
    call_later : callable
        ``call_later(seconds, fn)`` on the loop thread.
    procs : ProcessTable
        Spawns and reaps container processes.
    """

    def __init__(
        self,
        nodes: dict[str, NodeConfig],
        state_dir: Path,
        api: Api,
        record: Recorder,
        images: ImageStore,
        call_later: CallLater,
        procs: ProcessTable,
    ) -> None:
        self.api = api
        self.record = record
        self.call_later = call_later
        self.procs = procs
        self.runtime = Runtime(state_dir, api, record, images, procs)
        self.runs: dict[str, PodRun] = {}
        self.finished: set[str] = set()
        self.ips = IpAllocator()
        self.gpus = {name: GpuAllocator(cfg.gpus) for name, cfg in nodes.items()}
        self.dirty: set[str] = set()

    # -- watch input --------------------------------------------------------------
    def sync(self, pod: Json) -> None:
        """Reconcile a pod bound to one of our nodes (ADDED or MODIFIED)."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        if uid in self.finished:
            return
        run = self.runs.get(uid)
        if run is None:
            if meta.get("deletionTimestamp"):
                # Being deleted and nothing of it runs here (finished, or from before we
                # started): finish the deletion without starting anything.
                self.finished.add(uid)
                self._delete_now(meta.get("namespace", "default"), meta.get("name", ""), uid)
                return
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before we (re)started
            run = self._admit(pod)
        else:
            run.pod = pod
        if meta.get("deletionTimestamp") and not run.terminating:
            self._terminate(run)

    def deleted(self, pod: Json) -> None:
        """The pod is gone from the API: kill what is left of it."""
        uid = (pod.get("metadata") or {}).get("uid", "")
        run = self.runs.pop(uid, None)
        self.finished.add(uid)
        self.dirty.discard(uid)
        if run is not None:
            for c in run.alive():
                assert c.proc is not None
                self.procs.signal_group(c.proc, signal.SIGKILL)
            self._release(run)

    def on_exit(self, key: tuple[str, str, str], code: int) -> None:
        """A container process exited (called on the loop thread)."""
        uid, name, cid = key
        run = self.runs.get(uid)
        if run is None:
            return
        c = next((c for c in (*run.init, *run.app) if c.name == name), None)
        if c is None or c.container_id != cid:
            return
        c.proc = None
        c.ready = False
        self.dirty.add(uid)
        oom, c.oom_killed = c.oom_killed, False
        term = {
            "exitCode": code,
            "reason": "OOMKilled" if oom else "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": rfc3339(),
            "containerID": c.container_id,
        }
        self._stopped(run, c, term)

    def enforce_memory(self) -> None:
        """Kill containers over their memory limit, as the node's OOM killer would (.oom)."""
        for run in list(self.runs.values()):
            for c in over_limit(run.alive()):
                assert c.proc is not None
                c.oom_killed = True
                self.procs.signal_group(c.proc, signal.SIGKILL)

    # -- lifecycle ------------------------------------------------------------------
    def _admit(self, pod: Json) -> PodRun:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        run = PodRun(
            uid=meta["uid"],
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            node=spec["nodeName"],
            pod=pod,
            host_ip=HOST_IP,
            start_time=status.get("startTime") or rfc3339(),
            scheduled_time=rfc3339(),
        )
        self.runs[run.uid] = run
        self.dirty.add(run.uid)
        run.init = [
            ContainerRun(c["name"], c.get("image", ""), init=True)
            for c in spec.get("initContainers") or []
        ]
        run.app = [
            ContainerRun(c["name"], c.get("image", "")) for c in spec.get("containers") or []
        ]
        if run.init:
            for c in run.app:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        if (meta.get("annotations") or {}).get(EXTERNAL_ANNOTATION) == "true":
            self._assign_ip(run)
            run.external = run.init_done = run.started = True
            for c in run.app:
                c.state = {"running": {"startedAt": run.start_time}}
                c.started_at, c.ready = run.start_time, True
                c.container_id = f"sim://external-{c.name}"
            return run
        wanted = int(pod_requests(pod).get(GPU_RESOURCE, 0))
        if wanted:
            ids = self.gpus[run.node].allocate(run.uid, wanted)
            if ids is None:
                free = self.gpus[run.node].free()
                self.record(
                    pod,
                    "Warning",
                    "UnexpectedAdmissionError",
                    f"Allocate failed due to requested number of devices unavailable for "
                    f"{GPU_RESOURCE}. Requested: {wanted}, Available: {free}, which is unexpected",
                    host=run.node,
                )
                run.final_phase = "Failed"
                return run
            run.gpus = ids
        # Only an admitted pod gets a sandbox and so an IP (a refused one shows none).
        self._assign_ip(run)
        run.init_done = not run.init
        self._advance(run)
        return run

    def _assign_ip(self, run: PodRun) -> None:
        ip = (run.pod.get("status") or {}).get("podIP")
        if ip and self.ips.get(run.uid) is None:
            self.ips.reserve(run.uid, ip)  # ours before a restart: keep it
        run.ip = self.ips.allocate(run.uid)

    def _advance(self, run: PodRun) -> None:
        if run.terminating or run.final_phase:
            return
        if not run.init_done:
            for c in run.init:
                term = c.state.get("terminated")
                if term and term.get("exitCode") == 0:
                    continue
                if not c.running and not c.busy:
                    self._start(run, c)
                return
            run.init_done = True
            self.dirty.add(run.uid)
        if not run.started:
            run.started = True
            for c in run.app:
                self._start(run, c)

    def _later(self, run: PodRun, c: ContainerRun, delay: float, fn: Callable[[], None]) -> None:
        token = c.attempt

        def fire() -> None:
            if self.runs.get(run.uid) is run and c.attempt == token and not run.terminating:
                fn()

        c.busy = True
        self.call_later(delay, fire)

    def _backoff(
        self, c: ContainerRun, first: float = 1.0, cap: float = MAX_RETRY_BACKOFF
    ) -> float:
        c.retry_backoff = min(cap, c.retry_backoff * 2 or first)
        return c.retry_backoff

    def _start(self, run: PodRun, c: ContainerRun) -> None:
        c.busy = False
        c.attempt += 1
        self.dirty.add(run.uid)
        spec = container_spec(run, c)
        waiting = self.runtime.pull(run, c, spec)
        if waiting is not None:
            c.state = {"waiting": waiting}
            if waiting["reason"] == "ErrImagePull":
                delay = self._backoff(c, *IMAGE_BACKOFF)

                def back_off() -> None:
                    c.state = {"waiting": self.runtime.back_off_pull(run, c, spec)}
                    self.dirty.add(run.uid)
                    self._later(run, c, delay, lambda: self._start(run, c))

                self._later(run, c, 0.5, back_off)
            return
        try:
            env = self.runtime.environment(run, c, spec)
        except ContainerConfigError as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self._later(run, c, self._backoff(c), lambda: self._start(run, c))
            return
        c.retry_backoff = 0.0
        term = self.runtime.start(run, c, spec, env)
        if term is not None:
            self._stopped(run, c, term)
            return
        c.state = {"running": {"startedAt": c.started_at}}
        c.ready = not c.init

    def _stopped(self, run: PodRun, c: ContainerRun, term: Json) -> None:
        if run.terminating:
            c.state = {"terminated": term}
            if not run.alive():
                self._finish_delete(run)
            return
        code = term["exitCode"]
        policy = run.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if c.init and code != 0 and policy == "Never":
            c.state = {"terminated": term}
            run.final_phase = "Failed"
            self._completed(run)
            return
        if c.init and code == 0:
            c.state = {"terminated": term}
            self._advance(run)
            return
        if not restart:
            c.state = {"terminated": term}
            if all("terminated" in x.state for x in run.app):
                run.final_phase = pod_phase(run)
                self._completed(run)
            return
        c.last_state = {"terminated": term}
        delay = c.crash_backoff
        c.crash_backoff = min(MAX_CRASH_BACKOFF, c.crash_backoff * 2 or 10.0)

        def restart_now() -> None:
            c.restart_count += 1
            self._start(run, c)

        if not delay:
            c.state = {"terminated": term}
            restart_now()
            return
        pod_ref = f"{run.name}_{run.namespace}({run.uid})"
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(delay)}s restarting failed container={c.name} pod={pod_ref}",
            }
        }
        self.record(run.pod, "Warning", "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {pod_ref}",
                    **container_event(run, c))
        self._later(run, c, delay, restart_now)

    def _completed(self, run: PodRun) -> None:
        self.dirty.add(run.uid)
        self._release(run, keep_ip=True)

    def _release(self, run: PodRun, keep_ip: bool = False) -> None:
        if run.node in self.gpus:
            self.gpus[run.node].release(run.uid)
        self.ips.release(run.uid)
        if not keep_ip:
            run.ip = ""

    def _terminate(self, run: PodRun) -> None:
        run.terminating = True
        self.dirty.add(run.uid)
        meta = run.pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (run.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        alive = run.alive()
        for c in alive:
            assert c.proc is not None
            self.record(run.pod, "Normal", "Killing", f"Stopping container {c.name}",
                        **container_event(run, c))
            self.procs.signal_group(c.proc, signal.SIGTERM)
        if not alive:
            self._finish_delete(run)
            return

        def kill() -> None:
            for c in run.alive():
                assert c.proc is not None
                self.procs.signal_group(c.proc, signal.SIGKILL)

        self.call_later(float(grace), kill)

    def _finish_delete(self, run: PodRun) -> None:
        self.runs.pop(run.uid, None)
        self.finished.add(run.uid)
        self.dirty.discard(run.uid)
        self._release(run)
        try:
            if not run.external:
                self.api.patch_pod_status(run.namespace, run.name, pod_status(run))
        except ApiException:
            pass
        self._delete_now(run.namespace, run.name, run.uid)

    def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.api.delete_pod_now(namespace, name, uid)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- helpers ------------------------------------------------------------------------
    def flush(self) -> list[tuple[PodRun, Json]]:
        """Statuses to send: the dirty pods whose status changed since last sent.

        A status counts as sent only once the caller reports it with :meth:`sent`;
        one it could not send goes back with :meth:`unsent` and comes out again.
        """
        out: list[tuple[PodRun, Json]] = []
        for uid in sorted(self.dirty):
            run = self.runs.get(uid)
            if run is None:
                continue
            status = pod_status(run)
            if status != run.last_sent:
                out.append((run, status))
        self.dirty.clear()
        return out

    def sent(self, run: PodRun, status: Json) -> None:
        """The API server took ``status`` (from :meth:`flush`) for ``run``."""
        run.last_sent = status

    def unsent(self, run: PodRun) -> None:
        """Sending ``run``'s status failed: the next :meth:`flush` offers it again."""
        if self.runs.get(run.uid) is run:
            self.dirty.add(run.uid)
