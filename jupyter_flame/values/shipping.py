"""Values to and from runners: cloudpickle protocol 5, out-of-band buffers, content digests.

:func:`pack` turns a value into a :class:`~jupyter_flame.channel.protocol.Packed`: the pickle stream
plus its out-of-band buffers (``pickle.PickleBuffer`` views of e.g. numpy arrays' memory, never
copied into the stream) and an ``xxh3_128`` digest over both.

What travels by value
---------------------
Functions, classes and lambdas defined in the notebook (``__main__``) go by value, as cloudpickle
always does. Modules go by reference (the runner imports them), except *local* modules, whose
files are not installed (``helpers.py`` beside the notebook): before every pickle those are
registered with :func:`cloudpickle.register_pickle_by_value`, so their functions, classes,
instances and the module objects themselves travel by value wherever they sit in the value
(containers, closures, globals of notebook functions). :mod:`jupyter_flame.values._local_modules`
decides what is installed.
"""

from __future__ import annotations

import io
import pickle
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pickle import PickleBuffer
from types import ModuleType
from typing import Any, Protocol

import cloudpickle
import xxhash

from jupyter_flame.channel.protocol import Packed
from jupyter_flame.errors import LargeTransferWarning, SerializationError
from jupyter_flame.values._local_modules import register_local_modules, ships_by_value

__all__ = [
    "LargeTransferWarning",
    "check_frame_limit",
    "digest",
    "human_bytes",
    "pack",
    "pack_namespace",
    "register_local_modules",
    "ships_by_value",
    "type_name",
    "unpack",
    "warn_size",
]

PROTOCOL = 5
_LOCATE_DEPTH = 3
_LOCATE_ITEMS = 256


class _HasPayload(Protocol):
    @property
    def payload(self) -> bytes: ...
    @property
    def buffers(self) -> Sequence[Any]: ...


# -- packing ------------------------------------------------------------------------------------


def pack(value: object, *, name: str | None = None, digest: bool = True) -> Packed:
    """Serialize ``value`` for a runner.

    Parameters
    ----------
    value:
        Any picklable object.
    name:
        The variable's name, used in the error message (``None`` for function arguments).
    digest:
        Whether to compute :attr:`Packed.digest` (needed only by values the runner may cache;
        ``False`` for calls and their results, which are never cached).

    Raises
    ------
    SerializationError
        The value cannot be pickled; the message names the variable, its type, the reason and
        (best effort) the part of the value that failed.
    """
    if type(value) in (bytes, bytearray) and len(value) >= _OUT_OF_BAND:  # type: ignore[arg-type]
        return _pack_buffer(value, digest)  # type: ignore[arg-type]
    if type(value) in _PLAIN:  # what cloudpickle would write too, without its Python layer
        payload = pickle.dumps(value, protocol=PROTOCOL)
        return Packed(payload, (), _digest_views(payload, []) if digest else "", len(payload),
                      type(value).__name__)
    register_local_modules()
    return _pack(value, name, digest)


_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})
"""Types whose pickle holds no reference to code, so plain ``pickle`` writes them as is."""

_OUT_OF_BAND = 64 * 1024
"""bytes/bytearray values at least this large travel out of band (no copy when sent)."""


class _Rebuilt:
    """Pickles as ``kind(buffer)`` with the buffer out of band (pickle writes ``bytes`` in
    band whatever the protocol, and ``reducer_override`` never sees exact ``bytes``)."""

    def __init__(self, kind: type, value: bytes | bytearray) -> None:
        self.kind, self.value = kind, value

    def __reduce__(self) -> Any:
        return (_rebuild, (self.kind is bytes, pickle.PickleBuffer(self.value)))


def _rebuild(immutable: bool, buffer: Any) -> bytes | bytearray:
    view = memoryview(buffer)  # bytes(PickleBuffer) itself takes a slow path (4x slower)
    return bytes(view) if immutable else bytearray(view)


