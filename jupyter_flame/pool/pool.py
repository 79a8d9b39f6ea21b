"""``Pool``: an elastic group of runners, usable as a ``concurrent.futures.Executor``.

Options (seconds everywhere)
----------------------------
name : str, optional
    The pool's name (``%flame status`` shows it; ``%%flame --pool NAME`` uses it). Default: a
    generated ``pool-N``.
backend : Backend or str, optional
    ``"local"``, ``"kubernetes"``, a :class:`~jupyter_flame.backends.base.Backend` instance, or
    ``None``: Kubernetes when running inside a pod (``POD_NAME`` set and a cluster reachable),
    else local subprocesses.
min : int, default 0
    Runners kept alive even when idle (booted when the pool starts).
max : int, default 1
    Most runners at once.
max_concurrency : int, default 1
    Tasks one runner runs at once.
idle_shutdown_after : float or None, default 300
    A runner idle this long shuts itself down (never below ``min``). ``None``: never.
boot_timeout : float, default 60
    How long a runner may take from boot request to connected before its boot fails.
timeout : float or None, default None
    Most time one task may take, queueing included. ``None``: no limit.
single_use : bool, default False
    Each runner runs one task, then exits.
spec : RunnerSpec, optional
    The runner's shape (GPUs, CPU, memory, image, placement, env).
heartbeat_interval : float, default 2
    How often the kernel pings each runner.
parent_timeout : float, default 10
    A runner that hears nothing from its kernel this long shuts itself down.
interrupt_grace : float, default 5
    After an interrupt, how long a runner may take to stop the task before it is killed and
    replaced.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from jupyter_flame.backends.base import Backend, RunnerSpec
from jupyter_flame.channel.protocol import Call, Done, Packed
from jupyter_flame.errors import ConfigError, FlameError
from jupyter_flame.pool import loop as _loop
from jupyter_flame.pool._direct import try_call
from jupyter_flame.pool.core import PoolCore, PoolOptions
from jupyter_flame.pool.link import RunnerLink
from jupyter_flame.values.remote import raise_remote, rebuild_error

__all__ = ["Pool", "all_pools", "default_backend", "get_pool", "kernel_id", "shutdown_all"]

_registry: dict[str, Pool] = {}
_registry_lock = threading.Lock()
_names = itertools.count(1)
_atexit_registered = False


def _register_exit_hook() -> None:
    """Shut every pool down when the interpreter exits (kernel shutdown, end of a script).

    It must run before ``concurrent.futures`` refuses new work at exit (the Kubernetes backend
    calls the API from worker threads), so it is registered with ``threading``'s exit hooks,
    which run in reverse order of registration, after the one ``concurrent.futures.thread``
    registered when it was imported; plain ``atexit`` runs too late.
    """
    import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered first)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise AttributeError
        register(shutdown_all)
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(shutdown_all)


def kernel_id() -> str:
    """The id of the kernel this process runs (its connection file), else ``pid-<pid>``."""
    try:
        from ipykernel.connect import get_connection_file

        base = os.path.basename(get_connection_file())
        if base.startswith("kernel-") and base.endswith(".json"):
            return base[len("kernel-"):-len(".json")]
    except Exception:
        pass
    return f"pid-{os.getpid()}"


def in_kubernetes_pod() -> bool:
    if not os.environ.get("POD_NAME"):
        return False
    return bool(os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST"))


def default_backend() -> str:
    """``"kubernetes"`` inside a pod (``POD_NAME`` and a cluster config), else ``"local"``."""
    return "kubernetes" if in_kubernetes_pod() else "local"


def make_backend(backend: Backend | str | None) -> Backend:
    if isinstance(backend, Backend):
        return backend
    name = backend or default_backend()
    if name == "local":
        from jupyter_flame.backends.local import LocalBackend

        return LocalBackend()
    if name == "kubernetes":
        from jupyter_flame.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend()
    from importlib.metadata import entry_points

    for ep in entry_points(group="jupyter_flame.backends"):
        if ep.name == name:
            return ep.load()()  # type: ignore[no-any-return]
    raise ConfigError(f"Unknown backend {name!r}. Use 'local' or 'kubernetes' (or install a "
                      "package that registers a 'jupyter_flame.backends' entry point).")


def _check(name: str, value: Any, ok: bool, fix: str) -> None:
    if not ok:
        raise ConfigError(f"Pool option {name}={value!r} is invalid: {fix}")


def validate(options: PoolOptions) -> None:
    o = options
    _check("min", o.min, isinstance(o.min, int) and o.min >= 0, "use an integer >= 0.")
    _check("max", o.max, isinstance(o.max, int) and o.max >= 1, "use an integer >= 1.")
    _check("min", o.min, o.min <= o.max, f"min must not exceed max ({o.max}).")
    _check("max_concurrency", o.max_concurrency,
           isinstance(o.max_concurrency, int) and o.max_concurrency >= 1, "use an integer >= 1.")
    _check("idle_shutdown_after", o.idle_shutdown_after,
           o.idle_shutdown_after is None or o.idle_shutdown_after > 0,
           "use seconds > 0, or None to never idle down.")
    _check("boot_timeout", o.boot_timeout, o.boot_timeout > 0, "use seconds > 0.")
    _check("timeout", o.timeout, o.timeout is None or o.timeout > 0,
           "use seconds > 0, or None for no limit.")
    _check("heartbeat_interval", o.heartbeat_interval, o.heartbeat_interval > 0,
           "use seconds > 0.")
    _check("parent_timeout", o.parent_timeout, o.parent_timeout > o.heartbeat_interval,
           "it must exceed heartbeat_interval.")


class Pool(concurrent.futures.Executor):
    """An elastic pool of runners (see the module docstring for every option).

    Examples
    --------
    >>> with Pool(max=4, max_concurrency=2) as pool:          # doctest: +SKIP
    ...     squares = list(pool.map(lambda x: x * x, range(10)))
    """

    def __init__(
        self,
        name: str | None = None,
        backend: Backend | str | None = None,
        *,
        min: int = 0,
        max: int = 1,
        max_concurrency: int = 1,
        idle_shutdown_after: float | None = 300.0,
        boot_timeout: float = 60.0,
        timeout: float | None = None,
        single_use: bool = False,
        spec: RunnerSpec | None = None,
        heartbeat_interval: float = 2.0,
        parent_timeout: float = 10.0,
        interrupt_grace: float = 5.0,
    ) -> None:
        options = PoolOptions(min=min, max=max, max_concurrency=max_concurrency,
                              idle_shutdown_after=idle_shutdown_after,
                              boot_timeout=boot_timeout, timeout=timeout, single_use=single_use,
                              heartbeat_interval=heartbeat_interval,
                              parent_timeout=parent_timeout, interrupt_grace=interrupt_grace)
        validate(options)
        with _registry_lock:
            if name is None:
                name = f"pool-{next(_names)}"
                while name in _registry:
                    name = f"pool-{next(_names)}"
            elif name in _registry and not _registry[name].closed:
                raise ConfigError(
                    f"A pool named {name!r} already exists. Use get_pool({name!r}), shut it "
                    "down first, or pick another name.")
            self.name = name
            self._owns_backend = not isinstance(backend, Backend)
            self.backend = make_backend(backend)
            self.spec = spec or RunnerSpec()
            #: what the last cell shipped, served from the runner's cache and got back
            #: (names -> bytes), shown by ``%flame status``
            self.last_transfer: dict[str, dict[str, int]] | None = None
            self._core = PoolCore(name, self.backend, self.spec, options, kernel_id())
            _registry[name] = self
            global _atexit_registered
            if not _atexit_registered:  # scripts too: no runner (or pod) outlives the process
                _register_exit_hook()
                _atexit_registered = True

    # -- properties --------------------------------------------------------------------------
    @property
    def options(self) -> PoolOptions:
        return self._core.options

    @property
    def closed(self) -> bool:
        return self._core.closed

    def start(self) -> Pool:
        """Start the pool now (boots ``min`` runners) instead of at first use."""
        _loop.run_sync(self._core.ensure_started())
        return self

    def resize(self, *, min: int | None = None, max: int | None = None,
               max_concurrency: int | None = None,
               idle_shutdown_after: float | None | object = ...,
               timeout: float | None | object = ...,
               boot_timeout: float | None = None, single_use: bool | None = None) -> None:
        """Change limits at runtime; running work is never interrupted."""
        new = PoolOptions(**vars(self.options))
        changes: dict[str, Any] = {}
        for key, value in (("min", min), ("max", max), ("max_concurrency", max_concurrency),
                           ("boot_timeout", boot_timeout), ("single_use", single_use)):
            if value is not None:
                changes[key] = value
        if idle_shutdown_after is not ...:
            changes["idle_shutdown_after"] = idle_shutdown_after
        if timeout is not ...:
            changes["timeout"] = timeout
        for key, value in changes.items():
            setattr(new, key, value)
        validate(new)
        _loop.run_sync(self._core.resize(**changes))

    # -- Executor ----------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a runner; returns a future of its result.

        The function and its arguments are serialized now, in the caller's thread, so a value
        that cannot travel fails here with :class:`~jupyter_flame.errors.SerializationError`.
        """
        # Cancelling this future cancels the task on the flame loop, which interrupts the
        # function on its runner.
        return _loop.submit(self._call(self._pack_call(fn, args, kwargs)))

    def _pack_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Packed:
        if self.closed:
            raise RuntimeError(f"cannot schedule new futures after pool '{self.name}' shut down")
        packed: Packed = _shipping().pack((fn, args, kwargs), digest=False)  # never cached
        return packed

    async def _call(self, packed: Any) -> Any:

        def make(link: RunnerLink, task: int) -> Call:
            return Call(task, packed)

        link, done = await self._core.run(make, None, self.options.timeout)
        return _call_result(done, link)

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on a runner and return its result (FLAME's ``call``).

        With a runner free and nothing queued, the calling thread sends the call and reads
        the reply itself (see :mod:`jupyter_flame.pool._direct`); otherwise it waits its turn.
        """
        packed = self._pack_call(fn, args, kwargs)
        direct = try_call(self._core, packed)
        if direct is not None:
            return _call_result(direct[1], direct[0])
        fut = _loop.submit(self._call(packed))
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop every runner of the pool and release its resources. Idempotent.

        Work still queued or running fails with ``FlameError`` whatever ``cancel_futures``
        says (the runners it would need are gone).
        """
        fut = _loop.submit(self._shutdown())
        if wait:
            fut.result(60)

    async def _shutdown(self) -> None:
        await self._core.shutdown()
        if self._owns_backend:
            await self.backend.close()
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]

    # -- display -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from jupyter_flame.notebook.status import pool_status

        return _loop.run_sync(_as_coro(lambda: pool_status(self)))

    def __repr__(self) -> str:
        o = self.options
        state = "shut down" if self.closed else f"{len(self._core.slots)} runner(s)"
        return (f"<Pool {self.name!r} backend={self.backend.name} min={o.min} max={o.max} "
                f"max_concurrency={o.max_concurrency} {state}>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from jupyter_flame.notebook.status import render_text

        p.text(render_text([self.status()]))

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(wait=True)


async def _as_coro(fn: Callable[[], Any]) -> Any:
    return fn()


def _shipping() -> Any:
    """:mod:`jupyter_flame.values.shipping`, imported on first use (it loads cloudpickle, which
    ``%load_ext`` need not pay for)."""
    global _shipping_module
    if _shipping_module is None:
        from jupyter_flame.values import shipping

        _shipping_module = shipping
    return _shipping_module


_shipping_module: Any = None


def _call_result(done: Done, link: RunnerLink) -> Any:
    if done.ok:
        return _shipping().unpack(done.value) if done.value is not None else None
    assert done.error is not None
    raise_remote(rebuild_error(done.error, pool=link.pool, runner=link.id))


def get_pool(name: str) -> Pool:
    """The live pool called ``name``."""
    with _registry_lock:
        pool = _registry.get(name)
    if pool is None or pool.closed:
        known = ", ".join(sorted(_registry)) or "none"
        raise FlameError(f"No pool named {name!r} (pools: {known}). Create it with "
                         f"%flame pool {name} or Pool({name!r}).")
    return pool


def all_pools() -> list[Pool]:
    with _registry_lock:
        return [p for p in _registry.values() if not p.closed]


def shutdown_all(timeout: float = 30.0) -> None:
    """Shut down every pool of this process (called at exit)."""
    pools = all_pools()
    if not pools:
        return
    futs = [_loop.submit(p._shutdown()) for p in pools]
    concurrent.futures.wait(futs, timeout=timeout)
