"""Event recording off the loop thread, aggregated like client-go's recorder.

Repeats of the same (object, type, reason, message) bump ``count`` and
``lastTimestamp`` of the existing Event instead of creating a new one.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from .._time import rfc3339
from .api import Api, ApiException

__all__ = ["EventRecorder"]

Json = dict[str, Any]
log = logging.getLogger(__name__)


class EventRecorder:
    """Sends core/v1 Events from a background thread.

    Parameters
    ----------
    api : Api
        The cluster.
    """

    def __init__(self, api: Api) -> None:
        self.api = api
        self._queue: queue.Queue[Json | None] = queue.Queue()
        self._seen: dict[tuple[str, ...], tuple[str, int]] = {}
        self._thread = threading.Thread(target=self._send_loop, name="events", daemon=True)
        self._thread.start()

    def __call__(
        self,
        obj: Json,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str = "kubelet",
        host: str = "",
        field_path: str = "",
    ) -> None:
        """Record an event about ``obj`` (a pod or node JSON)."""
        meta = obj.get("metadata") or {}
        involved: Json = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", "default"),
            "uid": meta.get("uid", ""),
        }
        if meta.get("resourceVersion"):
            involved["resourceVersion"] = meta["resourceVersion"]
        if field_path:
            involved["fieldPath"] = field_path
        stamp = rfc3339()
        self._queue.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{involved['name']}.{uuid.uuid4().hex[:16]}",
                    "namespace": involved["namespace"],
                },
                "involvedObject": involved,
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": component, **({"host": host} if host else {})},
                "reportingComponent": component,
                "reportingInstance": host or component,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
        )

    def _send_loop(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            inv = body["involvedObject"]
            key = (
                inv["uid"],
                inv.get("fieldPath", ""),
                body["type"],
                body["reason"],
                body["message"],
            )
            namespace = inv["namespace"]
            try:
                if key in self._seen:
                    name, count = self._seen[key]
                    self._seen[key] = (name, count + 1)
                    patch = {"count": count + 1, "lastTimestamp": body["lastTimestamp"]}
                    self.api.patch_event(namespace, name, patch)
                else:
                    self._seen[key] = (body["metadata"]["name"], 1)
                    self.api.create_event(namespace, body)
            except ApiException as exc:
                log.debug("event %s/%s not recorded: %s", namespace, body["reason"], exc.status)
            except Exception:  # the API server may be gone at shutdown
                log.debug("event not recorded", exc_info=True)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (up to ``timeout`` seconds) and stop."""
        self._queue.put(None)
        self._thread.join(timeout)
