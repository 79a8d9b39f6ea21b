"""Parsing and validating ``%%flame`` / ``%flame pool`` options (pure: no I/O).

Every error names the option, the value and the fix.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.errors import ConfigError

__all__ = ["CellOptions", "PoolArgs", "cell_parser", "parse_cell_line", "parse_pool_args",
           "pool_parser"]

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ConfigError(f"%flame: {message}. See %%flame? for every option.")


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="Where runners run: local, kubernetes, or another installed backend "
                        "(a jupyter_flame.backends entry point). Default: "
                        "c.FlameMagics.default_backend, else kubernetes inside a pod, "
                        "else local.")
    p.add_argument("--gpu", type=str, default=None, metavar="N",
                   help="GPUs for the runner (local: exclusive CUDA_VISIBLE_DEVICES; "
                        "Kubernetes: nvidia.com/gpu limit).")
    p.add_argument("--gpu-type", default=None, metavar="PRODUCT",
                   help="GPU product (Kubernetes node label nvidia.com/gpu.product).")
    p.add_argument("--cpu", default=None, metavar="Q", help="CPU, a Kubernetes quantity (2, 500m).")
    p.add_argument("--memory", default=None, metavar="Q",
                   help="Memory, a Kubernetes quantity (24Gi, 512Mi).")
    p.add_argument("--image", default=None, help="Container image (default: the notebook's).")
    p.add_argument("--node-selector", action="append", default=[], metavar="K=V",
                   help="Node label the runner must run on (repeatable).")
    p.add_argument("--toleration", action="append", default=[], metavar="K[=V]:EFFECT",
                   help="Taint the runner tolerates (repeatable).")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="Environment variable for the runner (repeatable).")
    p.add_argument("--volume", action="append", default=[], metavar="CLAIM:PATH",
                   help="Existing PersistentVolumeClaim to mount at PATH (repeatable).")


@functools.cache
def cell_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%%flame", add_help=False,
                description="Run this cell on a runner; its variables travel both ways.")
    p.add_argument("--pool", default=None, metavar="NAME", help="Use the named pool.")
    _add_runner_options(p)
    p.add_argument("--timeout", default=None, metavar="SECONDS",
                   help="Most time the cell may take, queueing included.")
    p.add_argument("--bg", action="store_true",
                   help="Run in the background: return at once; output streams into this "
                        "cell and results merge when it finishes.")
    p.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help="Do not ship this variable (repeatable).")
    p.add_argument("--quiet", action="store_true", help="No lifecycle display.")
    return p


@functools.cache
def pool_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%flame pool", add_help=False,
                description="Define a pool, or resize an existing one.")
    p.add_argument("name", metavar="NAME")
    _add_runner_options(p)
    p.add_argument("--min", default=None, metavar="N", help="Runners kept warm (default 0).")
    p.add_argument("--max", default=None, metavar="N", help="Most runners (default 1).")
    p.add_argument("--max-concurrency", default=None, metavar="N",
                   help="Tasks per runner at once (default 1).")
    p.add_argument("--idle-shutdown-after", default=None, metavar="SECONDS",
                   help="Idle runners shut down after this long (default 300; 'never').")
    p.add_argument("--boot-timeout", default=None, metavar="SECONDS",
                   help="Most time a runner may take to connect (default 60).")
    p.add_argument("--timeout", default=None, metavar="SECONDS",
                   help="Most time one task may take (default: no limit).")
    p.add_argument("--single-use", action="store_true", help="One task per runner.")
    return p


@dataclass(frozen=True)
class CellOptions:
    pool: str | None
    backend: str | None
    spec: RunnerSpec
    timeout: float | None
    bg: bool
    skip: tuple[str, ...]
    quiet: bool
    shaped: bool  # whether any runner-shape option was given


@dataclass(frozen=True)
class PoolArgs:
    name: str
    backend: str | None
    spec: RunnerSpec
    shaped: bool
    limits: dict[str, Any] = field(default_factory=dict)


def _pool_name(option: str, value: str | None) -> str | None:
    if value is not None and (not value.strip() or value.strip() != value):
        raise ConfigError(f"{option} {value!r} is not a pool name: use a non-empty name without "
                          "surrounding spaces (e.g. train), or leave it out for the default pool.")
    return value


def _int(option: str, value: str | None, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = minimum - 1
    if n < minimum or str(value).strip() != str(value):
        raise ConfigError(f"{option} {value!r} is not valid: use a whole number >= {minimum}.")
    return n


def _seconds(option: str, value: str | None, allow_never: bool = False) -> float | None:
    if value is None:
        return None
    if allow_never and value.lower() in ("never", "none", "inf"):
        return float("inf")
    try:
        s = float(value)
    except ValueError:
        s = -1.0
    if not s > 0:
        raise ConfigError(f"{option} {value!r} is not valid: use a number of seconds > 0"
                          + (" or 'never'." if allow_never else "."))
    return s


def _quantity(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    from jupyter_flame.backends.quantity import parse_quantity

    try:
        parse_quantity(value, option)
    except ConfigError:
        raise ConfigError(f"{option} {value!r} is not a Kubernetes quantity: use e.g. "
                          f"{'2 or 500m' if option == '--cpu' else '512Mi, 24Gi or 1E9'}."
                          ) from None
    return value


def _backend(value: str | None) -> str | None:
    if value is None:
        return None
    from jupyter_flame.backends.registry import backend_names

    names = backend_names()
    if value not in names:
        raise ConfigError(f"--backend {value!r} is not an installed backend: use one of "
                          f"{', '.join(names)} (a package adds one with a "
                          "'jupyter_flame.backends' entry point).")
    return value


def _pairs(option: str, values: list[str], sep: str, example: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values:
        key, found, value = item.partition(sep)
        if not found or not key:
            raise ConfigError(f"{option} {item!r} is not valid: use {example}.")
        out.append((key, value))
    return tuple(out)


def _tolerations(values: list[str]) -> tuple[tuple[str, str | None, str], ...]:
    out = []
    for item in values:
        head, found, effect = item.rpartition(":")
        if not found or not head or effect not in _EFFECTS:
            raise ConfigError(f"--toleration {item!r} is not valid: use KEY[=VALUE]:EFFECT with "
                              f"EFFECT one of {', '.join(_EFFECTS)} (e.g. "
                              "nvidia.com/gpu:NoSchedule).")
        key, eq, value = head.partition("=")
        out.append((key, value if eq else None, effect))
    return tuple(out)


def _spec(ns: argparse.Namespace) -> tuple[RunnerSpec, bool]:
    node_selector = _pairs("--node-selector", ns.node_selector, "=", "KEY=VALUE")
    for key, _ in node_selector:
        if not _LABEL_KEY.match(key):
            raise ConfigError(f"--node-selector key {key!r} is not a valid label key.")
    env = _pairs("--env", ns.env, "=", "KEY=VALUE")
    for key, _ in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", key):
            raise ConfigError(f"--env name {key!r} is not a valid variable name.")
    volumes = _pairs("--volume", ns.volume, ":", "CLAIM:PATH (e.g. data:/data)")
    for claim, path in volumes:
        if not path.startswith("/"):
            raise ConfigError(f"--volume {claim}:{path} is not valid: the mount path must be "
                              "absolute (e.g. data:/data).")
    spec = RunnerSpec(
        gpu=_int("--gpu", ns.gpu, 0) or 0,
        gpu_type=ns.gpu_type,
        cpu=_quantity("--cpu", ns.cpu),
        memory=_quantity("--memory", ns.memory),
        image=ns.image,
        node_selector=node_selector,
        tolerations=_tolerations(ns.toleration),
        env=env,
        volumes=volumes,
    )
    return spec, spec != RunnerSpec()


def parse_cell_line(line: str) -> CellOptions:
    ns = cell_parser().parse_args(shlex.split(line))
    spec, shaped = _spec(ns)
    return CellOptions(pool=_pool_name("--pool", ns.pool), backend=_backend(ns.backend), spec=spec,
                       timeout=_seconds("--timeout", ns.timeout), bg=ns.bg,
                       skip=tuple(ns.skip), quiet=ns.quiet, shaped=shaped)


def parse_pool_args(args: list[str]) -> PoolArgs:
    ns = pool_parser().parse_args(args)
    _pool_name("%flame pool NAME:", ns.name)
    spec, shaped = _spec(ns)
    limits: dict[str, Any] = {}
    for key, value in (("min", _int("--min", ns.min, 0)), ("max", _int("--max", ns.max, 1)),
                       ("max_concurrency", _int("--max-concurrency", ns.max_concurrency, 1)),
                       ("boot_timeout", _seconds("--boot-timeout", ns.boot_timeout)),
                       ("timeout", _seconds("--timeout", ns.timeout))):
        if value is not None:
            limits[key] = value
    idle = _seconds("--idle-shutdown-after", ns.idle_shutdown_after, allow_never=True)
    if idle is not None:
        limits["idle_shutdown_after"] = None if idle == float("inf") else idle
    if ns.single_use:
        limits["single_use"] = True
    return PoolArgs(name=ns.name, backend=_backend(ns.backend), spec=spec, shaped=shaped, limits=limits)
