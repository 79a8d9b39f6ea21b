"""``Pool``: an elastic group of runners, usable as a ``concurrent.futures.Executor``.

Every option is a traitlets trait (see :mod:`jupyter_flame.config`): ``c.Pool.max = 4`` in
``ipython_config.py`` (or ``--Pool.max=4``, or ``%config Pool.max = 4``) sets the default of every
pool of that kernel, the magic's included; a keyword in code wins. The options and their
defaults are listed in docs/configuration.md (generated from the traits below). Seconds
everywhere. The limits (``min``, ``max``, ``max_concurrency``, ``idle_shutdown_after``,
``boot_timeout``, ``timeout``, ``single_use``) change at runtime, by :meth:`Pool.resize` or by
assigning the trait; the others are fixed once the pool exists.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Float, Instance, Int, TraitError, Unicode, Union, observe, validate
from typing_extensions import Unpack

from jupyter_flame.backends.base import Backend, RunnerSpec
from jupyter_flame.backends.registry import make_backend
from jupyter_flame.channel.protocol import Call, Done, Packed
from jupyter_flame.config import FlameConfigurable
from jupyter_flame.errors import ConfigError
from jupyter_flame.pool import loop as _loop
from jupyter_flame.pool._direct import try_call
from jupyter_flame.pool.core import MessageFactory, PoolCore, PoolOptions
from jupyter_flame.pool.keywords import PoolKeywords
from jupyter_flame.pool.limits import validate_options
from jupyter_flame.pool.link import OutputCallback, RunnerLink
from jupyter_flame.pool.registry import (
    all_pools,
    default_backend,
    get_pool,
    kernel_id,
    register,
    shutdown_all,
    unregister,
)
from jupyter_flame.pool.status import PoolStatus, render_text, snapshot
from jupyter_flame.values.remote import raise_remote, rebuild_error

__all__ = ["Pool", "PoolKeywords", "all_pools", "default_backend", "get_pool", "kernel_id",
           "shutdown_all"]

#: options that change at runtime (``resize``); the others are fixed once the pool exists
LIMITS = ("min", "max", "max_concurrency", "idle_shutdown_after", "boot_timeout", "timeout",
          "single_use")
_OPTIONS = LIMITS + ("heartbeat_interval", "heartbeat_timeout", "parent_timeout",
                     "interrupt_grace", "encrypt", "max_frame")
_FIXED = ("name", "backend", "spec", *_OPTIONS[len(LIMITS):])


def _fixed_error(name: str) -> ConfigError:
    return ConfigError(f"Pool.{name} is fixed once the pool exists; make a new Pool (shut this "
                       "one down first) to change it.")


class Pool(FlameConfigurable, concurrent.futures.Executor):
    """An elastic group of runners: a ``concurrent.futures.Executor`` plus ``call``.

    ``Pool(name=None, backend=None, *, min=0, max=1, max_concurrency=1, ...)``; every option is
    a configurable trait (``c.Pool.<option>``), documented below and in docs/configuration.md.
    """

    name = Unicode(None, allow_none=True, help=(
        "The pool's name (%flame status shows it; %%flame --pool NAME uses it). None: a "
        "generated pool-N.")).tag(config=True)
    backend = Union([Instance(Backend), Unicode()], default_value=None, allow_none=True, help=(
        "Where runners run: the name of a jupyter_flame.backends entry point ('local', "
        "'kubernetes', ...), a Backend instance, or None: kubernetes inside a pod (POD_NAME "
        "set and a cluster reachable), else local subprocesses.")).tag(config=True)
    min = Int(0, help="Runners kept alive even when idle (booted when the pool starts)."
              ).tag(config=True)
    max = Int(1, help="Most runners at once.").tag(config=True)
    max_concurrency = Int(1, help="Tasks one runner runs at once.").tag(config=True)
    idle_shutdown_after = Float(300.0, allow_none=True, help=(
        "Seconds a runner may sit idle before it shuts down (never below min). None: never."
    )).tag(config=True)
    boot_timeout = Float(60.0, help=(
        "Seconds a runner may take from boot request to connected before its boot fails."
    )).tag(config=True)
    timeout = Float(None, allow_none=True, help=(
        "Most seconds one task may take, queueing included. None: no limit.")).tag(config=True)
    single_use = Bool(False, help="Each runner runs one task, then exits.").tag(config=True)
    spec = Instance(RunnerSpec, allow_none=True, help=(
        "The runner's shape (GPUs, CPU, memory, image, placement, env). None: the default "
        "runner.")).tag(config=True)
    heartbeat_interval = Float(2.0, help="Seconds between the kernel's pings of each runner."
                               ).tag(config=True)
    heartbeat_timeout = Float(30.0, allow_none=True, help=(
        "A runner the kernel hears nothing from for this many seconds (no reply to pings, no "
        "output: stopped, hung, cut off by the network, or a cell holding the GIL in C code) "
        "is lost: its tasks fail with RunnerLostError and it is replaced. None: never."
    )).tag(config=True)
    parent_timeout = Float(10.0, help=(
        "A runner that hears nothing from its kernel this many seconds shuts itself down "
        "(must exceed heartbeat_interval).")).tag(config=True)
    interrupt_grace = Float(5.0, help=(
        "After an interrupt, seconds a runner may take to stop the task before it is killed "
        "and replaced.")).tag(config=True)

    encrypt = Bool(None, allow_none=True, help=(
        "Encrypt every frame between the kernel and its runners (AES-256-GCM, keys per "
        "connection), not only authenticate it. None: the backend decides: on for kubernetes "
        "(frames cross the pod network), off for local (loopback between processes of one "
        "user; frames stay authenticated).")).tag(config=True)

    max_frame = Int(16 * 1024**3, help=(
        "Largest message between the kernel and a runner, in bytes: what one cell ships (or "
        "one call's arguments), and what it sends back. Larger values fail before they are "
        "sent, naming the variables. Both ends enforce it.")).tag(config=True)

    _core: PoolCore | None = None
    _syncing = False

    def __init__(self, name: str | None = None, backend: Backend | str | None = None,
                 **options: Unpack[PoolKeywords]) -> None:
        explicit: dict[str, Any] = dict(options)
        if name is not None:
            explicit["name"] = name
        if backend is not None:
            explicit["backend"] = backend
        super().__init__(**explicit)
        limits = PoolOptions(**{key: getattr(self, key) for key in _OPTIONS})
        validate_options(limits, self.option_source)
        self.name = register(self, self.name)
        try:
            self._owns_backend = not isinstance(self.backend, Backend)
            self.backend = make_backend(self.backend, default_backend())
        except BaseException:
            unregister(self)
            raise
        if self.spec is None:
            self.spec = RunnerSpec()
        #: what the last cell shipped, served from the runner's cache and got back
        #: (names -> bytes), shown by ``%flame status``
        self.last_transfer: dict[str, dict[str, int]] | None = None
        self._core = PoolCore(self.name, self.backend, self.spec, limits, kernel_id())

    @validate(*_FIXED)
    def _fixed_once_made(self, proposal: Any) -> Any:
        if self._core is not None and not self._syncing:
            raise _fixed_error(proposal.trait.name)
        value = proposal.value
        if proposal.trait.name == "name" and isinstance(value, str) and (
                not value.strip() or value.strip() != value):
            raise ConfigError(f"Pool(name={value!r}) is not a pool name: use a non-empty name "
                              "without surrounding spaces, or name=None for a generated one.")
        return value

    @observe(*_FIXED)
    def _fixed_assigned(self, change: Any) -> None:
        # traitlets skips @validate for None on an allow_none trait: undo it here
        if self._core is not None and not self._syncing:
            self._set_quietly({change["name"]: change["old"]})
            raise _fixed_error(change["name"])

    @observe(*LIMITS)
    def _limit_assigned(self, change: Any) -> None:
        """``pool.max = 8`` resizes the pool, like ``pool.resize(max=8)``."""
        if self._core is None or self._syncing:
            return
        try:
            self.resize(**{change["name"]: change["new"]})
        except BaseException:
            self._set_quietly({change["name"]: change["old"]})
            raise

    def _set_quietly(self, values: dict[str, Any]) -> None:
        self._syncing = True
        try:
            for key, value in values.items():
                setattr(self, key, value)
        finally:
            self._syncing = False

    @property
    def _live(self) -> PoolCore:
        assert self._core is not None
        return self._core

    # -- properties --------------------------------------------------------------------------
    @property
    def options(self) -> PoolOptions:
        return self._live.options

    @property
    def closed(self) -> bool:
        return self._live.closed

    def start(self) -> Pool:
        """Start the pool now (boots ``min`` runners) instead of at first use."""
        _loop.run_sync(self._live.ensure_started())
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
            trait = self.traits()[key]
            try:
                value = trait._validate(self, value)
            except TraitError as exc:
                raise ConfigError(f"Pool option {key}={value!r} is invalid: expected "
                                  f"{trait.info()}.") from exc
            changes[key] = value
            setattr(new, key, value)
        validate_options(new)
        _loop.run_sync(self._live.resize(**changes))
        self._set_quietly(changes)

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
        shipping = _shipping()
        packed: Packed = shipping.pack((fn, args, kwargs), digest=False)  # never cached
        shipping.check_frame_limit({f"the arguments of {getattr(fn, '__name__', 'the call')}":
                                    packed.nbytes}, self.options.max_frame, "This call sends")
        return packed

    async def _call(self, packed: Any) -> Any:

        def make(link: RunnerLink, task: int) -> Call:
            return Call(task, packed)

        link, done = await self._live.run(make, None, self.options.timeout)
        return _call_result(done, link)

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on a runner and return its result (FLAME's ``call``).

        With a runner free and nothing queued, the calling thread sends the call and reads
        the reply itself (see :mod:`jupyter_flame.pool._direct`); otherwise it waits its turn.
        """
        packed = self._pack_call(fn, args, kwargs)
        direct = try_call(self._live, packed)
        if direct is not None:
            return _call_result(direct[1], direct[0])
        fut = _loop.submit(self._call(packed))
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise

    # -- the lane cells use ------------------------------------------------------------------
    def dispatch(self, make_message: MessageFactory, *,
                 on_output: OutputCallback | None = None, timeout: float | None = None,
                 on_checkout: Callable[[RunnerLink, int], None] | None = None,
                 on_sent: Callable[[], None] | None = None,
                 ) -> concurrent.futures.Future[tuple[RunnerLink, Done]]:
        """Check out a runner and run one task message on it (how ``%%flame`` cells travel).

        ``make_message(link, task)`` builds the message once a runner is checked out (so it can
        leave out values that runner already holds); ``on_output`` gets each streamed output on
        the flame loop; ``on_checkout(link, task)`` is told which runner took the task and
        ``on_sent()`` when the task is on the wire (both on the flame loop). The
        future resolves to the runner's link and its ``Done`` reply; cancelling it before
        checkout leaves the queue.
        """
        return _loop.submit(self._live.run(make_message, on_output, timeout,
                                           on_checkout=on_checkout, on_sent=on_sent))

    def waiting(self) -> int:
        """How many cells and calls wait for a runner now (any thread; a cheap read)."""
        core = self._core
        return len(core.waiters) if core is not None else 0

    def terminate_runner(self, runner_id: str) -> None:
        """Stop one runner now (the dashboard's Terminate); what it runs fails with
        ``RunnerLostError``; the pool refills to ``min``. Unknown ids raise ``KeyError``."""
        def find() -> Any:
            slot = self._live.slots.get(runner_id)
            if slot is None or slot.link is None:
                raise KeyError(f"Pool {self.name!r} has no live runner {runner_id!r}")
            return slot.link

        link = _loop.run_sync(_as_coro(find))
        self.kill_runner(link)

    def interrupt(self, link: RunnerLink, task: int) -> concurrent.futures.Future[Any]:
        """Interrupt ``task`` on its runner (Ctrl-C of a cell; the runner raises
        ``KeyboardInterrupt`` in the task)."""
        return _loop.submit(link.interrupt(task))

    def kill_runner(self, link: RunnerLink, timeout: float = 30.0) -> None:
        """Kill one runner now (a task ignored its interrupt); the pool refills to ``min``."""
        _loop.run_sync(self._live.kill(link), timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop every runner of the pool and release its resources. Idempotent.

        Work still queued or running fails with ``FlameError`` whatever ``cancel_futures``
        says (the runners it would need are gone).
        """
        fut = _loop.submit(self._shutdown())
        if wait:
            fut.result(60)

    async def _shutdown(self) -> None:
        await self._live.shutdown()
        if self._owns_backend:
            await self.backend.close()
        unregister(self)

    # -- display -----------------------------------------------------------------------------
    def status(self) -> PoolStatus:
        """A snapshot of the pool and its runners (plain data, JSON-ready)."""
        def take() -> PoolStatus:
            spec = self.spec.key() if self.spec is not None else ""
            return snapshot(self._live, name=str(self.name), backend=self.backend.name,
                            spec=spec or "default", last_transfer=self.last_transfer)

        if _loop.in_loop_thread():  # a widget refreshing on the flame loop
            return take()
        result: PoolStatus = _loop.run_sync(_as_coro(take))
        return result

    def __repr__(self) -> str:
        if self._core is None:
            return "<Pool (not made)>"
        o = self.options
        state = "shut down" if self.closed else f"{len(self._live.slots)} runner(s)"
        return (f"<Pool {self.name!r} backend={self.backend.name} min={o.min} max={o.max} "
                f"max_concurrency={o.max_concurrency} {state}>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """A live dashboard where widgets render (after ``%load_ext jupyter_flame``); a
        table as ``text/html`` and the text dashboard elsewhere."""
        from jupyter_flame.pool.registry import display_hook
        from jupyter_flame.pool.status_html import render_html

        if self._core is None:
            return {"text/plain": repr(self)}
        hook = display_hook()
        bundle = hook(self) if hook is not None else None
        if bundle:
            return dict(bundle)
        st = [self.status()]
        return {"text/plain": render_text(st), "text/html": render_html(st)}

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
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
