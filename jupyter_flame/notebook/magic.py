"""The ``%%flame`` cell magic and ``%flame`` line commands (a thin adapter over the core).

``FlameMagics`` is configurable like every IPython ``Magics``: ``c.FlameMagics.default_backend``
in ``ipython_config.py``, or ``%config FlameMagics.quiet = True`` in a running kernel.
"""

from __future__ import annotations

import shlex
import threading
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Int, TraitError, Unicode, validate

from jupyter_flame.config import check_values
from jupyter_flame.errors import BootError, ConfigError
from jupyter_flame.notebook.options import (
    cell_parser,
    parse_cell_line,
    parse_pool_args,
    pool_parser,
)

__all__ = ["FlameMagics"]

_LINE_HELP = """
Line commands
-------------
%flame status                      the pool dashboard (every pool and runner)
%flame pool NAME [options]         define a pool, or resize it (options below)
%flame shutdown [NAME | --all]     shut down one pool, or all of them (the default)
%flame config                      every option (c.Pool.*, c.FlameMagics.*, the backends'),
                                   its value in this kernel and where the value came from
"""

_implicit_lock = threading.Lock()


def _help() -> str:
    return (cell_parser().format_help() + _LINE_HELP + "\n" + pool_parser().format_help())


def _pool_bundle(pool: Any) -> Any:
    from jupyter_flame.widgets.dashboard import pool_bundle

    return pool_bundle(pool)


