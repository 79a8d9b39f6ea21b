"""Which modules travel by value: those whose files are not installed (for shipping).

A top-level module is *installed*, hence pickled by reference (the runner imports it), when it

- has no file (built-in, frozen) or lives under ``sysconfig``'s ``stdlib``/``platstdlib``/
  ``purelib``/``platlib`` paths or ``site.getsitepackages()``/``site.getusersitepackages()``;
- or was imported from a directory that a ``.pth`` file in those directories puts on
  ``sys.path`` (editable installs), or is a top-level name of an editable distribution
  (setuptools' import-hook editable installs).

Everything else (``helpers.py`` beside the notebook, packages in the kernel's working directory
or on ``PYTHONPATH``) is *local*: :func:`register_local_modules` registers it with
:func:`cloudpickle.register_pickle_by_value`. Submodules follow their top-level package.
Classification is cached per module name and origin; registration is process-wide and
permanent, like cloudpickle's own API.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import site
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType

import cloudpickle

__all__ = ["LocalModules", "register_local_modules", "ships_by_value"]


def _norm(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


@functools.cache
def _installed_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    dirs += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    dirs.append(site.getusersitepackages())
    return tuple(sorted({_norm(d) for d in dirs if d}))


@functools.cache
def _editable_roots() -> frozenset[str]:
    """Directories that ``.pth`` files in site-packages add to ``sys.path`` (editable installs)."""
    roots: set[str] = set()
    for base in _installed_prefixes():
        try:
            names = sorted(n for n in os.listdir(base) if n.endswith(".pth"))
        except OSError:
            continue
        for pth in names:
            try:
                with open(os.path.join(base, pth), encoding="utf-8") as fh:
                    lines = [line.strip() for line in fh.read().splitlines()]
            except (OSError, UnicodeDecodeError):
                continue
            roots.update(
                _norm(os.path.join(base, line))
                for line in lines
                if line and not line.startswith(("#", "import ", "import\t"))
            )
    return frozenset(roots)


@functools.cache
def _top_level_distributions() -> Mapping[str, list[str]]:
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # broken metadata must not break pickling
        return {}


@functools.cache
def _is_editable_name(name: str) -> bool:
    """Whether an editable install provides top-level ``name`` (e.g. setuptools' finders)."""
    for dist in _top_level_distributions().get(name, ()):
        try:
            info = json.loads(
                importlib.metadata.distribution(dist).read_text("direct_url.json") or "{}"
            )
        except Exception:
            continue
        if isinstance(info, dict) and info.get("dir_info", {}).get("editable"):
            return True
    return False


def _location(module: ModuleType) -> str | None:
    """The file or package directory a module was loaded from; ``None`` when it has none."""
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and file:
        return _norm(file)
    path = getattr(module, "__path__", None)  # namespace packages
    entries = [p for p in path or () if isinstance(p, str)] if path is not None else []
    return _norm(entries[0]) if entries else None


def _is_local(name: str, location: str | None) -> bool:
    if location is None or name.startswith("__main__") or name == "__mp_main__":
        return False
    if any(location == d or location.startswith(d + os.sep) for d in _installed_prefixes()):
        return False
    package_dir = os.path.dirname(location)
    if os.path.basename(location).startswith("__init__."):
        package_dir = os.path.dirname(package_dir)
    if package_dir in _editable_roots() or _is_editable_name(name):
        return False
    return True


_RESCAN_EVERY = 2.0  # seconds


def _origin_key(module: ModuleType) -> object:
    """A cheap key that changes when a module is replaced by one from elsewhere."""
    file = getattr(module, "__file__", None)
    if file:
        return file
    path = getattr(module, "__path__", None)
    return tuple(path) if path is not None else None


def ships_by_value(module: ModuleType | str) -> bool:
    """Whether a module (object or top-level name) travels by value: it is not installed.

    Submodules follow their top-level package.
    """
    mod = sys.modules.get(module) if isinstance(module, str) else module
    if mod is None:
        return False
    top = mod.__name__.partition(".")[0]
    top_module = sys.modules.get(top, mod if top == mod.__name__ else None)
    if top_module is None:
        return False
    return _is_local(top, _location(top_module))


class LocalModules:
    """The scan of ``sys.modules`` that registers local modules with cloudpickle, and its
    caches. The process uses one (:func:`register_local_modules`); tests make their own.

    Parameters
    ----------
    is_local:
        ``is_local(top_level_name, location) -> bool`` (default: the rules of this module).
    clock:
        Monotonic seconds (default ``time.monotonic``), for the periodic rescan.
    """

    def __init__(self, is_local: Callable[[str, str | None], bool] = _is_local,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._is_local, self._clock = is_local, clock
        self._lock = threading.Lock()
        self.classified: dict[str, object] = {}  # top-level name -> origin key when classified
        self.registered: set[str] = set()
        self._scanned: object = None  # (len(sys.modules), the last module imported)
        self._scanned_at = 0.0

    def register(self) -> list[str]:
        """Register every local top-level module with cloudpickle by value; returns the new
        ones. Classification is cached per module name and location; cheap to call before
        every pickle."""
        new: list[str] = []
        now = self._clock()
        # Fast path: nothing was imported since the last scan (a full rescan still happens
        # every few seconds, to catch a module replaced in place).
        fingerprint = (len(sys.modules), next(reversed(sys.modules), None))
        if fingerprint == self._scanned and now - self._scanned_at < _RESCAN_EVERY:
            return new
        with self._lock:
            if fingerprint == self._scanned and now - self._scanned_at < _RESCAN_EVERY:
                return new  # another thread finished the same scan while we waited
            # dict.copy() takes the modules in one C step: iterating sys.modules itself can
            # meet an import run by another thread or a finalizer mid-iteration
            for name, module in sorted(sys.modules.copy().items(), key=lambda item: item[0]):
                if "." in name or not isinstance(module, ModuleType):
                    continue
                key = _origin_key(module)
                if name in self.classified and self.classified[name] == key:
                    continue
                local = self._is_local(name, _location(module))
                self.classified[name] = key
                if local and name not in self.registered:
                    try:
                        cloudpickle.register_pickle_by_value(module)
                    except ValueError:
                        continue
                    self.registered.add(name)
                    new.append(name)
            # Only now may other threads take the fast path: everything the fingerprint covers
            # is registered (storing it before the loop let them pickle a local module by
            # reference).
            self._scanned, self._scanned_at = fingerprint, now
        return new


_PROCESS = LocalModules()


def register_local_modules() -> list[str]:
    """Register every local top-level module with cloudpickle by value (the process-wide
    :class:`LocalModules`); returns the new ones."""
    return _PROCESS.register()
