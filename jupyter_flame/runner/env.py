"""What a runner is told by its environment, and how it reports a fatal start.

See :mod:`jupyter_flame.runner.main` for the variables; :func:`read_env` parses them and removes
the key from the environment as soon as it is read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from jupyter_flame._version import __version__
from jupyter_flame.channel.protocol import EXIT_BAD_ENV

__all__ = ["DEFAULT_BOOT_TIMEOUT", "DEFAULT_CACHE_BYTES", "Fatal", "RunnerEnv", "log", "read_env"]

DEFAULT_BOOT_TIMEOUT = 30.0
"""Seconds a runner keeps dialling a parent that refuses (``JUPYTER_FLAME_BOOT_TIMEOUT``)."""

DEFAULT_CACHE_BYTES = 4 * 1024**3
"""Default bound of the runner's value cache (``JUPYTER_FLAME_CACHE_BYTES`` overrides it)."""


class Fatal(Exception):
    """The runner cannot go on; ``code`` is its exit code (``EXIT_*``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read_key(fd_text: str) -> str:
    try:
        fd = int(fd_text)
    except ValueError:
        raise Fatal(EXIT_BAD_ENV, f"JUPYTER_FLAME_KEY_FD={fd_text!r} is not a descriptor") from None
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError as exc:
        raise Fatal(EXIT_BAD_ENV, f"cannot read the channel key from descriptor {fd}: {exc}"
                    ) from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return b"".join(chunks).decode("ascii", "replace").strip()


def reexec_without_key(args: list[str]) -> None:
    """Move ``JUPYTER_FLAME_KEY`` from the environment into an inherited pipe and exec this
    runner again (``JUPYTER_FLAME_KEY_FD``); returns only if that cannot be done (the key then
    stays in the environment, and :func:`read_env` removes it from ``os.environ``)."""
    key = os.environ.get("JUPYTER_FLAME_KEY", "")
    if len(key) > 4096:  # not a key: read_env says so
        return
    try:
        r, w = os.pipe()
        try:
            os.write(w, key.encode("ascii", "replace"))
        finally:
            os.close(w)
        os.set_inheritable(r, True)
        env = {k: v for k, v in os.environ.items() if k != "JUPYTER_FLAME_KEY"}
        env["JUPYTER_FLAME_KEY_FD"] = str(r)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "jupyter_flame.runner", *args], env)
    except OSError as exc:
        log(f"jupyter-flame runner: cannot re-execute without the key in the environment "
            f"({exc}); going on with it")


def log(text: str) -> None:
    """A line on the runner's real stderr (the backend keeps it as the runner's log)."""
    stream = sys.__stderr__
    if stream is not None:
        try:
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


@dataclass(frozen=True)
class RunnerEnv:
    """What the environment tells a runner."""

    host: str
    port: int
    runner_id: str
    pool: str
    key: bytes = field(repr=False)
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    cache_bytes: int = DEFAULT_CACHE_BYTES


def read_env(environ: Any = None) -> RunnerEnv:
    """Parse the runner's environment; removes ``JUPYTER_FLAME_KEY`` from it.

    Raises ``Fatal`` (exit code 2) naming the variable that is missing or malformed.
    """
    env = os.environ if environ is None else environ
    key_hex = env.pop("JUPYTER_FLAME_KEY", None)
    key_fd = env.pop("JUPYTER_FLAME_KEY_FD", None)
    if key_fd is not None:  # local runners: an inherited pipe (nothing in /proc/<pid>/environ)
        key_hex = _read_key(key_fd)

    def need(name: str) -> str:
        value = env.get(name)
        if not value:
            raise Fatal(EXIT_BAD_ENV, f"{name} is not set; runners are started by a pool")
        return str(value)

    parent = need("JUPYTER_FLAME_PARENT")
    if parent.startswith("unix:/"):  # a local runner: the pool's Unix socket
        host, sep, port_text = parent, ":", "0"
    else:
        host, sep, port_text = parent.rpartition(":")
        host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise Fatal(EXIT_BAD_ENV, f"JUPYTER_FLAME_PARENT={parent!r} is not host:port or unix:/path")
    if not key_hex:
        raise Fatal(EXIT_BAD_ENV, "JUPYTER_FLAME_KEY is not set; runners are started by a pool")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise Fatal(EXIT_BAD_ENV, "JUPYTER_FLAME_KEY is not hex") from None

    wanted = env.get("JUPYTER_FLAME_VERSION")
    if wanted and wanted != __version__:
        raise Fatal(EXIT_BAD_ENV, (
            f"version mismatch: this runner has jupyter-flame {__version__}, the notebook has "
            f"{wanted}. Install jupyter-flame=={wanted} in the runner's image, or run the "
            "notebook's own image (drop --image / the template's image)"))

    def number(name: str, default: float) -> float:
        text = env.get(name)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise Fatal(EXIT_BAD_ENV, f"{name}={text!r} is not a number") from None

    return RunnerEnv(
        host=host,
        port=int(port_text),
        runner_id=need("JUPYTER_FLAME_RUNNER_ID"),
        pool=env.get("JUPYTER_FLAME_POOL") or "default",
        key=key,
        boot_timeout=number("JUPYTER_FLAME_BOOT_TIMEOUT", DEFAULT_BOOT_TIMEOUT),
        cache_bytes=int(number("JUPYTER_FLAME_CACHE_BYTES", DEFAULT_CACHE_BYTES)),
    )
