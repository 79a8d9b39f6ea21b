"""Run cells and calls on a runner: IPython semantics, a fresh namespace per task.

One non-terminal :class:`~IPython.core.interactiveshell.InteractiveShell` provides the
transforms (``%time``, ``!cmd``, ``%%timeit``), magics and display machinery, but each task
executes in its own namespace dict: the shipped variables, the cached objects the task names,
``__name__ == "__main__"``, ``__builtins__`` and ``get_ipython``. While a task runs, the shell's
``user_ns`` is that task's namespace (a context variable, so concurrent tasks do not mix).

A cell's results are the names it bound (new, or rebound to another object), shipped values it
changed in place (found by re-packing and comparing digests) and the shipped names it deleted.
The :class:`ValueCache` keeps ``{name: (digest, object)}`` across tasks so the parent can send
a digest instead of the value.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import io
import linecache
import os
import selectors
import sys
import time
import tokenize
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from IPython.core.error import StdinNotImplementedError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_flame.channel.protocol import Call, Done, ErrorInfo, Execute, Packed
from jupyter_flame.errors import SerializationError
from jupyter_flame.runner.env import DEFAULT_CACHE_BYTES
from jupyter_flame.runner.jobs import Job
from jupyter_flame.runner.value_cache import Entry as _Entry
from jupyter_flame.runner.value_cache import ValueCache
from jupyter_flame.values.capture import is_ignored
from jupyter_flame.values.shipping import check_frame_limit, digest, pack, unpack

__all__ = ["DEFAULT_CACHE_BYTES", "Executor", "ValueCache", "error_info", "make_shell"]

_BASELINE_BYTES = 16 * 1024**2  # received values up to this size get a runner-side baseline

_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_INTERNAL_FILES = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    for name in ("_execution.py", "_lifecycle.py", "runner.py", "_outputs.py")
)
_PLUMBING = (  # frames a traceback may start with before reaching the cell's own code
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.abspath(selectors.__file__),
)

_task_ns: ContextVar[dict[str, Any] | None] = ContextVar("jupyter_flame_ns", default=None)


class _FlameShell(InteractiveShell):
    """An ``InteractiveShell`` whose ``user_ns`` is the running task's namespace."""

    @property
    def user_ns(self) -> dict[str, Any]:
        ns = _task_ns.get()
        return ns if ns is not None else self._flame_base_ns

    @user_ns.setter
    def user_ns(self, value: dict[str, Any]) -> None:
        self._flame_base_ns = value


def _no_input(*args: Any, **kwargs: Any) -> str:
    raise StdinNotImplementedError(
        "input() is not available on a runner: a %%flame cell has no stdin. "
        "Compute the value in the notebook and use it in the cell instead."
    )


class _NoStdin(io.TextIOBase):
    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        _no_input()
        return ""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        _no_input()
        return ""


def make_shell(display_router: Any) -> InteractiveShell:
    """Create the runner's shell; ``display_router`` is the DisplayPublisher class to use."""
    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "NoColor"
    shell = _FlameShell.instance(config=config, display_pub_class=display_router)
    builtins.input = _no_input
    sys.stdin = _NoStdin()
    return shell


def _warn(text: str) -> None:
    sys.stderr.write(f"jupyter-flame: {text}\n")


def _quiet(source: str, cell: str) -> bool:
    """Whether the cell's last line ends with ``;`` (IPython: do not show the value)."""
    lines = [ln for ln in source.rstrip().splitlines() if ln.strip()]
    if lines and lines[-1].split("#", 1)[0].rstrip().endswith(";"):
        return True
    try:
        toks = [
            t
            for t in tokenize.generate_tokens(io.StringIO(cell).readline)
            if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT,
                              tokenize.ENDMARKER, tokenize.DEDENT, tokenize.INDENT)
        ]
    except (tokenize.TokenError, SyntaxError):
        return False
    return bool(toks) and toks[-1].string == ";"


