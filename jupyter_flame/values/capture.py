"""Which names a cell reads and binds: pure namespace analysis, no I/O.

:func:`analyze` parses a cell's source *after* IPython's transforms (so ``%time f(x)`` arrives as
``get_ipython().run_line_magic('time', 'f(x)')``) and walks it with a scope stack:

- Module-level reads count only when the name is not *definitely* bound earlier in the cell
  (``if``/``for``/``while``/``try``/``match`` branches are merged conservatively; the walk
  itself lives in :mod:`jupyter_flame.values._cell_scopes`).
- Free globals of functions, lambdas and ``type`` aliases the cell defines run later, so they
  count unless the cell definitely binds the name by its end.
- Class bodies and comprehensions run at once; class-body names are not module bindings.
- Magic arguments that are code (``time``, ``timeit``, ``prun``, ``capture``, ``pinfo``...) are
  parsed too, and ``{expr}`` / ``$name`` interpolations of ``!cmd`` and other magics are read.

:func:`names_to_ship` then keeps the reads that live in the user namespace, minus IPython's own
names (:data:`IGNORED_NAMES`, ``_i<N>``, ``_<N>``) and the names the user asked to skip.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_flame.values import _magic_args
from jupyter_flame.values._cell_scopes import Walker

__all__ = ["IGNORED_NAMES", "CellNames", "analyze", "is_ignored", "names_to_ship"]

IGNORED_NAMES: frozenset[str] = frozenset(
    {
        "In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "_sh",
        "_exit_code", "get_ipython", "exit", "quit", "__builtins__", "__builtin__", "__name__",
        "__doc__", "__spec__", "__loader__", "__package__", "__file__", "__session__",
        "__annotations__", "__IPYTHON__",
    }
)  # fmt: skip
"""IPython and kernel internals that are never shipped (see also :func:`is_ignored`)."""

_HISTORY_NAME = re.compile(r"_i?\d+")


@dataclass(frozen=True)
class CellNames:
    """The result of :func:`analyze`.

    Attributes
    ----------
    reads:
        Global names the cell may read from the notebook namespace, in first-seen order.
    binds:
        Names the cell may bind at module level (``except ... as e`` names excluded).
    deletes:
        Names deleted at module level with ``del``.
    star_imports:
        Whether the cell runs ``from module import *`` (its bindings are unknown).
    """

    reads: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()
    deletes: tuple[str, ...] = ()
    star_imports: bool = False


def is_ignored(name: str) -> bool:
    """Whether ``name`` is an IPython/kernel internal (``In``, ``_i3``, ``_12``...)."""
    return name in IGNORED_NAMES or _HISTORY_NAME.fullmatch(name) is not None


def names_to_ship(
    cell: CellNames, user_ns: Mapping[str, Any], *, skip: Iterable[str] = ()
) -> list[str]:
    """The names of ``cell.reads`` to send to a runner, in order.

    A name is shipped when it exists in ``user_ns`` (builtins are not in it, unless the user
    shadowed one, which is then shipped), is not an IPython internal and is not in ``skip``.
    Modules are included: how they travel is :mod:`jupyter_flame.values.shipping`'s business.
    """
    skipped = set(skip)
    return [n for n in cell.reads if n in user_ns and n not in skipped and not is_ignored(n)]


def analyze(source: str) -> CellNames:
    """Find the names a cell reads, binds and deletes.

    ``source`` is Python after IPython's transforms; top-level ``await`` is allowed. A
    :class:`SyntaxError` propagates to the caller.
    """
    tree = _magic_args.parse(source)
    walker = Walker(future_annotations=_has_future_annotations(tree))
    walker.visit(tree)
    reads, binds, deletes, star = walker.result()
    return CellNames(tuple(reads), tuple(binds), tuple(deletes), star)


def _has_future_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(s, ast.ImportFrom)
        and s.module == "__future__"
        and any(a.name == "annotations" for a in s.names)
        for s in tree.body
    )
