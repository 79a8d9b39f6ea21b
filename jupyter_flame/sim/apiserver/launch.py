"""Start the stand-in API server as a child process (tests and tools).

``jupyter flame sim up`` does not use this: it spawns the server detached itself
(:mod:`jupyter_flame.sim.cli`).

Examples
--------
>>> srv = start_apiserver(tmp_path)                         # doctest: +SKIP
>>> srv.write_kubeconfig(tmp_path / "kubeconfig")           # doctest: +SKIP
>>> srv.stop()                                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..kubeconfig import kubeconfig_text


@dataclass
class ApiServerProcess:
    """A running API server.

    Attributes
    ----------
    url
        ``https://127.0.0.1:PORT`` (HTTPS: kubectl will not send bearer tokens
        over plain HTTP).
    admin_token
        Token of ``kubernetes-admin`` (group ``system:masters``).
    state_dir
        The server's state directory (``apiserver.json``, ``kubeconfig``, ``logs/``).
    ca_file
        PEM file of the CA that signed the serving certificate (trust it; there
        is no need for ``insecure-skip-tls-verify``, so ``insecure`` is False).
    process
        The ``subprocess.Popen`` (``None`` when attached to a server started elsewhere).
    """

    url: str
    admin_token: str
    state_dir: Path
    pid: int
    ca_file: str | None = None
    insecure: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        """The TCP port."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def log_dir(self) -> Path:
        """Where agents write ``<namespace>/<pod>/<container>.log``."""
        return self.state_dir / "logs"

    def write_kubeconfig(self, path: Path | str, token: str | None = None, namespace: str = "default") -> Path:
        """Write a kubeconfig for ``token`` (admin when ``None``) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ca_pem = Path(self.ca_file).read_text() if self.ca_file else None
        path.write_text(kubeconfig_text(self.url, token or self.admin_token, namespace, ca_pem))
        os.chmod(path, 0o600)
        return path

    def client_configuration(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.Configuration`` for ``token`` (admin when ``None``)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = self.ca_file
        cfg.api_key = {"authorization": token or self.admin_token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def alive(self) -> bool:
        """Whether the server process still runs."""
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ApiServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def read_info(state_dir: Path) -> dict[str, object] | None:
    """Read ``state_dir/apiserver.json`` (``None`` when absent or partial)."""
    try:
        return dict(json.loads((Path(state_dir) / "apiserver.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def start_apiserver(state_dir: Path, port: int = 0, *, history_size: int | None = None,
                    admin_token: str | None = None, timeout: float = 15.0,
                    exit_with_parent: bool = False) -> ApiServerProcess:
    """Start ``python -m jupyter_flame.sim.apiserver`` and wait until it serves.

    Parameters
    ----------
    state_dir
        State directory (created if missing); the server log goes to ``apiserver.log``.
    port
        Port on 127.0.0.1; ``0`` picks a free one.
    history_size
        Watch history length (smaller makes ``410 Gone`` easy to provoke).
    admin_token
        Fixed admin token (random by default).
    timeout
        Seconds to wait for ``apiserver.json``.
    exit_with_parent
        Make the server exit when this process exits (tests: nothing is left
        behind even if the test run is killed).  Leave False for servers that
        must outlive their starter.

    Raises
    ------
    RuntimeError
        If the server exits or does not get ready within ``timeout``.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    info_path = state_dir / "apiserver.json"
    info_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "jupyter_flame.sim.apiserver", "--port", str(port), "--state-dir", str(state_dir)]
    if history_size is not None:
        cmd += ["--history-size", str(history_size)]
    if exit_with_parent:
        cmd += ["--exit-with-parent", str(os.getpid())]
    env = dict(os.environ)
    if admin_token:
        env["JUPYTER_FLAME_SIM_ADMIN_TOKEN"] = admin_token
    log = (state_dir / "apiserver.log").open("ab")
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(state_dir)
        if info and info.get("pid") == proc.pid:
            return ApiServerProcess(str(info["url"]), str(info["admin_token"]), state_dir, proc.pid,
                                    ca_file=str(info["ca_file"]), process=proc)
        if proc.poll() is not None:
            tail = (state_dir / "apiserver.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the stand-in API server exited with code {proc.returncode}: {tail}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the stand-in API server did not get ready within {timeout} s (state dir {state_dir})")
