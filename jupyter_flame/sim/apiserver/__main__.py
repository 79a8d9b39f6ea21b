"""``python -m jupyter_flame.sim.apiserver --port P --state-dir DIR``.

Serves the stand-in Kubernetes API on 127.0.0.1 and writes
``DIR/apiserver.json`` (``url`` (https), ``admin_token``, ``pid``, ``ca_file``,
``kubeconfig``) plus an admin ``DIR/kubeconfig`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets

from .._watch import gone
from ..kubeconfig import kubeconfig_text
from . import schemas, tls
from .server import make_app
from .state import ServerState


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _parent_gone(pid: int) -> bool:
    return gone(pid) or os.getppid() != pid


async def serve(port: int, state_dir: Path, history_size: int, admin_token: str | None,
                parent_pid: int | None = None, exit_with: int | None = None) -> None:
    """Run the server until SIGTERM/SIGINT (or until ``parent_pid``, or ``exit_with``, exits)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = ServerState(state_dir, history_size, admin_token)
    sockets = bind_sockets(port, "127.0.0.1")
    actual = sockets[0].getsockname()[1]
    state.address = f"127.0.0.1:{actual}"
    files = tls.generate(state_dir / "pki")
    server = HTTPServer(make_app(state), ssl_options=files.server_context(), idle_connection_timeout=3600)
    server.add_sockets(sockets)
    url = f"https://127.0.0.1:{actual}"
    ca_pem = files.ca_cert.read_text()
    kubeconfig = state_dir / "kubeconfig"
    _write_atomic(kubeconfig, kubeconfig_text(url, state.tokens.admin_token, "default", ca_pem))
    info = {"url": url, "admin_token": state.tokens.admin_token, "pid": os.getpid(),
            "ca_file": str(files.ca_cert), "insecure": False, "kubeconfig": str(kubeconfig), "port": actual}
    _write_atomic(state_dir / "apiserver.json", json.dumps(info, indent=2))
    sweeper = PeriodicCallback(state.deleter.sweep_namespaces, 200)
    sweeper.start()
    stop = asyncio.Event()
    watchdog = None
    if parent_pid or exit_with:
        def check_parent() -> None:
            if parent_pid and _parent_gone(parent_pid) or exit_with and gone(exit_with):
                stop.set()

        watchdog = PeriodicCallback(check_parent, 500)
        watchdog.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sweeper.stop()
    if watchdog is not None:
        watchdog.stop()
    server.stop()
    try:
        (state_dir / "apiserver.json").unlink()
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m jupyter_flame.sim.apiserver",
                                     description="Local stand-in Kubernetes API server")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--state-dir", type=Path, required=True, help="where apiserver.json and logs/ live")
    parser.add_argument("--history-size", type=int, default=1000,
                        help="watch events kept for resourceVersion resumes (older: 410 Gone)")
    parser.add_argument("--admin-token", default=os.environ.get("JUPYTER_FLAME_SIM_ADMIN_TOKEN"),
                        help="fixed admin bearer token (default: random)")
    parser.add_argument("--exit-with-parent", type=int, metavar="PID", default=None,
                        help="exit when process PID (the parent) exits")
    parser.add_argument("--exit-with", type=int, metavar="PID", default=None,
                        help="exit when process PID exits (any process, e.g. a test session)")
    args = parser.parse_args(argv)
    try:
        schemas.require()
    except schemas.SchemasUnavailable as exc:
        parser.exit(2, f"jupyter-flame sim: {exc}\n")
    asyncio.run(serve(args.port, args.state_dir, args.history_size, args.admin_token, args.exit_with_parent,
                      args.exit_with))


if __name__ == "__main__":
    main()
