"""Every error jupyter-flame raises, in one tree.

::

    FlameError                      base of everything below; catch this to catch all
    ├── BootError                   a runner could not be started (reason, message, log tail)
    ├── RunnerLostError             a runner died or vanished while busy (exit code / signal)
    ├── RemoteError                 the cell or function raised on the runner; the remote
    │                               traceback is rendered in IPython. When the original
    │                               exception type exists locally, the raised exception is an
    │                               instance of *both* that type and RemoteError
    ├── SerializationError          a variable or value cannot be pickled (names it and its type)
    ├── FlameTimeoutError           waiting for a runner or a result exceeded its timeout
    ├── ChannelAuthError            a peer failed the handshake or a frame failed its MAC/sequence
    ├── ChannelClosedError          the channel's peer is gone (EOF, reset) or it was closed
    │                               locally (also a ConnectionError)
    ├── BackendError                the backend's infrastructure failed (Kubernetes API status,
    │                               reason and, for 403s, the RBAC fix)
    └── ConfigError                 an option has a bad value (names the option, value and fix)
                                    (also a ValueError)

    FlameWarning (UserWarning)      base of the warnings jupyter-flame emits
    └── LargeTransferWarning        a value about to be sent to a runner is large

Messages say what failed, the value, and the fix. Context attributes (``pool``, ``runner``,
``pod``) are set where known.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BootError",
    "ChannelAuthError",
    "ChannelClosedError",
    "ConfigError",
    "FlameError",
    "FlameTimeoutError",
    "FlameWarning",
    "LargeTransferWarning",
    "RemoteError",
    "RunnerLostError",
    "SerializationError",
]


class FlameError(Exception):
    """Base class of every jupyter-flame error."""

    def __init__(
        self,
        message: str,
        *,
        pool: str | None = None,
        runner: str | None = None,
        pod: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.pool = pool
        self.runner = runner
        self.pod = pod

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def _render_traceback_(self) -> list[str]:
        """IPython hook: show our errors as their message, not as frames of our internals
        (the message already says what failed, the value and the fix)."""
        return f"{type(self).__name__}: {self}".splitlines()


def _rebuild(cls: type[FlameError], state: dict[str, Any]) -> FlameError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, state.get("message", ""))
    obj.__dict__.update(state)
    return obj


class BootError(FlameError):
    """A runner could not be started.

    Attributes
    ----------
    reason:
        A short machine-readable reason (``ErrImagePull``, ``Unschedulable``, ``exited``...).
    log_tail:
        The last lines the runner printed, when any.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        log_tail: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.reason = reason
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = self.message
        if self.log_tail:
            text += "\n--- runner log tail ---\n" + self.log_tail.rstrip()
        return text


class RunnerLostError(FlameError):
    """A runner died or its connection was lost while it held work.

    Attributes
    ----------
    exit_code:
        The process exit code when known (negative: killed by that signal).
    """

    def __init__(self, message: str, *, exit_code: int | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.exit_code = exit_code


class RemoteError(FlameError):
    """An exception raised by code running on a runner.

    Attributes
    ----------
    ename, evalue:
        The remote exception's type name and ``str()``.
    remote_traceback:
        The formatted remote traceback (list of lines), shown by IPython.
    """

    def __init__(
        self,
        message: str,
        *,
        ename: str = "Exception",
        evalue: str = "",
        remote_traceback: list[str] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.ename = ename
        self.evalue = evalue
        self.remote_traceback = list(remote_traceback or [])

    def _render_traceback_(self) -> list[str]:
        """IPython hook: show the runner's traceback instead of the local one."""
        return remote_traceback_lines(self.ename, self.runner, self.remote_traceback)


def remote_traceback_lines(ename: str, runner: str | None, lines: list[str]) -> list[str]:
    """What IPython shows for a remote exception: a header, then the runner's traceback."""
    where = f" on runner {runner}" if runner else ""
    return [f"Remote {ename}{where}:", *lines]


class SerializationError(FlameError):
    """A value cannot be serialized to travel to or from a runner.

    Attributes
    ----------
    name:
        The variable's name (``None`` for anonymous values such as function arguments).
    type_name:
        The qualified name of the value's type.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        type_name: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.name = name
        self.type_name = type_name


class FlameTimeoutError(FlameError, TimeoutError):
    """Waiting for a runner, a boot or a result took longer than allowed."""


class ChannelAuthError(FlameError):
    """A peer failed authentication, or a frame failed its MAC or sequence check."""


class BackendError(FlameError):
    """The backend's infrastructure failed (e.g. a Kubernetes API error).

    Attributes
    ----------
    status:
        The HTTP status code, when the failure came from an API.
    reason:
        The API's reason (``Forbidden``, ``NotFound``...).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.status = status
        self.reason = reason


class ConfigError(FlameError, ValueError):
    """An option has a bad value; the message names the option, the value and the fix."""


class ChannelClosedError(FlameError, ConnectionError):
    """The channel's peer is gone (EOF, reset) or the channel was closed locally."""


class FlameWarning(UserWarning):
    """Base class of the warnings jupyter-flame emits."""


class LargeTransferWarning(FlameWarning):
    """A value about to be sent to a runner is large (see ``jupyter_flame.values.shipping``)."""
