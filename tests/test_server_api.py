"""The jupyter-server extension through its REST routes (pytest-jupyter's ``jp_fetch``): real
kernels of the test server run real ``%%flame`` cells on local runners; the routes list, show
logs of, delete and clean up those runners; the reaper removes runners of a SIGKILLed kernel.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from .server_harness import SERVER_CONFIG, pid_alive, runners, start_kernel, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ROUTES = [
    ("GET", "runners"),
    ("GET", "runners/stream"),
    ("GET", "runners/local~nope"),
    ("GET", "runners/local~nope/logs"),
    ("DELETE", "runners/local~nope"),
    ("GET", "cleanup"),
    ("POST", "cleanup"),
]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return json.loads(json.dumps(SERVER_CONFIG))


def _body(method: str) -> str | None:
    return "{}" if method == "POST" else None


async def _status(jp_fetch: Any, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        resp = await jp_fetch("flame", "api", *path.split("/"), method=method,
                              body=_body(method), allow_nonstandard_methods=True, **kwargs)
        return resp.code, resp.body
    except HTTPClientError as exc:
        body = exc.response.body if exc.response is not None else b""
        return exc.code, json.loads(body) if body.startswith(b"{") else body


async def test_empty_listing(jp_fetch: Any) -> None:
    resp = await jp_fetch("flame", "api", "runners")
    snap = json.loads(resp.body)
    assert snap["runners"] == [] and snap["problems"] == [] and snap["kubernetes"] is None
    assert snap["summary"] == {"runners": 0, "gpus": 0, "orphans": 0}


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_token(jp_fetch: Any, method: str, path: str) -> None:
    code, _ = await _status(jp_fetch, method, path, headers={"Authorization": ""})
    assert code in (401, 403)


class NoFlame(Authorizer):
    """Allows everything but the ``flame`` resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "flame"


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_asks_the_authorizer(jp_fetch: Any, jp_serverapp: Any, method: str,
                                               path: str) -> None:
    jp_serverapp.web_app.settings["authorizer"] = NoFlame(parent=jp_serverapp,
                                                          identity_provider=jp_serverapp.identity_provider)
    code, _ = await _status(jp_fetch, method, path)
    assert code == 403


