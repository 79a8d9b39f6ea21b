"""``%flame config``: every option, its value in this kernel and where the value came from."""

from __future__ import annotations

from typing import Any

from traitlets.config import Configurable

from jupyter_flame.config import OptionRow, current_config, describe_options, render_rows

__all__ = ["backend_classes", "config_text"]


def backend_classes() -> list[type[Configurable]]:
    """The classes of the installed backends (``jupyter_flame.backends`` entry points)."""
    from jupyter_flame.backends.registry import backend_class, backend_names
    from jupyter_flame.errors import ConfigError

    classes: list[type[Configurable]] = []
    for name in backend_names():
        try:
            cls = backend_class(name)
        except ConfigError:  # a broken third-party backend must not hide the others
            continue
        if cls not in classes:
            classes.append(cls)
    return classes


def config_text(magics: Any) -> str:
    """The text of ``%flame config`` for the magics instance ``magics``."""
    from jupyter_flame.pool.pool import Pool, all_pools

    config = current_config()
    rows: list[OptionRow] = []
    rows += describe_options(type(magics), config, instance=magics)
    rows += describe_options(Pool, config, section="Pool (a new Pool() in this kernel)")
    for pool in all_pools():
        rows += describe_options(Pool, config, instance=pool, section=f"Pool {pool.name!r}")
    for cls in backend_classes():
        rows += describe_options(cls, config)
    return ("Options (set them in ipython_config.py, on the command line as --Pool.max=4, or "
            "here with %config Pool.max = 4; a keyword in code wins):\n" + render_rows(rows))
