"""REST routes under ``/flame/api``: thin tornado adapters over :class:`~.service.FlameServer`.

Every route is ``@web.authenticated`` and ``@authorized`` on the ``flame`` resource (reads for
GET, writes for DELETE and POST), and Jupyter's XSRF check guards the writes. Errors come back
as JSON ``{"message", "reason", "status"}``: 404 for an unknown runner, Kubernetes' own 403
(with the missing RBAC rule and the fix) and 503 when the API server cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_flame.errors import BackendError
from jupyter_flame.server.service import FlameServer, RunnerNotFound

__all__ = ["routes"]

#: how often the stream sends a comment line when nothing changed (keeps proxies from
#: closing an idle connection)
KEEPALIVE = 15.0


class FlameHandler(APIHandler):
    auth_resource = "flame"

    @property
    def flame(self) -> FlameServer:
        return self.settings["jupyter_flame"]  # type: ignore[no-any-return]

    def fail(self, status: int, reason: str, message: str, **extra: Any) -> None:
        self.set_status(status, reason)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status, "reason": reason, "message": message,
                                **extra}))

    async def guarded(self, work: Any) -> Any:
        """Run ``work`` (an awaitable); map failures to HTTP answers (``None`` then)."""
        try:
            return await work
        except RunnerNotFound as exc:
            self.fail(404, "Not Found", f"No runner {exc.args[0]!r}: it ended, or it never "
                      "existed. GET /flame/api/runners lists the runners there are.")
        except BackendError as exc:
            status = exc.status if exc.status in (401, 403, 404, 409, 422) else 503
            reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                      409: "Conflict", 422: "Unprocessable Entity"}.get(status,
                                                                        "Service Unavailable")
            self.fail(status, reason, str(exc), source="kubernetes",
                      kubernetes_status=exc.status)
        return None


class RunnersHandler(FlameHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        snap = await self.guarded(self.flame.snapshot())
        if snap is None:
            return
        problem = next(iter(snap["problems"]), None)
        if problem is None:
            self.finish(json.dumps(snap))
            return
        # Kubernetes could not be listed: say so with its status (403, or 503 when the API
        # server is unreachable) and still give the local runners, so the panel shows both
        status = problem["status"] if problem["status"] in (401, 403) else 503
        self.fail(status, "Forbidden" if status == 403 else "Service Unavailable",
                  problem["message"], source="kubernetes", **snap)


class RunnerHandler(FlameHandler):
    @web.authenticated
    @authorized
    async def get(self, runner_id: str) -> None:
        row = await self.guarded(self.flame.lookup(runner_id))
        if row is not None:
            self.finish(json.dumps(row))

    @web.authenticated
    @authorized
    async def delete(self, runner_id: str) -> None:
        done = await self.guarded(self.flame.delete(runner_id))
        if done is not None:
            self.finish(json.dumps(done))


class LogsHandler(FlameHandler):
    @web.authenticated
    @authorized
    async def get(self, runner_id: str) -> None:
        raw = self.get_argument("lines", "")
        if raw and not raw.isdigit():
            self.fail(400, "Bad Request", f"lines={raw!r} is not a number of lines: give a "
                      "positive integer, e.g. ?lines=100.")
            return
        logs = await self.guarded(self.flame.logs(runner_id, int(raw) if raw else None))
        if logs is not None:
            self.finish(json.dumps(logs))


class CleanupHandler(FlameHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """What ``POST`` would delete now (the panel's confirmation lists it)."""
        orphans = await self.guarded(self.flame.orphans())
        if orphans is not None:
            self.finish(json.dumps({"orphans": orphans}))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (ids is not None and not (
                isinstance(ids, list) and all(isinstance(i, str) for i in ids))):
            self.fail(400, "Bad Request", 'The body must be JSON {"ids": ["<runner id>", ...]} '
                      "(the ids GET /flame/api/cleanup listed), or {} for every orphan.")
            return
        done = await self.guarded(self.flame.cleanup(ids))
        if done is not None:
            self.finish(json.dumps({"deleted": done}))


class StreamHandler(FlameHandler):
    """Server-sent events: one ``runners`` event with the full snapshot on every change."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        queue = self._queue = self.flame.listen()
        try:
            snap = await self.guarded(self.flame.snapshot())
            if snap is None:
                return
            await self._send(json.dumps(snap))
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                while not queue.empty():  # send only the newest of a burst
                    message = queue.get_nowait()
                if not message:  # the client went away
                    return
                await self._send(message)
        except StreamClosedError:
            pass
        finally:
            self.flame.unlisten(queue)

    async def _send(self, data: str) -> None:
        self.write(f"event: runners\ndata: {data}\n\n")
        await self.flush()

    def on_connection_close(self) -> None:
        queue = getattr(self, "_queue", None)
        if queue is not None:
            queue.put_nowait("")


def routes(base_url: str) -> list[tuple[str, type[FlameHandler]]]:
    prefix = base_url.rstrip("/") + "/flame/api"
    rid = r"(?P<runner_id>[A-Za-z0-9._~-]+)"
    return [
        (prefix + r"/runners", RunnersHandler),
        (prefix + r"/runners/stream", StreamHandler),
        (prefix + rf"/runners/{rid}/logs", LogsHandler),
        (prefix + rf"/runners/{rid}", RunnerHandler),
        (prefix + r"/cleanup", CleanupHandler),
    ]