async def test_writes_need_xsrf_with_cookie_auth(jp_fetch: Any, jp_serverapp: Any) -> None:
    token = jp_serverapp.identity_provider.token
    resp = await jp_fetch("api", "status", headers={"Authorization": ""}, params={"token": token})
    cookies = [c.split(";", 1)[0] for c in resp.headers.get_list("Set-Cookie")]
    login = [c for c in cookies if c.startswith("username-")]
    assert login, cookies
    resp = await jp_fetch("login", headers={"Authorization": ""})  # the login form sets _xsrf
    cookies += [c.split(";", 1)[0] for c in resp.headers.get_list("Set-Cookie")]
    xsrf = next(c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    jar = {"Authorization": "", "Cookie": "; ".join(cookies)}
    code, _ = await _status(jp_fetch, "GET", "runners", headers=jar)
    assert code == 200  # reads need no XSRF token
    for method, path in (("DELETE", "runners/local~nope"), ("POST", "cleanup")):
        code, body = await _status(jp_fetch, method, path, headers=jar)
        assert code == 403, (method, path, body)
        code, body = await _status(jp_fetch, method, path, headers={**jar, "X-XSRFToken": xsrf})
        assert code == (404 if method == "DELETE" else 200), (method, path, body)


async def test_error_mapping(jp_fetch: Any) -> None:
    for method, path in (("GET", "runners/local~nope"), ("DELETE", "runners/local~nope"),
                         ("GET", "runners/pod~default~nope/logs")):
        code, body = await _status(jp_fetch, method, path)
        assert code == 404 and "No runner" in body["message"], (method, path, body)
        assert body["status"] == 404
    code, body = await _status(jp_fetch, "GET", "runners/local~nope/logs", params={"lines": "x"})
    assert code == 400 and "positive integer" in body["message"]
    try:
        await jp_fetch("flame", "api", "cleanup", method="POST", body='{"ids": "all"}')
    except HTTPClientError as exc:
        assert exc.code == 400
        assert '{"ids": [' in json.loads(exc.response.body)["message"]
    else:
        raise AssertionError("a bad cleanup body was accepted")


async def test_local_runner_listed_with_logs_and_deleted(jp_fetch: Any, jp_serverapp: Any,
                                                         jp_runtime_dir: Path) -> None:
    kernel = await start_kernel(jp_fetch, jp_serverapp, "work/analysis.ipynb")
    try:
        await kernel.run("%load_ext jupyter_flame")
        out = await kernel.run("%%flame --pool web --cpu 1\nimport os\nprint(os.getpid())")
        runner_pid = int(out.split()[-1])

        async def listed() -> Any:
            rows = [r for r in await runners(jp_fetch) if r["pid"] == runner_pid]
            return rows[0] if rows and rows[0]["activity"] == "idle" else None

        row = await wait_for(listed, 20, "the runner in the listing, idle")
        assert row["backend"] == "local" and row["pool"] == "web"
        assert row["kernel_id"] == kernel.id and row["kernel_live"] is True
        assert row["notebook"] == "work/analysis.ipynb" and row["phase"] == "Running"
        assert row["resources"] == {"cpu": "1"} and row["orphan"] == ""
        assert row["rss"] > 1_000_000 and row["cpu_percent"] is not None
        record = next((jp_runtime_dir / "jupyter-flame" / "runners").glob("*.json"))
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert "key" not in record.read_text().lower()

        resp = await jp_fetch("flame", "api", "runners", row["id"], "logs")
        lines = json.loads(resp.body)["lines"]
        assert any(f"pid {runner_pid}" in line and "dialing" in line for line in lines), lines

        resp = await jp_fetch("flame", "api", "runners", row["id"], method="DELETE")
        assert json.loads(resp.body)["action"] == "killed"
        assert not pid_alive(runner_pid) and not record.exists()
        assert all(r["pid"] != runner_pid for r in await runners(jp_fetch))
        assert pid_alive(kernel.pid)  # only the runner went
    finally:
        kernel.close()


async def test_reaper_kills_the_runners_of_a_killed_kernel(jp_fetch: Any, jp_serverapp: Any,
                                                           jp_runtime_dir: Path) -> None:
    """A hung runner (its process group SIGSTOPped, sentinel included: nothing of it can
    notice its kernel is gone) and a process a cell left behind: both gone within 30 s of the
    kernel's SIGKILL, and the record with them."""
    kernel = await start_kernel(jp_fetch, jp_serverapp)
    try:
        await kernel.run("%load_ext jupyter_flame")
        out = await kernel.run("%%flame --pool doomed\nimport os, subprocess\n"
                               "child = subprocess.Popen(['sleep', '600']).pid\n"
                               "print(os.getpid(), child)")
        runner_pid, child_pid = map(int, out.split()[-2:])
        await wait_for(lambda: _has(jp_fetch, runner_pid), 10, "the runner listed")
        os.killpg(runner_pid, signal.SIGSTOP)  # hung, its sentinel with it
        os.kill(kernel.pid, signal.SIGKILL)

        async def gone() -> bool:
            return not pid_alive(runner_pid) and not pid_alive(child_pid) and not list(
                (jp_runtime_dir / "jupyter-flame" / "runners").glob("*.json"))

        await wait_for(gone, 30, "the reaper to kill the runner and its child")
        reaped = jp_serverapp.web_app.settings["jupyter_flame"].reaped
        assert any(r["pid"] == runner_pid and r["orphan"] == "kernel gone" for r in reaped)
    finally:
        kernel.close()
        for pid in (runner_pid, child_pid):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _has(jp_fetch: Any, pid: int) -> bool:
    return any(r["pid"] == pid for r in await runners(jp_fetch))


async def test_cleanup_lists_orphans_then_deletes_what_was_confirmed(
        jp_fetch: Any, jp_serverapp: Any) -> None:
    flame = jp_serverapp.web_app.settings["jupyter_flame"]
    flame.reap = False  # leave the orphan to the user
    kernel = await start_kernel(jp_fetch, jp_serverapp)
    try:
        await kernel.run("%load_ext jupyter_flame")
        out = await kernel.run("%%flame --pool left\nimport os\nprint(os.getpid())")
        runner_pid = int(out.split()[-1])
        await wait_for(lambda: _has(jp_fetch, runner_pid), 10, "the runner listed")
        os.killpg(runner_pid, signal.SIGSTOP)  # hung (its sentinel too): nothing notices
        os.kill(kernel.pid, signal.SIGKILL)

        async def orphaned() -> Any:
            found = json.loads((await jp_fetch("flame", "api", "cleanup")).body)["orphans"]
            return found or None

        found = await wait_for(orphaned, 10, "the orphan in the cleanup preview")
        assert [r["pid"] for r in found] == [runner_pid]
        assert found[0]["orphan"] == "kernel gone"
        resp = await jp_fetch("flame", "api", "cleanup", method="POST",
                              body=json.dumps({"ids": ["local~not-confirmed"]}))
        assert json.loads(resp.body)["deleted"] == [] and pid_alive(runner_pid)
        resp = await jp_fetch("flame", "api", "cleanup", method="POST",
                              body=json.dumps({"ids": [found[0]["id"]]}))
        deleted = json.loads(resp.body)["deleted"]
        assert [(d["pid"], d["action"]) for d in deleted] == [(runner_pid, "killed")]
        assert not pid_alive(runner_pid)
    finally:
        kernel.close()
        if pid_alive(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)


async def test_stream_sends_every_change(jp_fetch: Any, jp_serverapp: Any, jp_http_port: int,
                                         jp_base_url: str, jp_runtime_dir: Path) -> None:
    """The live stream (server-sent events): a runner of a pool in this process appears
    without asking again, and disappears when the pool shuts down."""
    import asyncio

    from jupyter_flame import LocalBackend, Pool

    chunks: list[bytes] = []

    def events() -> list[dict[str, Any]]:
        text = b"".join(chunks).decode()
        return [json.loads(block.split("data: ", 1)[1]) for block in text.split("\n\n")
                if "data: " in block]

    flame = jp_serverapp.web_app.settings["jupyter_flame"]
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    token = jp_serverapp.identity_provider.token
    writer.write(f"GET {jp_base_url}flame/api/runners/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: token {token}\r\nAccept: text/event-stream\r\n\r\n".encode())

    async def read() -> None:
        while data := await reader.read(65536):
            chunks.append(data)

    stream = asyncio.ensure_future(read())
    pool = Pool("streamed", LocalBackend(runtime_dir=str(jp_runtime_dir)))
    try:
        await wait_for(lambda: _async(bool(events())), 10, "the first event")
        assert events()[0]["runners"] == []
        pid = await asyncio.to_thread(pool.call, os.getpid)

        async def seen(present: bool) -> bool:
            last = events()[-1]["runners"]
            return any(r["pid"] == pid for r in last) == present

        await wait_for(lambda: seen(True), 10, "the runner in a stream event")
        await asyncio.to_thread(pool.shutdown)
        await wait_for(lambda: seen(False), 10, "an event without the runner")
    finally:
        pool.shutdown()
        stream.cancel()
        writer.close()  # the browser tab closes
        await writer.wait_closed()
    await wait_for(lambda: _async(not flame.listeners), 20, "the closed stream to unlisten")


async def _async(value: Any) -> Any:
    return value
