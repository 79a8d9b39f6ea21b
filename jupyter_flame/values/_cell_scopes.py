"""The scope analysis behind :mod:`jupyter_flame.values.capture`: an AST walk with a scope stack.

Module-level reads count only when the name is not *definitely* bound earlier in the cell
(branches of ``if``/``for``/``while``/``try``/``match`` are merged conservatively). Code that runs
later (function, lambda and ``type`` alias bodies) reads a global unless the cell definitely binds
it by its end. Class bodies and comprehensions run at once in scopes of their own. Pure; no I/O.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.values import _magic_args
from jupyter_flame.values._scope_names import args_names as _args_names
from jupyter_flame.values._scope_names import local_names as _local_names
from jupyter_flame.values._scope_names import type_param_names as _type_param_names

_parse = _magic_args.parse


@dataclass
class _Scope:
    kind: str  # "function" (runs later) | "class" | "comprehension" | "typeparams" (run now)
    names: set[str] = field(default_factory=set)  # locals (class: bound so far)
    globals: set[str] = field(default_factory=set)


class Walker(ast.NodeVisitor):
    """Visit a parsed cell (``Walker(...).visit(tree)``), then read :meth:`result`."""

    def __init__(self, *, future_annotations: bool) -> None:
        self._future_annotations = future_annotations
        self._order: dict[str, None] = {}
        self._now: set[str] = set()  # read at a point where the name was not definitely bound
        self._later: set[str] = set()  # read by code that runs later (function bodies)
        self._binds: dict[str, None] = {}
        self._deletes: dict[str, None] = {}
        self._definite: set[str] = set()  # module names definitely bound so far
        self._scopes: list[_Scope] = []
        self._star = False

    def result(self) -> tuple[list[str], list[str], list[str], bool]:
        """(reads, binds, deletes, star_imports) once the whole cell has been visited."""
        reads = [
            n
            for n in self._order
            if n in self._now or (n in self._later and n not in self._definite)
        ]
        return reads, list(self._binds), list(self._deletes), self._star

    # -- name events -------------------------------------------------------------------------
    def _load(self, name: str) -> None:
        later = False
        for depth, scope in enumerate(reversed(self._scopes)):
            if scope.kind == "function":
                if name in scope.globals:
                    later = True
                    break
                if name in scope.names:
                    return
                later = True
            elif scope.kind == "class":
                if depth == 0 and name in scope.globals:
                    break
                if depth == 0 and name in scope.names:
                    return
            elif name in scope.names:
                return
        if later:
            self._later.add(name)
        elif name not in self._definite:
            self._now.add(name)
        else:
            return
        self._order.setdefault(name)

    def _store(self, name: str, *, definite: bool = True) -> None:
        if not self._scopes:
            self._binds.setdefault(name)
            if definite:
                self._definite.add(name)
            return
        scope = self._scopes[-1]
        if name in scope.globals:
            self._binds.setdefault(name)
        elif scope.kind == "class":
            scope.names.add(name)

    def _delete(self, name: str) -> None:
        if self._scopes:
            if name in self._scopes[-1].globals:
                self._load(name)
            elif self._scopes[-1].kind == "class":
                self._scopes[-1].names.discard(name)
            return
        self._load(name)
        self._deletes.setdefault(name)
        self._definite.discard(name)

    # -- helpers -----------------------------------------------------------------------------
    def _visit_all(self, nodes: Iterable[ast.AST | None]) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def _branch(self, stmts: list[ast.stmt], start: set[str]) -> set[str]:
        self._definite = set(start)
        self._visit_all(stmts)
        return self._definite

    def _annotation(self, node: ast.expr | None) -> None:
        if node is not None and not self._future_annotations:
            self.visit(node)

    def _run_scope(self, scope: _Scope, nodes: Iterable[ast.AST | None]) -> None:
        self._scopes.append(scope)
        try:
            self._visit_all(nodes)
        finally:
            self._scopes.pop()

    def _with_type_params(self, node: ast.AST, body: Any) -> None:
        names = _type_param_names(node)
        if names:
            self._scopes.append(_Scope("typeparams", names))
        try:
            body()
        finally:
            if names:
                self._scopes.pop()

    # -- names and bindings ------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:
            self._delete(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self._visit_all(node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):  # x += v: loads x, evaluates v, stores x
            self._load(node.target.id)
            self.visit(node.value)
            self._store(node.target.id)
        else:
            self.visit(node.target)
            self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not self._scopes or self._scopes[-1].kind != "function":
            self._annotation(node.annotation)  # not evaluated inside functions
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self._visit_all(ast.iter_child_nodes(node.target))

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        comps = 0
        for scope in reversed(self._scopes):
            if scope.kind != "comprehension":
                break
            comps += 1
        if not comps:
            self._store(node.target.id)
        elif comps == len(self._scopes):  # a module name, bound only if the loop runs
            self._binds.setdefault(node.target.id)
        elif node.target.id in self._scopes[-comps - 1].globals:
            self._binds.setdefault(node.target.id)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._store(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self._star = self._star or not self._scopes
            else:
                self._store(alias.asname or alias.name)

    def visit_Global(self, node: ast.Global) -> None:
        if self._scopes and self._scopes[-1].kind == "function":
            for name in node.names:
                self._load(name)

    # -- scopes ------------------------------------------------------------------------------
    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_all(node.decorator_list)
        self._visit_all([*node.args.defaults, *node.args.kw_defaults])

        def signature_and_body() -> None:
            for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                self._annotation(a.annotation)
            for extra in (node.args.vararg, node.args.kwarg):
                self._annotation(extra.annotation if extra is not None else None)
            self._annotation(node.returns)
            bound, glob, nonlocal_ = _local_names(node.body)
            names = bound | nonlocal_ | _args_names(node.args)
            self._run_scope(_Scope("function", names, glob), node.body)

        self._store(node.name)  # before the body: it only runs later
        self._with_type_params(node, signature_and_body)

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_all([*node.args.defaults, *node.args.kw_defaults])
        bound, glob, nonlocal_ = _local_names([node.body])
        names = bound | _args_names(node.args)
        self._run_scope(_Scope("function", names, glob), [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_all(node.decorator_list)

        def bases_and_body() -> None:
            self._visit_all([*node.bases, *node.keywords])
            _, glob, _ = _local_names(node.body)
            self._run_scope(_Scope("class", set(), glob), node.body)

        self._with_type_params(node, bases_and_body)
        self._store(node.name)

    def visit_TypeAlias(self, node: Any) -> None:  # Python >= 3.12: value evaluated lazily
        self._run_scope(_Scope("function", _type_param_names(node)), [node.value])
        self.visit(node.name)

    def _visit_comprehension(self, node: Any) -> None:
        gens: list[ast.comprehension] = node.generators
        self.visit(gens[0].iter)
        targets = {n.id for g in gens for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        targets |= {  # walrus targets bind outside, but reads inside see them
            n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)
        }
        parts: list[ast.AST] = []
        for i, gen in enumerate(gens):
            parts += ([gen.iter] if i else []) + [gen.target, *gen.ifs]
        if isinstance(node, ast.DictComp):
            parts += [node.key, node.value]
        else:
            parts.append(node.elt)
        self._run_scope(_Scope("comprehension", targets), parts)

    visit_ListComp = _visit_comprehension
    visit_SetComp = _visit_comprehension
    visit_DictComp = _visit_comprehension
    visit_GeneratorExp = _visit_comprehension

    # -- control flow (module level: which names are definitely bound) -----------------------
    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        before = set(self._definite)
        body = self._branch(node.body, before)
        self._definite = body & self._branch(node.orelse, before)

    def _visit_loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        if isinstance(node, ast.While):
            self.visit(node.test)
        else:
            self.visit(node.iter)
        before = set(self._definite)
        head: list[ast.stmt] = [] if isinstance(node, ast.While) else [ast.Expr(node.target)]
        body = self._branch([*head, *node.body], before)
        self._definite = before & body & self._branch(node.orelse, before)

    visit_For = _visit_loop
    visit_AsyncFor = _visit_loop
    visit_While = _visit_loop

    def _visit_try(self, node: Any) -> None:
        before = set(self._definite)
        after = self._branch([*node.body, *node.orelse], before)
        for handler in node.handlers:
            self._definite = set(before)
            self.visit(handler)
            after &= self._definite
        self._branch(node.finalbody, after)

    visit_Try = _visit_try
    visit_TryStar = _visit_try

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name and not self._scopes:  # bound for the block only, then deleted
            self._definite.add(node.name)
        elif node.name and self._scopes[-1].kind == "class":
            self._scopes[-1].names.add(node.name)
        self._visit_all(node.body)
        if node.name and not self._scopes:
            self._definite.discard(node.name)

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        before = set(self._definite)
        after: set[str] | None = None
        for case in node.cases:
            self._definite = set(before)
            self._visit_all([case.pattern, case.guard, *case.body])
            after = self._definite if after is None else after & self._definite
        last = node.cases[-1] if node.cases else None
        exhaustive = (
            last is not None
            and last.guard is None
            and isinstance(last.pattern, ast.MatchAs)
            and last.pattern.pattern is None
        )
        self._definite = (after or set()) if exhaustive else before & (after or set())

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._visit_all([*node.keys, *node.patterns])
        if node.rest:
            self._store(node.rest)

    # -- IPython magics ----------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        call = _magic_args.magic_call(node)
        for fragment in _magic_args.fragments(*call) if call else ():
            if fragment.kind == "name":
                self._load(fragment.text)
            elif fragment.kind == "bind":
                self._store(fragment.text)
            elif fragment.kind == "expr":
                try:
                    self.visit(ast.parse(fragment.text, mode="eval").body)
                except (SyntaxError, ValueError):
                    continue
            else:
                try:
                    body = _parse(fragment.text).body
                except (SyntaxError, ValueError):
                    continue
                if fragment.kind == "code":
                    self._visit_all(body)
                else:  # a namespace of its own that falls back to the notebook's: a class body
                    self._run_scope(_Scope("class"), body)
