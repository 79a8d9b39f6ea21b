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

import importlib
from typing import Any

from ._version import __version__ as __version__

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
    "KubernetesBackend": "backends.kubernetes",
    "RunnerPodTemplate": "backends.pod_template",
    "Pool": "pool",
    "FlameJob": "job",
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


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'jupyter_flame' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__", "load_ipython_extension"])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_flame``: register ``%%flame`` / ``%flame``.

    Pools shut down when the kernel exits (the first pool registers that hook).
    """
    from .magic import FlameMagics

    ipython.register_magics(FlameMagics)


def _shutdown_pools() -> None:
    import sys

    pool = sys.modules.get(f"{__name__}.pool")
    if pool is not None:  # pools exist only if the module was ever used
        pool.shutdown_all()


def unload_ipython_extension(ipython: Any) -> None:
    _shutdown_pools()