def _pack_buffer(value: bytes | bytearray, digest: bool) -> Packed:
    """A large bytes/bytearray: its memory is the frame's buffer (sent as it is); the receiver
    makes one copy, the new object."""
    bufs: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(_Rebuilt(type(value), value), protocol=PROTOCOL,
                           buffer_callback=bufs.append)
    return Packed(payload, tuple(bufs), _digest_views(payload, [b.raw() for b in bufs])
                  if digest else "", len(payload) + len(value), type(value).__name__)


#: streams over an OS file descriptor (in-memory ones, io.BytesIO and io.StringIO, travel)
_OS_STREAMS = (io.TextIOWrapper, io.BufferedReader, io.BufferedWriter, io.BufferedRandom,
               io.BufferedRWPair, io.FileIO)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, refusing open files and streams: cloudpickle would read a read-mode file
    whole and send an ``io.StringIO`` copy, which would come back and replace the file."""

    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, _OS_STREAMS):
            raise TypeError(f"an open file or stream ({type_name(obj)}) cannot travel; open "
                            "it inside the cell instead")
        return super().reducer_override(obj)


def _dumps(value: object, buffer_callback: Any) -> bytes:
    with io.BytesIO() as out:
        _Pickler(out, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(value)
        return out.getvalue()


def _pack(value: object, name: str | None, digest: bool = True) -> Packed:
    buffers: list[PickleBuffer] = []
    try:
        payload = _dumps(value, buffers.append)
    except Exception as exc:
        raise _serialization_error(value, name, exc) from exc
    views = [b.raw() for b in buffers]
    return Packed(
        payload=payload,
        buffers=tuple(buffers),
        digest=_digest_views(payload, views) if digest else "",
        nbytes=len(payload) + sum(v.nbytes for v in views),
        type_name=type_name(value),
    )


def pack_namespace(ns: Mapping[str, object], names: Iterable[str]) -> dict[str, Packed]:
    """Pack ``ns[name]`` for each of ``names``, all or nothing.

    Raises :class:`SerializationError` for the first name that cannot be pickled, before
    returning anything. A name missing from ``ns`` raises :class:`KeyError`.
    """
    register_local_modules()
    packed: dict[str, Packed] = {}
    for name in names:
        if name not in packed:
            packed[name] = _pack(ns[name], name)
    return packed


def unpack(packed: Packed | _HasPayload, *, name: str | None = None) -> Any:
    """Rebuild a value from its payload and buffers.

    The buffers may be ``PickleBuffer``, ``memoryview``, ``bytes``/``bytearray`` or numpy
    arrays, as received from the channel. A failure (typically a module missing on this side)
    raises :class:`SerializationError`.
    """
    try:
        return pickle.loads(packed.payload, buffers=packed.buffers)
    except Exception as exc:
        kind = getattr(packed, "type_name", "") or "value"
        what = f"variable {name!r} ({kind})" if name else f"a value of type {kind}"
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            hint = f" Install {exc.name!r} where the value is loaded."
        raise SerializationError(
            f"Cannot load {what}: {_reason(exc)}.{hint}", name=name, type_name=kind or None
        ) from exc


def digest(payload: bytes, buffers: Sequence[Any]) -> str:
    """The ``xxh3_128`` hex digest of a payload and its buffers, streamed, without copies.

    Buffers may be any C- or Fortran-contiguous buffer (``PickleBuffer``, ``memoryview``,
    ``bytes``, numpy arrays); the digest depends only on their bytes.
    """
    return _digest_views(payload, [_raw(b) for b in buffers])


def _raw(buffer: Any) -> memoryview:
    if isinstance(buffer, PickleBuffer):
        return buffer.raw()
    return PickleBuffer(buffer).raw()


def _digest_views(payload: bytes, views: Sequence[memoryview]) -> str:
    hasher = xxhash.xxh3_128()
    hasher.update(len(payload).to_bytes(8, "little"))
    hasher.update(payload)
    for view in views:  # length-prefixed, so splitting bytes differently changes the digest
        hasher.update(view.nbytes.to_bytes(8, "little"))
        hasher.update(view)
    return hasher.hexdigest()


# -- sizes --------------------------------------------------------------------------------------
def check_frame_limit(sizes: Mapping[str, int], limit: int, what: str) -> None:
    """Raise :class:`SerializationError` if ``sizes`` (name -> bytes) together exceed one
    message's ``limit``: ``what`` says which way (``"this cell sends"``, ...). Pure."""
    total = sum(sizes.values())
    if total <= limit:
        return
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    listed = ", ".join(f"{n} ({human_bytes(b)})" for n, b in biggest)
    name = biggest[0][0] if len(sizes) == 1 else None
    raise SerializationError(
        f"{what} {human_bytes(total)} ({listed}), over the frame limit of {human_bytes(limit)} "
        f"(Pool.max_frame = {limit}). Send less (a slice, or a path on shared storage to load "
        "there), or make the pool with a larger max_frame: Pool(..., max_frame=N) or "
        "c.Pool.max_frame = N.", name=name)




