"""Lazy re-exports for package facades: ``from pkg import Name`` without importing everything.

A package's ``__init__`` lists where each public name lives; the module is imported the first
time the name is used. This keeps ``%load_ext jupyter_flame`` fast (the kernel side imports
IPython and the flame loop only when a cell needs them) and lets the runner import
``jupyter_flame.channel`` without the kubernetes client.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``where[name]`` on demand.

    ``where`` maps a public name to the module (relative to ``package``) that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
