"""The direct lane of ``Pool.call``: the calling thread checks a runner out, sends the task
and reads the reply itself, with the flame loop off the critical path (internal).

Through the loop, a call costs two extra thread wake-ups in the kernel (caller to loop to
send, loop to caller for the reply), and on a quiet machine each costs a couple of hundred
microseconds of cold caches. The direct lane is taken when a runner has a free slot right
now and nothing is queued (the common warm call); everything else (the first call, boots,
queueing, single-use runners, calls from the loop itself) goes through the loop as before.

While it waits, the calling thread holds the channel's read baton (:mod:`._baton`): it reads
every frame that arrives and hands those that are not its reply to the loop, in order. The
loop only hears about the call afterwards (``busy``/``idle`` events, the load's follow-up),
without the caller waiting for it: a call longer than 0.2 s shows as ``busy`` then ``idle``;
a shorter one is only counted, so a warm call wakes no other thread of the kernel.

Giving up behaves as on the loop: Ctrl-C or the pool's ``timeout`` interrupts the task on
its runner, which comes back to the pool once it answers, or is killed after
``interrupt_grace``; a lost runner raises :class:`~jupyter_flame.errors.RunnerLostError`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jupyter_flame.channel.protocol import Call, Done, Packed
from jupyter_flame.pool import loop as _loop

if TYPE_CHECKING:
    from jupyter_flame.pool.core import PoolCore
    from jupyter_flame.pool.link import RunnerLink

__all__ = ["try_call"]


_ANNOUNCE_AFTER = 0.2
"""Seconds after which a direct call shows as ``busy`` (shorter ones are only counted)."""


class _Lost(Exception):
    """The runner was lost while the caller waited."""


class _Expired(Exception):
    """The pool's ``timeout`` passed while the caller waited."""


def try_call(core: PoolCore, packed: Packed) -> tuple[RunnerLink, Done] | None:
    """Run one call on a runner that is free right now, from the calling thread.

    Returns ``None`` (nothing sent, nothing changed) when the lane does not apply; the caller
    then goes through the loop. Raises as the loop's path would.
    """
    options = core.options
    if (not core.started or core.closed or options.single_use or core.waiters
            or _loop.in_loop_thread()):
        return None
    link = core.take_now()
    if link is None:
        return None
    loop = link.baton.loop
    channel = link.channel
    timeout = options.timeout
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    announced = False  # the loop heard of the call (a short one it only counts afterwards)

    def check() -> None:
        nonlocal announced
        if not announced and time.monotonic() - started >= _ANNOUNCE_AFTER:
            announced = True
            loop.call_soon_threadsafe(core.backend.emit, link.handle, "busy")
        if channel.mid_frame:
            return  # the rest of the frame is on its way: hand-overs happen between frames
        if link.lost.done():
            raise _Lost
        if deadline is not None and time.monotonic() >= deadline:
            raise _Expired

    task = link.new_task_id()
    msg = Call(task, packed)
    try:
        if not link.baton.acquire(check):  # before sending: the reply must not reach the loop
            core.untake(link)  # another thread waits on this runner: queue up on the loop
            return None
    except BaseException as exc:
        _checkin(core, link)
        if isinstance(exc, _Lost):
            raise _lost_error(link, None) from None
        if isinstance(exc, _Expired):
            raise core.task_timeout(link, timeout) from None
        raise
    try:
        encoded = channel.encode(msg)
        if not channel.send_now(msg, encoded=encoded):  # large arguments, or a frame going out
            _loop.run_sync(channel.send(msg, encoded=encoded))
        reads = link.baton.reads(check, interval=0.2 if deadline is None else 0.05)
        while True:
            reply = channel.recv_blocking(reads)
            if isinstance(reply, Done) and reply.task == task:
                break
            link.baton.hand_to_loop(reply)
    except (_Expired, KeyboardInterrupt) as exc:
        if channel.closed:  # interrupted in the middle of a frame: the channel is unusable
            link.baton.release()
            _checkin(core, link)
            raise
        # The task runs on: let the loop interrupt it and take the runner back when it answers.
        loop.call_soon_threadsafe(_give_up, core, link, task)
        link.baton.release(to_loop=True)
        if isinstance(exc, _Expired):
            raise core.task_timeout(link, timeout) from None
        raise
    except BaseException as exc:  # the channel broke, the runner is gone, a frame failed
        link.baton.release()
        _checkin(core, link)
        raise _lost_error(link, None if isinstance(exc, _Lost) else exc) from None
    link.baton.release()
    if core.direct_checkin(link, reply) or announced:
        loop.call_soon_threadsafe(core.after_checkin, link)
    return link, reply


def _checkin(core: PoolCore, link: RunnerLink) -> None:
    """Check a runner in from the calling thread; the loop follows up (waiters, idle)."""
    core.count_checkin(link)
    link.baton.loop.call_soon_threadsafe(core.after_checkin, link)


def _give_up(core: PoolCore, link: RunnerLink, task: int) -> None:
    link.adopt(task)
    core.give_up(link, task)


def _lost_error(link: RunnerLink, exc: BaseException | None) -> BaseException:
    """The error the loop's path would raise for this lost runner (which, how it ended)."""
    return _loop.run_sync(link.lose(exc))
