"""Remote exceptions, rebuilt locally.

A remote exception keeps its type where that type exists locally: a ``ValueError`` raised on a
runner is raised in the notebook as an instance of a class that derives from both
``ValueError`` and :class:`~jupyter_flame.errors.RemoteError` (so ``except ValueError`` and
``except RemoteError`` both catch it). Where the two cannot be combined (types with their own C
layout, e.g. ``OSError``) the original exception is raised with the remote traceback attached.
Otherwise a plain :class:`RemoteError` carries the remote type's name. In IPython the remote
traceback is shown, pointing at the cell's own lines.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from jupyter_flame.channel.protocol import ErrorInfo
from jupyter_flame.errors import RemoteError, remote_traceback_lines

__all__ = ["raise_remote", "rebuild_error"]

_combined: dict[type, type[BaseException] | None] = {}
_lock = threading.Lock()


def _combine(cls: type[BaseException]) -> type[BaseException] | None:
    with _lock:
        if cls in _combined:
            return _combined[cls]
        combined: type[BaseException] | None
        try:
            combined = type(cls.__name__, (cls, RemoteError), {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__init__": lambda self, *a, **k: None,
                "__str__": RemoteError.__str__,
                "__reduce__": BaseException.__reduce__,
            })
        except TypeError:
            combined = None
        _combined[cls] = combined
        return combined


def _render(lines: list[str], ename: str, runner: str | None) -> Any:
    return lambda: remote_traceback_lines(ename, runner, lines)


def rebuild_error(info: ErrorInfo, *, pool: str | None = None,
                  runner: str | None = None) -> BaseException:
    """Turn a runner's :class:`ErrorInfo` into the exception to raise in the notebook."""
    from jupyter_flame.values.shipping import unpack

    if info.ename == "KeyboardInterrupt":
        kb = KeyboardInterrupt(info.evalue or f"interrupted on runner {runner}")
        return kb
    original: Any = None
    if info.exc is not None:
        try:
            original = unpack(info.exc)
        except Exception:
            original = None
    message = f"{info.ename}: {info.evalue}" if info.evalue else info.ename
    if isinstance(original, BaseException) and not isinstance(original, RemoteError):
        cls = type(original)
        combined = _combine(cls) if isinstance(original, Exception) else None
        if combined is not None:
            exc = BaseException.__new__(combined)
            exc.args = original.args
            exc.__dict__.update(getattr(original, "__dict__", {}))
            exc.__dict__.update(message=str(original), ename=info.ename, evalue=info.evalue,
                                remote_traceback=list(info.traceback), pool=pool,
                                runner=runner, pod=None)
            return exc
        try:
            original.remote_traceback = list(info.traceback)  # type: ignore[attr-defined]
            original._render_traceback_ = _render(  # type: ignore[attr-defined]
                list(info.traceback), info.ename, runner)
        except Exception:
            pass
        return original  # type: ignore[no-any-return]
    return RemoteError(message, ename=info.ename, evalue=info.evalue,
                       remote_traceback=list(info.traceback), pool=pool, runner=runner)


def raise_remote(exc: BaseException) -> NoReturn:
    raise exc from None
