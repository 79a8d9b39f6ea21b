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
from collections.abc import Callable
from typing import Any

from jupyter_flame.backends.kubernetes._pod_parts import ANNOTATION_PREFIX
from jupyter_flame.backends.kubernetes.api import call
from jupyter_flame.backends.published import LiveState, StatePublisher
from jupyter_flame.errors import BackendError

__all__ = ["ANNOTATION_LIVE", "INTERVAL", "live_publisher"]

log = logging.getLogger("jupyter_flame.backends.kubernetes")

ANNOTATION_LIVE = ANNOTATION_PREFIX + "live"
INTERVAL = 2.0


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
