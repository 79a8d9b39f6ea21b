"""kube-controller-manager's workload controllers, run inside the API server process.

:class:`WorkloadControllers` holds the Deployment controller (:mod:`.deployment`) and
the ReplicaSet controller (:mod:`.replicaset`). A store listener notices every change
of a pod, ReplicaSet or Deployment and schedules one pass on the event loop (as an
informer wakes a controller): the request that made the change has been answered by
then, so clients see controllers act asynchronously, as on a cluster. A pass syncs
every Deployment, then every ReplicaSet, then lets the garbage collector run; the
writes of a pass schedule the next one, until nothing changes. Timed work (``minReadySeconds``,
``progressDeadlineSeconds``, retries after a refused pod) asks for a later pass.

Without a running event loop (a unit test driving the registry directly) nothing is
scheduled: call :meth:`WorkloadControllers.sync` by hand.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

from .controller import DEPLOYS, PODS, RSETS
from .deletion import Deleter
from .deployment import DeploymentController
from .registry import Registry
from .replicaset import ReplicaSetController
from .status import ApiError
from .store import Change

__all__ = ["WorkloadControllers"]

log = logging.getLogger("jupyter_flame.sim.apiserver.workloads")
_WATCHED = {PODS.key, RSETS.key, DEPLOYS.key}


class WorkloadControllers:
    """The Deployment and ReplicaSet controllers over one server's registry.

    Parameters
    ----------
    registry
        Where objects are read and written.
    deleter
        Deletes pods (gracefully) and old ReplicaSets, and collects garbage after a pass.
    """

    def __init__(self, registry: Registry, deleter: Deleter) -> None:
        self.store = registry.store
        self.deleter = deleter
        self.deployments = DeploymentController(registry, deleter, self._schedule)
        self.replicasets = ReplicaSetController(registry, deleter, self._schedule)
        self._scheduled = False
        self._wake_at: float | None = None
        self.store.listeners.append(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.res in _WATCHED:
            self._schedule()

    def _schedule(self, delay: float = 0.0) -> None:
        """Ask for a pass now (next loop iteration) or in ``delay`` seconds."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if delay <= 0:
            if not self._scheduled:
                self._scheduled = True
                # a fresh context: not the one of the request whose write woke us
                loop.call_soon(self._run, context=contextvars.Context())
            return
        now = time.monotonic()
        if self._wake_at is None or self._wake_at < now or now + delay < self._wake_at:
            self._wake_at = now + delay
            loop.call_later(delay, self._schedule, context=contextvars.Context())

    def _run(self) -> None:
        self._scheduled = False
        self.sync()

    def sync(self) -> None:
        """One pass of both controllers over every Deployment and ReplicaSet."""
        for res, controller in ((DEPLOYS, self.deployments), (RSETS, self.replicasets)):
            keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in self.store.list(res.key)]
            for ns, name in keys:
                obj = self.store.get(res.key, ns, name)  # the latest: an earlier sync may have written it
                if obj is None:
                    continue
                try:
                    controller.sync(obj)
                except ApiError as err:  # e.g. its namespace is being deleted: retry a little later
                    log.info("%s %s/%s: %s", res.kind, ns, name, err)
                    self._schedule(1.0)
        self.deleter.reconcile()
