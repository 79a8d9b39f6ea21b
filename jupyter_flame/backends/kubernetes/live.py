"""Runner pods' live state (busy/idle, CPU, memory) as the annotation ``jupyter-flame/live``.

The server extension lists runner pods by label and reads this annotation; it never talks to
kernels. Writes are coalesced by :class:`~jupyter_flame.backends.published.StatePublisher`
(at most one merge patch per runner every ``INTERVAL`` seconds), and a refusal (no ``patch
pods`` rule) turns publication off for the backend instead of failing runners.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from jupyter_flame.backends.kubernetes._pod_parts import ANNOTATION_PREFIX
from jupyter_flame.backends.kubernetes.api import call
from jupyter_flame.backends.published import LiveState, StatePublisher
from jupyter_flame.errors import BackendError

__all__ = ["ANNOTATION_KERNEL_PID", "ANNOTATION_LIVE", "INTERVAL", "live_publisher",
           "mark_kernel_process"]

log = logging.getLogger("jupyter_flame.backends.kubernetes")

ANNOTATION_LIVE = ANNOTATION_PREFIX + "live"
#: the kernel process's pid: the server restarts a dead kernel under the same kernel id, so
#: the id alone cannot tell the server that the pool which made this pod died with its process
ANNOTATION_KERNEL_PID = ANNOTATION_PREFIX + "kernel-pid"
INTERVAL = 2.0


def mark_kernel_process(manifest: dict[str, Any]) -> None:
    """Annotate a runner pod manifest with this (the kernel's) process id."""
    meta = manifest.setdefault("metadata", {})
    meta.setdefault("annotations", {})[ANNOTATION_KERNEL_PID] = str(os.getpid())


def live_publisher(pod_of: Callable[[str], tuple[Any, str, str] | None]) -> StatePublisher:
    """A publisher that patches runner pods; ``pod_of(runner_id)`` gives the CoreV1Api, the
    namespace and the pod's name, or ``None`` when the runner is gone."""
    refused = False

    async def publish(runner_id: str, state: LiveState) -> None:
        nonlocal refused
        where = pod_of(runner_id)
        if refused or where is None or not state:
            return
        core, namespace, name = where
        body = {"metadata": {"annotations": {ANNOTATION_LIVE: json.dumps(state)}}}
        try:
            await asyncio.to_thread(call, "patch", "pods", namespace, core.patch_namespaced_pod,
                                    name, namespace, body, missing_ok=True, raw=True)
        except BackendError as exc:
            if exc.status == 403:
                refused = True
                log.info("runner pods' live state is not published (the server panel shows no "
                         "busy/CPU/memory): %s", exc)
            else:
                log.debug("could not publish the state of %s: %s", name, exc)

    return StatePublisher(publish, interval=INTERVAL)
