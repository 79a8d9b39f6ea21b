"""The jupyter-server extension: every runner of this server's kernels (and, on Kubernetes, of
its namespace) over REST and a live stream, with delete, logs, orphan cleanup and a reaper.

The server never shares Python objects with kernels: it sees runners through Kubernetes labels
and the runner records local pools write to Jupyter's runtime directory. Enabled on install by
``jupyter-config/server-config/jupyter_flame.json``; the JupyterLab panel (``labextension/``)
is its client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_jupyter_server_extension"]


def _kernels(serverapp: Any) -> Any:
    async def kernels() -> dict[str, dict[str, Any]]:
        """kernel id -> {"path": notebook path, "pid": kernel process id}, for the kernels
        this server runs now."""
        manager = serverapp.kernel_manager
        out: dict[str, dict[str, Any]] = {}
        for kid in manager.list_kernel_ids():
            provisioner = getattr(manager.get_kernel(kid), "provisioner", None)
            out[kid] = {"path": "", "pid": getattr(provisioner, "pid", None)}
        try:
            for session in await serverapp.session_manager.list_sessions():
                kid = (session.get("kernel") or {}).get("id")
                if kid in out:
                    out[kid]["path"] = session.get("path") or session.get("name") or ""
        except Exception:  # sessions are a nicety; kernel ids are what the reaper needs
            serverapp.log.debug("jupyter-flame: could not list sessions", exc_info=True)
        return out

    return kernels


def load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the ``/flame/api`` routes and start the snapshot/reaper loop."""
    from jupyter_flame.errors import ConfigError
    from jupyter_flame.server.handlers import routes
    from jupyter_flame.server.kube import kube_from_env
    from jupyter_flame.server.service import FlameServer

    try:
        kube = kube_from_env()
    except ConfigError as exc:
        serverapp.log.warning("jupyter-flame: Kubernetes runners not shown: %s", exc)
        kube = None
    flame = FlameServer(serverapp.runtime_dir, _kernels(serverapp), kube,
                        parent=serverapp, log=serverapp.log)
    web_app = serverapp.web_app
    web_app.settings["jupyter_flame"] = flame
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    serverapp.io_loop.add_callback(flame.start)
    where = f", namespace {kube.namespace}" if kube else ""
    serverapp.log.info("jupyter-flame: runners at %sflame/api/runners (local%s)",
                       web_app.settings["base_url"], where)


_load_jupyter_server_extension = load_jupyter_server_extension