@magics_class
class FlameMagics(Magics):
    """Run cells on FLAME runners: the ``%%flame`` cell magic and the ``%flame`` commands."""

    default_backend = Unicode(None, allow_none=True, help=(
        "The backend of cells that name neither --backend nor --pool: the name of a "
        "jupyter_flame.backends entry point ('local', 'kubernetes', ...). None: "
        "c.Pool.backend when set, else kubernetes inside a pod and local elsewhere.")
    ).tag(config=True)
    default_max = Int(4, help=(
        "Most runners of a pool the magic makes (a cell without --pool, or a new --pool NAME), "
        "unless c.Pool.max is set.")).tag(config=True)
    warn_bytes = Int(1 << 30, help=(
        "Warn (LargeTransferWarning) before a cell sends a variable at least this large, in "
        "bytes.")).tag(config=True)
    quiet = Bool(False, help="No lifecycle view under cells, as if every cell had --quiet."
                 ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        if shell is not None and getattr(shell, "config", None) is not None:
            check_values(type(self), shell.config, kwargs)
        super().__init__(shell, **kwargs)  # type: ignore[no-untyped-call]
        from jupyter_flame.pool.registry import set_display_hook

        set_display_hook(_pool_bundle)  # displaying a Pool shows its live dashboard

    @validate("default_backend")
    def _known_backend(self, proposal: Any) -> Any:
        from jupyter_flame.backends.registry import backend_names

        if proposal.value is not None and proposal.value not in backend_names():
            raise TraitError(f"FlameMagics.default_backend={proposal.value!r} is not an "
                             f"installed backend; use one of {backend_names()}.")
        return proposal.value

    @line_cell_magic
    def flame(self, line: str, cell: str | None = None) -> Any:
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    flame.__doc__ = _help()

    # -- cells -------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Any:
        from jupyter_flame.notebook.cell import prepare, run_foreground
        from jupyter_flame.notebook.job import run_background
        from jupyter_flame.pool.pool import all_pools

        opts = parse_cell_line(line)
        before = {id(p) for p in all_pools()}
        pool = self._resolve_pool(opts.pool, opts.backend, opts.spec, opts.shaped)
        made = id(pool) not in before
        try:  # a syntax error, an unpicklable value...: nothing was sent or booted
            req = prepare(self.shell, cell, pool, skip=opts.skip, timeout=opts.timeout,
                          warn_bytes=self.warn_bytes, quiet=opts.quiet or self.quiet)
        except BaseException:
            if made:
                _drop_if_never_served(pool)
            raise
        try:
            if opts.bg:
                return run_background(self.shell, req)
            return run_foreground(self.shell, req)
        except (ConfigError, BootError):
            if made:
                _drop_if_never_served(pool)
            raise

    def _resolve_pool(self, name: str | None, backend: str | None, spec: Any,
                      shaped: bool) -> Any:
        from jupyter_flame.pool.pool import all_pools

        pools = {p.name: p for p in all_pools()}
        if name is not None:
            pool = pools.get(name)
            if pool is None:
                return self._new_pool(name, backend, spec)
            if shaped and pool.spec != spec:
                raise ConfigError(
                    f"Pool {name!r} runs runners shaped [{pool.spec.key() or 'default'}], but "
                    f"this cell asks for [{spec.key()}]. Drop the runner options to use the "
                    f"pool as it is, or use another --pool name.")
            if backend is not None and pool.backend.name != backend:
                raise ConfigError(f"Pool {name!r} uses the {pool.backend.name} backend, not "
                                  f"{backend}. Drop --backend or use another --pool name.")
            return pool
        usual = self._usual_backend()
        chosen = backend or usual
        key = spec.key()
        implicit = "default" if not key else key
        if chosen != usual:
            implicit = f"{chosen}:{implicit}"
        with _implicit_lock:
            pool = {p.name: p for p in all_pools()}.get(implicit)
            if pool is None:
                pool = self._new_pool(implicit, backend, spec)
        return pool

    def _usual_backend(self) -> str:
        """The backend of a cell without --backend: c.FlameMagics.default_backend, else
        c.Pool.backend (a name), else kubernetes inside a pod and local elsewhere."""
        from jupyter_flame.config import current_config
        from jupyter_flame.pool.pool import default_backend

        if self.default_backend:
            return str(self.default_backend)
        configured = current_config().get("Pool", {}).get("backend")
        return configured if isinstance(configured, str) and configured else default_backend()

    def _new_pool(self, name: str, backend: str | None, spec: Any) -> Any:
        """A pool the magic makes: the cell's --backend, else the magic's default backend;
        c.Pool.* applies, and ``default_max`` unless c.Pool.max is set."""
        from jupyter_flame.pool.pool import Pool

        fallbacks: dict[str, tuple[Any, str]] = {
            "max": (self.default_max, "FlameMagics.default_max")}
        if backend is None and self.default_backend:
            backend = self.default_backend
        return Pool(name, backend, spec=spec, _fallbacks=fallbacks)

    # -- line commands -----------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        args = shlex.split(line)
        command = args[0] if args else "status"
        if command == "status":
            return self._status()
        if command == "pool":
            return self._pool(args[1:])
        if command == "shutdown":
            return self._shutdown(args[1:])
        if command == "config":
            return self._config(args[1:])
        if command in ("help", "-h", "--help"):
            print(_help())
            return None
        raise ConfigError(f"%flame {command!r} is not a command. Use %flame status, "
                          "%flame pool NAME ..., %flame shutdown [NAME|--all] or %flame config; "
                          "%%flame? shows every option.")

    def _config(self, args: list[str]) -> None:
        from jupyter_flame.notebook.settings import config_text

        if args:
            raise ConfigError(f"%flame config takes no arguments (got {' '.join(args)!r}); "
                              "set options with %config Pool.max = 4 or in ipython_config.py.")
        print(config_text(self))

    def _status(self) -> None:
        """The live dashboard of every pool where widgets render; text/html or text else."""
        from IPython.display import display

        from jupyter_flame.pool.pool import all_pools
        from jupyter_flame.pool.status import render_text
        from jupyter_flame.pool.status_html import render_html
        from jupyter_flame.widgets.cell_view import widgets_enabled

        if getattr(self.shell, "kernel", None) is None:
            print(render_text(p.status() for p in all_pools()))
        elif widgets_enabled():
            from jupyter_flame.widgets.dashboard import PoolDashboard

            display(PoolDashboard())
        else:
            sts = [p.status() for p in all_pools()]
            display({"text/plain": render_text(sts), "text/html": render_html(sts)}, raw=True)

    def _pool(self, args: list[str]) -> Any:
        from jupyter_flame.pool.pool import Pool, all_pools

        if not args:
            raise ConfigError("%flame pool needs a NAME: %flame pool NAME [--max N ...].")
        parsed = parse_pool_args(args)
        existing = {p.name: p for p in all_pools()}.get(parsed.name)
        if existing is None:
            pool = Pool(parsed.name, parsed.backend, spec=parsed.spec, **parsed.limits)
            if pool.options.min:
                pool.start()
            print(f"Pool {pool.name!r} defined: {pool!r}")
            return None
        if parsed.shaped and existing.spec != parsed.spec:
            raise ConfigError(f"Pool {parsed.name!r} already exists with another runner shape; "
                              f"shut it down first (%flame shutdown {parsed.name}).")
        existing.resize(**parsed.limits)
        print(f"Pool {existing.name!r} resized: {existing!r}")
        return None

    def _shutdown(self, args: list[str]) -> None:
        from jupyter_flame.pool.pool import all_pools, get_pool

        if not args or args == ["--all"]:
            pools = all_pools()
            for pool in pools:
                pool.shutdown()
            print(f"Shut down {len(pools)} pool(s).")
            return
        for name in args:
            get_pool(name).shutdown()
            print(f"Shut down pool {name!r}.")


def _drop_if_never_served(pool: Any) -> None:
    """A pool this cell made whose first cell failed to configure or boot, with no runner to
    show for it, is shut down: ``%flame status`` does not keep listing it (the error was
    shown under the cell), and the next cell starts afresh."""
    status = pool.status()
    if status["tasks_done"] == 0 and not status["runners"]:
        pool.shutdown()

