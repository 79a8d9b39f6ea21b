"""Drive a real Jupyter kernel (jupyter_client) the way a notebook front end does."""

from __future__ import annotations

import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Output:
    kind: str  # stream | display_data | update_display_data | execute_result | error | clear_output
    content: dict[str, Any]
    at: float


@dataclass
class CellResult:
    status: str
    outputs: list[Output] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    payload: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(o.content["text"] for o in self.outputs
                       if o.kind == "stream" and o.content["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.content["text"] for o in self.outputs
                       if o.kind == "stream" and o.content["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        for o in self.outputs:
            if o.kind == "error":
                return o.content
        return None

    @property
    def result(self) -> str | None:
        for o in self.outputs:
            if o.kind == "execute_result":
                return str(o.content["data"].get("text/plain"))
        return None

    def displays(self) -> list[dict[str, Any]]:
        return [o.content for o in self.outputs if o.kind in ("display_data", "update_display_data")]

    @property
    def text(self) -> str:
        """What a plain-text frontend shows: stdout and each display's ``text/plain``."""
        shown = [d["data"].get("text/plain", "") for d in self.displays()]
        return "\n".join([self.stdout, *shown])

    def traceback_text(self) -> str:
        err = self.error
        return "\n".join(err["traceback"]) if err else ""


class Kernel:
    """A real IPython kernel with jupyter_flame loaded."""

    def __init__(self, cwd: Path | None = None, env: dict[str, str] | None = None,
                 load: bool = True, arguments: list[str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        #: every comm and display message seen on IOPub while collecting cells, in order (what
        #: a browser receives, whichever thread of the kernel sent it)
        self.comm_log: list[dict[str, Any]] = []
        kenv = dict(os.environ)
        kenv.update(env or {})
        kenv.setdefault("PYTHONUNBUFFERED", "1")
        self.km.start_kernel(cwd=str(cwd) if cwd else None, env=kenv,
                             extra_arguments=["--HistoryManager.enabled=False",
                                              *(arguments or [])])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        if load:
            res = self.run("%load_ext jupyter_flame")
            assert res.status == "ok", res.traceback_text()

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def run(self, code: str, timeout: float = 120, stop_on_error: bool = False) -> CellResult:
        """Execute a cell and collect everything it outputs until the kernel is idle."""
        return self.collect(str(self.kc.execute(code, stop_on_error=stop_on_error)), timeout)

    def start(self, code: str) -> str:
        """Send a cell and return at once (its msg id); :meth:`collect` gathers its outputs."""
        return str(self.kc.execute(code))

    def collect(self, msg_id: str, timeout: float = 60) -> CellResult:
        """Collect the outputs and reply of the cell sent as ``msg_id``."""
        result = CellResult(status="?", started=time.monotonic())
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell {msg_id} did not finish in {timeout} s; so far: "
                                   f"{result.outputs}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["msg_type"] in ("comm_open", "comm_msg", "comm_close", "display_data",
                                   "update_display_data"):
                self.comm_log.append(msg)  # what the views show, whichever thread sent it
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            if kind in ("stream", "display_data", "update_display_data", "execute_result",
                        "error", "clear_output"):
                result.outputs.append(Output(kind, msg["content"], time.monotonic()))
        while True:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result.status = reply["content"]["status"]
        result.payload = list(reply["content"].get("payload", []))
        result.finished = time.monotonic()
        return result

    def value(self, expr: str) -> Any:
        """Evaluate ``expr`` in the kernel and return it (via repr/eval of simple values)."""
        res = self.run(f"print(repr({expr}))")
        assert res.status == "ok", res.traceback_text()
        import ast

        return ast.literal_eval(res.stdout.strip().splitlines()[-1])

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def kill(self) -> None:
        """SIGKILL the kernel: no atexit, no cleanup."""
        import signal

        os.kill(self.pid, signal.SIGKILL)
        try:
            self.kc.stop_channels()
        finally:
            self.km.cleanup_resources()

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)


def python() -> str:
    return sys.executable
