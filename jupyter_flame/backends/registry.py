"""Backends by name: the ``jupyter_flame.backends`` entry points.

``local`` and ``kubernetes`` are declared in this package's own ``pyproject.toml``; a package that
declares another (``[project.entry-points."jupyter_flame.backends"] mine = "pkg:MyBackend"``)
can be used with ``%%flame --backend mine``, ``Pool(backend="mine")`` or
``c.Pool.backend = "mine"``, with no change here.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from jupyter_flame.backends.base import Backend
from jupyter_flame.errors import ConfigError

__all__ = ["backend_class", "backend_names", "make_backend"]

GROUP = "jupyter_flame.backends"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def backend_names() -> list[str]:
    """The names of the installed backends, sorted."""
    return sorted(_entry_points())


def backend_class(name: str) -> type[Backend]:
    """The class registered as backend ``name``."""
    ep = _entry_points().get(name)
    if ep is None:
        known = ", ".join(repr(n) for n in backend_names()) or "none"
        raise ConfigError(f"Unknown backend {name!r}. Installed backends: {known} (a package "
                          f"adds one with a {GROUP!r} entry point).")
    try:
        cls = ep.load()
    except Exception as exc:
        raise ConfigError(f"Backend {name!r} ({ep.value}) could not be loaded: {exc}. "
                          "Reinstall the package that provides it.") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"Backend {name!r} ({ep.value}) is not a Backend subclass; fix the "
                          f"{GROUP!r} entry point of the package that declares it.")
    return cls


def make_backend(backend: Backend | str | None, default: str) -> Backend:
    """``backend`` itself, or a new backend of that name (``None``: ``default``)."""
    if isinstance(backend, Backend):
        return backend
    return backend_class(backend or default)()
