"""Helpers for the server-extension tests: real kernels started through the server's REST API,
driven with jupyter_client's async client (the server shares the test's event loop)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psutil
from jupyter_client import AsyncKernelClient

SERVER_CONFIG: dict[str, Any] = {
    "ServerApp": {"jpserver_extensions": {"jupyter_flame": True}},
    "FlameServer": {"reap_interval": 1.0, "poll_interval": 0.2},
}


class ServerKernel:
    """A kernel of the test server, and a client to run cells in it."""

    def __init__(self, serverapp: Any, kernel_id: str) -> None:
        self.id = kernel_id
        km = serverapp.kernel_manager.get_kernel(kernel_id)
        self.client = AsyncKernelClient(connection_file=km.connection_file)
        self.client.load_connection_file()
        self.client.start_channels()
        self.pid = int(km.provisioner.process.pid)

    async def run(self, code: str, timeout: float = 120) -> str:
        await self.client.wait_for_ready(timeout=60)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(content["traceback"]))
            elif msg["msg_type"] == "execute_result":
                out.append(content["data"].get("text/plain", ""))

        reply = await self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        text = "".join(out)
        if reply["content"]["status"] != "ok":
            raise AssertionError(f"cell failed:\n{code}\n{text}")
        return text

    def close(self) -> None:
        self.client.stop_channels()


async def start_kernel(jp_fetch: Any, serverapp: Any, path: str = "flame.ipynb") -> ServerKernel:
    """A kernel in a session for notebook ``path`` (so the panel can name it)."""
    resp = await jp_fetch("api", "sessions", method="POST", body=json.dumps(
        {"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}}))
    kernel_id = json.loads(resp.body)["kernel"]["id"]
    return ServerKernel(serverapp, kernel_id)


async def runners(jp_fetch: Any) -> list[dict[str, Any]]:
    resp = await jp_fetch("flame", "api", "runners")
    return list(json.loads(resp.body)["runners"])


async def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
