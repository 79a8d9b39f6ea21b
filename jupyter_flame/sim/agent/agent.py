"""The node agent: one loop thread serving any number of nodes as kubelet and scheduler.

Threads: one watch per resource kind (pods in all namespaces, nodes), the
process reaper, and the event sender. They feed one queue; the loop thread
owns all state, so nothing is locked. Work is event-driven: a watch event, a
process exit or a due timer wakes the loop; then it schedules pending pods (if
anything changed), runs the kubelet, and writes changed pod statuses.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from .._time import rfc3339
from .api import Api, ApiException
from .events import EventRecorder
from .images import ImageStore
from .kubelet import Kubelet
from .logserver import LogServer, pod_views
from .node import NodeConfig, node_object, node_status
from .oom import INTERVAL as OOM_INTERVAL
from .process import ProcessTable
from .scheduler import is_schedulable_by_us, node_info, pod_requests, schedule

__all__ = ["Agent", "RegistrationRefused"]

Json = dict[str, Any]
log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 10.0
FAILED_SCHEDULING_REPEAT = 60.0


class RegistrationRefused(Exception):
    """The API server refused our credentials while registering nodes; says what they need."""


#: What the agent's credentials need (a kubelet's ``system:node`` rights plus the scheduler's).
NEEDS = (
    "nodes: create, get, list, watch, patch; nodes/status: patch; pods: list, watch, delete; "
    "pods/status: patch; pods/binding: create (unless --no-scheduler); secrets, configmaps: get; "
    "events: create, patch"
)


class Agent:
    """Kubelet and scheduler for ``nodes``, talking only to the Kubernetes API.

    Parameters
    ----------
    api : Api
        The cluster.
    nodes : list of NodeConfig
        Nodes to register and serve.
    state_dir : Path
        Logs (``logs/<ns>/<pod>/<container>.log``) and process records.
    images : ImageStore
        Pull allow-list.
    scheduler : bool
        Also act as ``default-scheduler`` (exactly one agent per cluster should).
    scheduler_name : str
        ``spec.schedulerName`` served.
    on_registered : callable, optional
        Called once the nodes are registered (``--ready-file`` writes its file).
    logserver : LogServer, optional
        The kubelet API listener; the loop publishes its pods to it and stops it.
    """

    def __init__(
        self,
        api: Api,
        nodes: list[NodeConfig],
        state_dir: Path,
        images: ImageStore,
        *,
        scheduler: bool = True,
        scheduler_name: str = "default-scheduler",
        on_registered: Callable[[], None] | None = None,
        logserver: LogServer | None = None,
    ) -> None:
        self.on_registered = on_registered
        self.logserver = logserver
        self.api = api
        self.node_configs = {n.name: n for n in nodes}
        self.scheduler_enabled = scheduler
        self.scheduler_name = scheduler_name
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.stopping = threading.Event()
        self.record = EventRecorder(api)
        self.procs = ProcessTable(state_dir, lambda key, code: self.queue.put(("exit", key, code)))
        self.kubelet = Kubelet(
            self.node_configs, state_dir, api, self.record, images, self.call_later, self.procs
        )
        self.pods: dict[str, Json] = {}
        self.nodes: dict[str, Json] = {}
        self.assumed: dict[str, str] = {}
        self.unschedulable: dict[str, tuple[str, float]] = {}
        self.sched_dirty = True
        self._retry_armed = False
        self.registered_at = rfc3339()

    # -- plumbing ---------------------------------------------------------------------
    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread after ``delay`` seconds (loop thread only)."""
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self._seq), fn))

    def stop(self) -> None:
        """Ask the loop to stop (any thread, signal handlers included)."""
        self.stopping.set()
        # Not queue.put() here: a signal handler could interrupt the loop thread while it
        # holds the queue's lock. A short-lived thread wakes the loop instead.
        threading.Thread(target=self.queue.put, args=(("stop",),), daemon=True).start()

    def register_nodes(self) -> None:
        """Create (or update) our Node objects and mark them Ready.

        Raises
        ------
        RegistrationRefused
            401/403 from the API server; the message lists what the agent needs.
        """
        for cfg in self.node_configs.values():
            body = node_object(cfg)
            try:
                try:
                    self.api.create_node(body)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    taints = body["spec"].get("taints")
                    self.api.patch_node(
                        cfg.name, {"metadata": body["metadata"], "spec": {"taints": taints}}
                    )
                self.api.patch_node_status(cfg.name, node_status(cfg, since=self.registered_at))
            except ApiException as exc:
                if exc.status not in (401, 403):
                    raise
                raise RegistrationRefused(
                    f"the API server refused to register node {cfg.name}: {exc.status} "
                    f"{exc.reason}: {exc.body}\nThe agent's credentials need {NEEDS}."
                ) from exc

    def _heartbeat(self) -> None:
        for cfg in self.node_configs.values():
            try:
                self.api.patch_node_status(cfg.name, node_status(cfg, since=self.registered_at))
            except Exception:
                log.warning("heartbeat of %s failed", cfg.name, exc_info=True)
        self.call_later(HEARTBEAT_SECONDS, self._heartbeat)

    def _enforce_memory(self) -> None:
        try:
            self.kubelet.enforce_memory()
        finally:
            self.call_later(OOM_INTERVAL, self._enforce_memory)

    def _watch(self, kind: str) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.list_pods() if kind == "pods" else self.api.list_nodes()
                self.queue.put((f"{kind}-sync", listing.get("items") or []))
                rv = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for event in self.api.watch(kind, rv):
                        etype, obj = event.get("type"), event.get("object") or {}
                        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if etype == "ERROR":
                            raise RuntimeError(f"watch error: {obj}")
                        if new_rv:
                            rv = new_rv
                        if etype != "BOOKMARK":
                            self.queue.put((kind, etype, obj))
            except Exception:
                if self.stopping.is_set():
                    return
                log.info("%s watch restarting", kind, exc_info=True)
                time.sleep(0.5)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        """Register nodes, start watches, and serve until :meth:`stop`."""
        self.register_nodes()
        if self.on_registered is not None:
            self.on_registered()
        for kind in ("pods", "nodes"):
            threading.Thread(
                target=self._watch, args=(kind,), name=f"watch-{kind}", daemon=True
            ).start()
        self.call_later(HEARTBEAT_SECONDS, self._heartbeat)
        self.call_later(OOM_INTERVAL, self._enforce_memory)
        try:
            while not self.stopping.is_set():
                timeout = 1.0
                if self.timers:
                    timeout = min(timeout, max(0.0, self.timers[0][0] - time.monotonic()))
                try:
                    item = self.queue.get(timeout=timeout)
                    self._handle(item)
                    for _ in range(500):
                        self._handle(self.queue.get_nowait())
                except queue.Empty:
                    pass
                while self.timers and self.timers[0][0] <= time.monotonic():
                    _, _, fn = heapq.heappop(self.timers)
                    self._safely(fn)
                if self.sched_dirty and self.scheduler_enabled:
                    self.sched_dirty = False
                    self._safely(self._schedule_pending)
                self._safely(self._flush)
                if self.logserver is not None:
                    self.logserver.publish(pod_views(self.kubelet.runs.values()))
        finally:
            self.shutdown()

    def _safely(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("agent step failed")

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "stop":
            self.stopping.set()
        elif kind == "exit":
            self._safely(lambda: self.kubelet.on_exit(item[1], item[2]))
        elif kind == "pods-sync":
            seen = {p["metadata"]["uid"]: p for p in item[1]}
            for uid, pod in list(self.pods.items()):
                if uid not in seen:
                    self._pod_event("DELETED", pod)
            for pod in seen.values():
                self._pod_event("MODIFIED", pod)
        elif kind == "pods":
            self._pod_event(item[1], item[2])
        elif kind == "nodes-sync":
            self.nodes = {n["metadata"]["name"]: n for n in item[1]}
            self.sched_dirty = True
        elif kind == "nodes":
            name = item[2]["metadata"]["name"]
            if item[1] == "DELETED":
                self.nodes.pop(name, None)
            else:
                self.nodes[name] = item[2]
            self.sched_dirty = True

    def _pod_event(self, etype: str, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        node = (pod.get("spec") or {}).get("nodeName")
        self.sched_dirty = True
        if etype == "DELETED":
            self.pods.pop(uid, None)
            self.assumed.pop(uid, None)
            self.unschedulable.pop(uid, None)
            if node in self.node_configs:
                self._safely(lambda: self.kubelet.deleted(pod))
            return
        self.pods[uid] = pod
        if node:
            self.assumed.pop(uid, None)
            self.unschedulable.pop(uid, None)
        if node in self.node_configs:
            self._safely(lambda: self.kubelet.sync(pod))

    def _flush(self) -> None:
        for run, status in self.kubelet.flush():
            try:
                self.api.patch_pod_status(run.namespace, run.name, status)
            except ApiException as exc:
                if exc.status != 404:  # 404: the pod is gone, its DELETED event follows
                    log.warning("status of %s/%s: %s", run.namespace, run.name, exc.status)
                    self.kubelet.unsent(run)
                continue
            except Exception:  # the API server unreachable: try again on the next pass
                log.warning("status of %s/%s not sent", run.namespace, run.name, exc_info=True)
                self.kubelet.unsent(run)
                continue
            self.kubelet.sent(run, status)

    # -- the scheduler ----------------------------------------------------------------
    def _schedule_pending(self) -> None:
        pending = [
            p
            for uid, p in self.pods.items()
            if uid not in self.assumed and is_schedulable_by_us(p, self.scheduler_name)
        ]
        if not pending:
            return
        infos = [node_info(n) for n in self.nodes.values()]
        used: dict[str, dict[str, Fraction]] = {}
        for uid, p in self.pods.items():
            target = (p.get("spec") or {}).get("nodeName") or self.assumed.get(uid)
            if not target or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            bucket = used.setdefault(target, {})
            for name, value in pod_requests(p).items():
                bucket[name] = bucket.get(name, Fraction(0)) + value
        pending.sort(
            key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
        )
        for pod in pending:
            meta = pod["metadata"]
            requests = pod_requests(pod)
            decision = schedule(pod, infos, used, requests)
            if decision.node is not None:
                try:
                    self.api.bind(meta["namespace"], meta["name"], meta["uid"], decision.node)
                except ApiException as exc:
                    log.info("binding %s failed: %s", meta["name"], exc.status)
                    continue
                self.assumed[meta["uid"]] = decision.node
                bucket = used.setdefault(decision.node, {})
                for name, value in requests.items():
                    bucket[name] = bucket.get(name, Fraction(0)) + value
                self.record(
                    pod,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {decision.node}",
                    component="default-scheduler",
                )
                continue
            last = self.unschedulable.get(meta["uid"])
            if (
                last
                and last[0] == decision.message
                and time.monotonic() - last[1] < FAILED_SCHEDULING_REPEAT
            ):
                continue
            self.unschedulable[meta["uid"]] = (decision.message, time.monotonic())
            self.record(
                pod, "Warning", "FailedScheduling", decision.message, component="default-scheduler"
            )
            if not last or last[0] != decision.message:
                status = {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": decision.message,
                            "lastProbeTime": None,
                            "lastTransitionTime": rfc3339(),
                        }
                    ],
                }
                try:
                    self.api.patch_pod_status(meta["namespace"], meta["name"], status)
                except ApiException as exc:
                    log.info("unschedulable status of %s: %s", meta["name"], exc.status)
        if self.unschedulable and not self._retry_armed:
            self._retry_armed = True
            self.call_later(FAILED_SCHEDULING_REPEAT, self._retry_unschedulable)

    def _retry_unschedulable(self) -> None:
        self._retry_armed = False
        self.sched_dirty = True

    # -- shutdown ---------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill every container, mark our nodes ``Ready=Unknown``, stop the sender."""
        self.stopping.set()
        self.procs.kill_all(grace=2.0)
        for cfg in self.node_configs.values():
            try:
                self.api.patch_node_status(cfg.name, node_status(cfg, ready=False))
            except Exception:
                pass
        self.record.close(timeout=1.0)
        if self.logserver is not None:
            self.logserver.stop()
