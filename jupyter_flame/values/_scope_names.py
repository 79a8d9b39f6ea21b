"""The names a nested scope binds (pure AST helpers of :mod:`._cell_scopes`)."""

from __future__ import annotations

import ast
from collections.abc import Iterable

__all__ = ["COMPS", "FUNCS", "args_names", "local_names", "type_param_names"]

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def local_names(nodes: Iterable[ast.AST]) -> tuple[set[str], set[str], set[str]]:
    """(bound, global, nonlocal) names of one function or class scope, without nested scopes."""
    bound: set[str] = set()
    glob: set[str] = set()
    nonlocal_: set[str] = set()

    def walk(node: ast.AST, in_comp: bool) -> None:
        if isinstance(node, ast.Global):
            glob.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            nonlocal_.update(node.names)
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            bound.add(node.target.id)
        elif isinstance(node, ast.Name) and not in_comp:
            if not isinstance(node.ctx, ast.Load):
                bound.add(node.id)
        elif isinstance(node, (*FUNCS, ast.ClassDef)):
            bound.add(node.name)
            return
        elif isinstance(node, ast.Lambda):
            return
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.ExceptHandler) and node.name and not in_comp:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name and not in_comp:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest and not in_comp:
            bound.add(node.rest)
        elif type(node).__name__ == "TypeAlias":  # Python >= 3.12
            walk(node.name, in_comp)  # type: ignore[attr-defined]
            return
        in_comp = in_comp or isinstance(node, COMPS)
        for child in ast.iter_child_nodes(node):
            walk(child, in_comp)

    for n in nodes:
        walk(n, False)
    return bound - glob - nonlocal_, glob, nonlocal_


def args_names(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def type_param_names(node: ast.AST) -> set[str]:
    return {p.name for p in getattr(node, "type_params", ()) or ()}
