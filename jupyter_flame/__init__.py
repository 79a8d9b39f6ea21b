"""jupyter-flame: run notebook cells on elastic, on-demand runners (FLAME for Jupyter).

In a notebook::

    %load_ext jupyter_flame

    %%flame --gpu 1
    model = train(df)          # df and train travel to the runner; model comes back

From Python::

    from jupyter_flame import Pool
    with Pool(max=4) as pool:
        results = list(pool.map(work, items))

Public names are exactly ``__all__``; they are imported lazily so ``%load_ext`` stays fast.
"""

from __future__ import annotations

from typing import Any

from jupyter_flame._lazy import lazy_exports
from jupyter_flame._version import __version__ as __version__

__all__ = [
    "Backend",
    "BackendError",
    "BootError",
    "ChannelAuthError",
    "ConfigError",
    "FlameError",
    "FlameJob",
    "FlameTimeoutError",
    "KubernetesBackend",
    "LifecycleEvent",
    "LocalBackend",
    "Pool",
    "RemoteError",
    "RunnerLostError",
    "RunnerPodTemplate",
    "RunnerSpec",
    "SerializationError",
]

_WHERE = {
    "Backend": "backends.base",
    "LifecycleEvent": "backends.base",
    "RunnerSpec": "backends.base",
    "LocalBackend": "backends.local",
    "KubernetesBackend": "backends.kubernetes.backend",
    "RunnerPodTemplate": "backends.kubernetes.pod_template",
    "Pool": "pool.pool",
    "FlameJob": "notebook.job",
    "BackendError": "errors",
    "BootError": "errors",
    "ChannelAuthError": "errors",
    "ConfigError": "errors",
    "FlameError": "errors",
    "FlameTimeoutError": "errors",
    "RemoteError": "errors",
    "RunnerLostError": "errors",
    "SerializationError": "errors",
}


__getattr__, _dir = lazy_exports(__name__, _WHERE, {})


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__", "load_ipython_extension"])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_flame``: register ``%%flame`` / ``%flame``.

    Pools shut down when the kernel exits (the first pool registers that hook).
    """
    from jupyter_flame.notebook.magic import FlameMagics

    ipython.register_magics(FlameMagics)


def _shutdown_pools() -> None:
    import sys

    pool = sys.modules.get(f"{__name__}.pool.pool")
    if pool is not None:  # pools exist only if the module was ever used
        pool.shutdown_all()


def unload_ipython_extension(ipython: Any) -> None:
    _shutdown_pools()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The jupyter-server extension (enabled on install): ``jupyter_flame.server``."""
    return [{"module": "jupyter_flame.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (``labextension/``, built into the wheel)."""
    return [{"src": "labextension", "dest": "jupyter-flame"}]