def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, one decimal above bytes."""
    if abs(n) < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if abs(size) < 1024 or unit == "PiB":
            break
    return f"{size:.1f} {unit}"


def warn_size(
    name: str | None, nbytes: int, threshold: int | None, *, type_name: str | None = None
) -> None:
    """Warn with :class:`LargeTransferWarning` when ``nbytes`` reaches ``threshold``.

    ``threshold=None`` disables the warning. The message reads e.g. ``Sending 'big'
    (numpy.ndarray, 1.9 GiB) to the runner.``
    """
    if threshold is None or nbytes < threshold:
        return
    what = f"{name!r}" if name else "a value"
    detail = f"{type_name}, {human_bytes(nbytes)}" if type_name else human_bytes(nbytes)
    warnings.warn(LargeTransferWarning(f"Sending {what} ({detail}) to the runner."), stacklevel=2)


# -- errors -------------------------------------------------------------------------------------


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type: ``numpy.ndarray``, ``io.TextIOWrapper``, ``int``."""
    cls = type(value)
    module, qualname = cls.__module__, cls.__qualname__
    if module == "builtins":
        return qualname
    public = module.lstrip("_")
    if public != module and getattr(sys.modules.get(public), qualname, None) is cls:
        module = public  # _io.TextIOWrapper is io.TextIOWrapper
    return f"{module}.{qualname}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _serialization_error(value: object, name: str | None, exc: Exception) -> SerializationError:
    kind = type_name(value)
    where = ""
    try:
        path = _locate(value, _LOCATE_DEPTH)
    except Exception:  # best effort only
        path = []
    if path:
        where = " (inside " + ", ".join(path) + ")"
    reason = _reason(exc)
    if name is None:
        message = f"Cannot send argument of type {kind}: {reason}{where}."
    else:
        message = (
            f"Cannot send variable {name!r} ({kind}) to the runner: {reason}{where}. "
            f"Create it inside the cell, or pass --skip {name} to leave it behind."
        )
    return SerializationError(message, name=name, type_name=kind)


def _picklable(value: object) -> bool:
    try:
        _dumps(value, _discard)
    except Exception:
        return False
    return True


def _discard(_: PickleBuffer) -> None:
    return None


def _children(value: object) -> Iterable[tuple[str, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"key {key!r}", item
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield f"item {index}", item
    elif callable(value) and hasattr(value, "__code__"):
        closure = getattr(value, "__closure__", None) or ()
        for var, cell in zip(value.__code__.co_freevars, closure, strict=False):
            try:
                yield f"closure variable {var!r}", cell.cell_contents
            except ValueError:
                continue
        fn_globals = getattr(value, "__globals__", {})
        for var in value.__code__.co_names:
            if var in fn_globals:
                yield f"global {var!r}", fn_globals[var]
    elif isinstance(value, ModuleType):
        for attr, item in vars(value).items():
            if not attr.startswith("__"):
                yield f"module attribute {attr!r}", item
    elif not isinstance(value, type):
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            for attr, item in state.items():
                yield f"attribute {attr!r}", item


def _locate(value: object, depth: int) -> list[str]:
    """The path to the first unpicklable part of ``value``, e.g. ``["key 'cfg'", "key 'lock'"]``."""
    if depth <= 0:
        return []
    for count, (label, child) in enumerate(_children(value)):
        if count >= _LOCATE_ITEMS:
            break
        if not _picklable(child):
            return [label, *_locate(child, depth - 1)]
    return []