def format_traceback(exc: BaseException) -> list[str]:
    """The exception's traceback as lines, without the runner's own frames."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    _prune(te, set())
    return "".join(te.format()).rstrip("\n").split("\n")


def _prune(te: traceback.TracebackException, seen: set[int]) -> None:
    """Drop runner frames anywhere, and the event-loop plumbing a traceback starts with."""
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = [f for f in te.stack if os.path.abspath(f.filename) not in _INTERNAL_FILES]
    while frames and os.path.abspath(frames[0].filename).startswith(_PLUMBING):
        frames.pop(0)
    te.stack = traceback.StackSummary.from_list(frames)
    for sub in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if sub is not None:
            _prune(sub, seen)


def error_info(exc: BaseException) -> ErrorInfo:
    packed: Packed | None
    try:
        packed = pack(exc)
    except BaseException:
        packed = None
    try:
        evalue = str(exc)
    except Exception:
        evalue = f"<unprintable {type(exc).__name__}>"
    return ErrorInfo(
        ename=type(exc).__name__,
        evalue=evalue,
        traceback=format_traceback(exc),
        exc=packed,
        module=type(exc).__module__,
    )


def _digest_of(p: Packed) -> str:
    return p.digest or digest(p.payload, p.buffers)


def _repacked_digest(obj: Any, name: str) -> str | None:
    try:
        return _digest_of(pack(obj, name=name))
    except Exception:
        return None


def _nbytes_of(p: Packed) -> int:
    return p.nbytes or memoryview(p.payload).nbytes + sum(memoryview(b).nbytes
                                                          for b in p.buffers)


def _why(exc: BaseException) -> str:
    """One line: ``cannot pickle ...``, from the underlying error when there is one."""
    cause = exc.__cause__ or exc
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else type(cause).__name__
    return text if text.lower().startswith("cannot pickle") else f"cannot pickle it: {text}"


class Executor:
    """Runs :class:`Execute` and :class:`Call` tasks; one per runner, thread-safe."""

    def __init__(self, shell: InteractiveShell, cache: ValueCache,
                 max_frame: Callable[[], int] = lambda: 16 * 1024**3) -> None:
        self.shell = shell
        self.cache = cache
        self._max_frame = max_frame  # the pool's (Configure.max_frame), read per task
        hidden = shell.user_ns_hidden.get("get_ipython", shell.get_ipython)
        self._seeds: dict[str, Any] = {"get_ipython": hidden}  # the object %who hides

    # --- cells ---------------------------------------------------------------------------
    def execute(self, msg: Execute, job: Job) -> Done:
        start = time.perf_counter()

        def fail(exc: BaseException) -> Done:
            return Done(msg.task, ok=False, error=error_info(exc), cache=self.cache.view(),
                        elapsed=time.perf_counter() - start)

        cached, missing = self.cache.take(msg.cached)
        if missing:
            error = ErrorInfo("FlameCacheMiss", ", ".join(sorted(missing)), [])
            return Done(msg.task, ok=False, error=error, cache=self.cache.view(),
                        elapsed=time.perf_counter() - start)
        shipped = dict(cached)
        try:
            for name, p in msg.variables.items():
                obj = unpack(p, name=name)
                d = _digest_of(p)
                nbytes = _nbytes_of(p)
                base = _repacked_digest(obj, name) if nbytes <= _BASELINE_BYTES else d
                shipped[name] = entry = _Entry(d, obj, nbytes, base or d)
                self.cache.put(name, entry)
        except BaseException as exc:
            return fail(exc)
        unpacked = time.perf_counter()

        ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **self._seeds}
        ns.update({name: entry.obj for name, entry in shipped.items()})
        before = {name: id(obj) for name, obj in ns.items()}
        token = _task_ns.set(ns)
        try:
            value, has_value = self._run_cell(msg, ns, job)
        except BaseException as exc:
            self._forget_changed(shipped)
            return fail(exc)
        finally:
            _task_ns.reset(token)
        ran = time.perf_counter()
        names, deleted = self._collect(ns, before, shipped)
        packed_value = self._pack_value(value) if has_value else None
        sizes = {n: p.nbytes for n, p in names.items()}
        if packed_value is not None:
            sizes["the cell's value"] = packed_value.nbytes
        try:
            check_frame_limit(sizes, self._max_frame(),
                              "The cell ran, but its results stay on the runner: they are")
        except SerializationError as exc:
            return fail(exc)
        end = time.perf_counter()
        return Done(msg.task, ok=True, value=packed_value, has_value=packed_value is not None,
                    names=names, deleted=deleted, cache=self.cache.view(), elapsed=end - start,
                    timings={"unpack": unpacked - start, "run": ran - unpacked,
                             "pack": end - ran})

    def _run_cell(self, msg: Execute, ns: dict[str, Any], job: Job) -> tuple[Any, bool]:
        source = msg.source
        cell = self.shell.transform_cell(source)  # type: ignore[no-untyped-call]
        linecache.cache[msg.filename] = (
            len(source), None, source.splitlines(keepends=True), msg.filename
        )
        tree = compile(cell, msg.filename, "exec", ast.PyCF_ONLY_AST | _COMPILE_FLAGS,
                       dont_inherit=True)
        last: ast.expr | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not _quiet(source, cell):
            last = tree.body.pop().value
        body = compile(tree, msg.filename, "exec", _COMPILE_FLAGS, dont_inherit=True)
        expr = None
        if last is not None:
            expr = compile(ast.Expression(last), msg.filename, "eval", _COMPILE_FLAGS,
                           dont_inherit=True)
        loop: asyncio.AbstractEventLoop | None = None
        self.shell.events.trigger("pre_execute")  # type: ignore[no-untyped-call]
        try:
            with job.user_code():
                result = eval(body, ns)
                if inspect.iscoroutine(result):
                    loop = job.loop = asyncio.new_event_loop()
                    loop.run_until_complete(result)
                value = None
                if expr is not None:
                    value = eval(expr, ns)
                    if inspect.iscoroutine(value):
                        loop = job.loop = loop or asyncio.new_event_loop()
                        value = loop.run_until_complete(value)
        finally:
            if loop is not None:
                _close_loop(loop)
            # matplotlib's flush_figures, among others
            self.shell.events.trigger("post_execute")  # type: ignore[no-untyped-call]
        return value, expr is not None

    def _collect(
        self, ns: dict[str, Any], before: dict[str, int], shipped: dict[str, _Entry]
    ) -> tuple[dict[str, Packed], tuple[str, ...]]:
        names: dict[str, Packed] = {}
        for name, obj in list(ns.items()):
            if _hidden(name) or (name in self._seeds and obj is self._seeds[name]):
                continue
            if name in shipped and obj is shipped[name].obj:
                kind = "changed"  # the shipped object itself: did the cell change it in place?
            elif name in before and before[name] == id(obj):
                continue
            else:
                kind = "bound"
            try:
                p = pack(obj, name=name)
            except Exception as exc:
                _warn(f"{name!r} ({type(obj).__name__}) stays on the runner: {_why(exc)}")
                self.cache.drop(name)
                continue
            d = _digest_of(p)
            if kind == "changed" and d in (shipped[name].base, shipped[name].digest):
                continue
            names[name] = p
            self.cache.put(name, _Entry(d, obj, _nbytes_of(p), d))
        deleted = tuple(n for n in before if n not in ns and not _hidden(n) and n in shipped)
        for name in deleted:
            self.cache.drop(name)
        return names, deleted

    def _forget_changed(self, shipped: dict[str, _Entry]) -> None:
        """After a failure: drop cache entries whose object the cell changed in place."""
        for name, entry in shipped.items():
            if _repacked_digest(entry.obj, name) not in (entry.base, entry.digest):
                self.cache.drop(name, entry.obj)

    def _pack_value(self, value: Any) -> Packed | None:
        try:
            return pack(value)
        except Exception as exc:
            _warn(f"the cell's value ({type(value).__name__}) stays on the runner: "
                  f"{_why(exc)}; showing its representation instead")
            try:
                assert self.shell.display_formatter is not None
                formatter = self.shell.display_formatter
                data, metadata = formatter.format(value)  # type: ignore[no-untyped-call]
                self.shell.display_pub.publish(data, metadata)
            except Exception:
                pass
            return None

    # --- calls ---------------------------------------------------------------------------
    def call(self, msg: Call, job: Job) -> Done:
        start = time.perf_counter()
        loop: asyncio.AbstractEventLoop | None = None
        try:
            fn, args, kwargs = unpack(msg.packed)
            with job.user_code():
                result = fn(*args, **kwargs)
                if inspect.iscoroutine(result):
                    loop = job.loop = asyncio.new_event_loop()
                    result = loop.run_until_complete(result)
            packed = pack(result, digest=False)  # a call's result is never cached
            check_frame_limit({"the result": packed.nbytes}, self._max_frame(),
                              "The call ran, but its result stays on the runner: it is")
        except BaseException as exc:
            return Done(msg.task, ok=False, error=error_info(exc), cache=self.cache.view(),
                        elapsed=time.perf_counter() - start)
        finally:
            if loop is not None:
                _close_loop(loop)
        return Done(msg.task, ok=True, value=packed, has_value=True, cache=self.cache.view(),
                    elapsed=time.perf_counter() - start)


def _hidden(name: str) -> bool:
    return is_ignored(name) or (name.startswith("__") and name.endswith("__"))


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the cell left running on its private loop, then close it."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException:
        pass
    finally:
        loop.close()

