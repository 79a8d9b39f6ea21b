"""The ``%%flame`` cell magic and ``%flame`` line commands (a thin adapter over the core)."""

from __future__ import annotations

import shlex
import threading
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from jupyter_flame.errors import ConfigError
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
"""

#: Cells whose variables are larger than this (bytes) warn before sending.
WARN_BYTES = 1 << 30

#: Implicit pools (picked by a cell's runner options) allow this many runners at once.
IMPLICIT_MAX = 4

_implicit_lock = threading.Lock()


def _help() -> str:
    return (cell_parser().format_help() + _LINE_HELP + "\n" + pool_parser().format_help())


@magics_class
class FlameMagics(Magics):
    """Run cells on FLAME runners."""

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

        opts = parse_cell_line(line)
        pool = self._resolve_pool(opts.pool, opts.backend, opts.spec, opts.shaped)
        req = prepare(self.shell, cell, pool, skip=opts.skip, timeout=opts.timeout,
                      warn_bytes=WARN_BYTES)
        if opts.bg:
            return run_background(self.shell, req)
        return run_foreground(self.shell, req)

    def _resolve_pool(self, name: str | None, backend: str | None, spec: Any,
                      shaped: bool) -> Any:
        from jupyter_flame.pool.pool import Pool, all_pools, default_backend

        pools = {p.name: p for p in all_pools()}
        if name is not None:
            pool = pools.get(name)
            if pool is None:
                return Pool(name, backend, max=IMPLICIT_MAX, spec=spec)
            if shaped and pool.spec != spec:
                raise ConfigError(
                    f"Pool {name!r} runs runners shaped [{pool.spec.key() or 'default'}], but "
                    f"this cell asks for [{spec.key()}]. Drop the runner options to use the "
                    f"pool as it is, or use another --pool name.")
            if backend is not None and pool.backend.name != backend:
                raise ConfigError(f"Pool {name!r} uses the {pool.backend.name} backend, not "
                                  f"{backend}. Drop --backend or use another --pool name.")
            return pool
        chosen = backend or default_backend()
        key = spec.key()
        implicit = "default" if not key else key
        if chosen != default_backend():
            implicit = f"{chosen}:{implicit}"
        with _implicit_lock:
            pool = {p.name: p for p in all_pools()}.get(implicit)
            if pool is None:
                pool = Pool(implicit, chosen, max=IMPLICIT_MAX, spec=spec)
        return pool

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
        if command in ("help", "-h", "--help"):
            print(_help())
            return None
        raise ConfigError(f"%flame {command!r} is not a command. Use %flame status, "
                          "%flame pool NAME ..., or %flame shutdown [NAME|--all]; "
                          "%%flame? shows every option.")

    def _status(self) -> None:
        from jupyter_flame.notebook.status import render_text
        from jupyter_flame.pool.pool import all_pools

        print(render_text(p.status() for p in all_pools()))

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
