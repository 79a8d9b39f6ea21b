"""The Python hidden in IPython's transformed magic calls (for :mod:`jupyter_flame.values.capture`).

After IPython's transforms, ``%time y = f(x)`` reads ``get_ipython().run_line_magic('time',
'y = f(x)')``, ``%%timeit`` becomes ``run_cell_magic('timeit', line, cell)`` and ``!ls {p}``
becomes ``get_ipython().system('ls {p}')``. :func:`fragments` turns one such call into the pieces
of Python it runs or interpolates, in source order. Pure; no I/O.
"""

from __future__ import annotations

import ast
import re
import string
from dataclasses import dataclass
from typing import Literal

FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

# Magics whose argument is Python; the value says whether it runs in (and binds into) the user
# namespace. ``timeit`` runs in a namespace of its own that falls back to the user's.
_CODE_LINE_MAGICS = {"time": True, "timeit": False, "prun": True}
_CODE_CELL_MAGICS = {"time": True, "timeit": False, "prun": True, "capture": True}
_OBJECT_LINE_MAGICS = frozenset({"pinfo", "pinfo2", "pdef", "pdoc", "psource", "pfile"})
_UNEXPANDED = frozenset(_CODE_LINE_MAGICS) | _OBJECT_LINE_MAGICS  # @no_var_expand magics
_DOLLAR = re.compile(r"\$(\$?[\w.]+)")

Kind = Literal["code", "isolated-code", "expr", "name", "bind"]


@dataclass(frozen=True)
class Fragment:
    """One piece of a magic call: ``code`` runs in the user namespace (its assignments bind),
    ``isolated-code`` runs in a namespace of its own, ``expr`` is an expression, ``name`` a name
    read, ``bind`` a name assigned (``%%capture out``)."""

    kind: Kind
    text: str


def parse(source: str) -> ast.Module:
    """Parse cell-level Python, top-level ``await`` allowed."""
    tree = compile(source, "<cell>", "exec", flags=FLAGS, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    return tree


def magic_call(node: ast.Call) -> tuple[str, list[str]] | None:
    """``("run_line_magic", ["time", "f(x)"])`` for ``get_ipython().run_line_magic(...)`` calls
    whose arguments are all string literals; ``None`` for any other call."""
    func = node.func
    if not (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
        and node.args
    ):
        return None
    texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return (func.attr, texts) if len(texts) == len(node.args) else None


def fragments(method: str, args: list[str]) -> list[Fragment]:
    """The Python pieces of ``get_ipython().<method>(*args)``."""
    if method in ("system", "getoutput"):
        return interpolations(args[0])
    if method == "run_line_magic" and len(args) >= 2:
        return _line_magic(args[0], args[1])
    if method == "run_cell_magic" and len(args) >= 3:
        return _cell_magic(args[0], args[1], args[2])
    return []


def _line_magic(magic: str, line: str) -> list[Fragment]:
    found: list[Fragment] = []
    if magic in _CODE_LINE_MAGICS:
        code = strip_options(line)
        if code:
            found.append(Fragment("code" if _CODE_LINE_MAGICS[magic] else "isolated-code", code))
    elif magic in _OBJECT_LINE_MAGICS and line.strip():
        found.append(Fragment("expr", line.strip()))
    if magic not in _UNEXPANDED:
        found += interpolations(line)
    return found


def _cell_magic(magic: str, line: str, cell: str) -> list[Fragment]:
    if magic not in _CODE_CELL_MAGICS:
        return interpolations(line)  # the body is not Python (bash, writefile, html...)
    found: list[Fragment] = []
    if magic == "timeit":  # the line holds options and a setup statement run before the body
        cell = f"{strip_options(line) or ''}\n{cell}"
    elif magic == "capture":
        words = [w for w in line.split() if not w.startswith("-")]
        if words and words[0].isidentifier():
            found.append(Fragment("bind", words[0]))
    found.append(Fragment("code" if _CODE_CELL_MAGICS[magic] else "isolated-code", cell))
    return found


def interpolations(text: str) -> list[Fragment]:
    """``$name`` and ``{expr}`` expansions, as IPython's ``var_expand`` finds them, in order.

    ``$$`` is a literal dollar and ``$name`` inside single quotes is left alone, as in IPython.
    """
    found: list[tuple[int, Fragment]] = []
    for match in _DOLLAR.finditer(text):
        inside_quotes = text[match.end() :].count("'") % 2 == 1
        name = match.group(1).split(".")[0]
        if not inside_quotes and name.isidentifier():
            found.append((match.start(), Fragment("name", name)))
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f]
    except ValueError:  # unbalanced braces: IPython leaves the text as it is
        fields = []
    position = 0
    for expr in fields:
        position = text.find(expr, position)
        found.append((position, Fragment("expr", expr.strip())))
    return [fragment for _, fragment in sorted(found, key=lambda item: item[0])]


def strip_options(line: str) -> str | None:
    """The code part of ``-n 10 -r 3 f(x)``: the first suffix, from a word on, that parses."""
    for match in re.finditer(r"\S+", line):
        if match.group().startswith("-"):
            continue
        code = line[match.start() :]
        try:
            parse(code)
        except (SyntaxError, ValueError):
            continue
        return code
    return None
