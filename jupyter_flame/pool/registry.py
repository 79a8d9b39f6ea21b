"""The pools of this process, by name, and what picks a backend by default.

Every :class:`~jupyter_flame.pool.pool.Pool` registers here when it is made and leaves when it
shuts down; the first one installs the exit hook that shuts every pool down when the interpreter
exits, so no runner (or pod) outlives a kernel or a script.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from collections.abc import Coroutine
from typing import Any, Protocol

from jupyter_flame.errors import ConfigError, FlameError
from jupyter_flame.pool import loop as _loop

__all__ = ["all_pools", "default_backend", "get_pool", "in_kubernetes_pod", "kernel_id",
           "shutdown_all"]


class Registered(Protocol):
    """What the registry needs of a pool."""

    @property
    def name(self) -> str | None: ...

    @property
    def closed(self) -> bool: ...

    def _shutdown(self) -> Coroutine[Any, Any, None]: ...


_registry: dict[str | None, Registered] = {}
_lock = threading.Lock()
_names = itertools.count(1)
_exit_hook_installed = False
_display_hook: list[Any] = []  # what a notebook shows for a Pool (set by the magic's loading)


def set_display_hook(hook: Any) -> None:
    """``hook(pool)`` -> a mimebundle (or ``None``) for displaying a pool: the widgets
    register their live dashboard here, so the pool need not import them."""
    _display_hook[:] = [hook]


def display_hook() -> Any:
    return _display_hook[0] if _display_hook else None


def register(pool: Registered, name: str | None) -> str:
    """Register ``pool`` as ``name`` (``None``: a fresh ``pool-N``); returns the name."""
    global _exit_hook_installed
    with _lock:
        if name is None:
            name = f"pool-{next(_names)}"
            while name in _registry:
                name = f"pool-{next(_names)}"
        elif name in _registry and not _registry[name].closed:
            raise ConfigError(
                f"A pool named {name!r} already exists. Use get_pool({name!r}), shut it "
                "down first, or pick another name.")
        _registry[name] = pool
        if not _exit_hook_installed:  # scripts too: no runner (or pod) outlives the process
            _install_exit_hook()
            _exit_hook_installed = True
    return name


def unregister(pool: Registered) -> None:
    with _lock:
        if _registry.get(pool.name) is pool:
            del _registry[pool.name]


def _install_exit_hook() -> None:
    """Shut every pool down when the interpreter exits (kernel shutdown, end of a script).

    It must run before ``concurrent.futures`` refuses new work at exit (the Kubernetes backend
    calls the API from worker threads), so it is registered with ``threading``'s exit hooks,
    which run in reverse order of registration, after the one ``concurrent.futures.thread``
    registered when it was imported; plain ``atexit`` runs too late.
    """
    import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered first)

    hook = getattr(threading, "_register_atexit", None)
    try:
        if hook is None:
            raise AttributeError
        hook(shutdown_all)
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(shutdown_all)


def get_pool(name: str) -> Any:
    """The live pool called ``name``."""
    with _lock:
        pool = _registry.get(name)
        known = ", ".join(sorted(str(n) for n, p in _registry.items() if not p.closed)) or "none"
    if pool is None or pool.closed:
        raise FlameError(f"No pool named {name!r} (pools: {known}). Create it with "
                         f"%flame pool {name} or Pool({name!r}).")
    return pool


def all_pools() -> list[Any]:
    """Every live pool of this process, oldest first."""
    with _lock:
        return [p for p in _registry.values() if not p.closed]


def shutdown_all(timeout: float = 30.0) -> None:
    """Shut down every pool of this process (called at exit)."""
    pools = all_pools()
    if not pools:
        return
    futs = [_loop.submit(p._shutdown()) for p in pools]
    concurrent.futures.wait(futs, timeout=timeout)


def kernel_id() -> str:
    """The id of the kernel this process runs (its connection file), else ``pid-<pid>``."""
    try:
        from ipykernel.connect import get_connection_file

        base = os.path.basename(get_connection_file())
        if base.startswith("kernel-") and base.endswith(".json"):
            return base[len("kernel-"):-len(".json")]
    except Exception:
        pass
    return f"pid-{os.getpid()}"


def in_kubernetes_pod() -> bool:
    if not os.environ.get("POD_NAME"):
        return False
    return bool(os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST"))


def default_backend() -> str:
    """``"kubernetes"`` inside a pod (``POD_NAME`` and a cluster config), else ``"local"``."""
    return "kubernetes" if in_kubernetes_pod() else "local"
