"""Pure scaling policy of a pool (no I/O, no clocks): which runner takes the next piece of work,
how many runners to boot, and whether an idle runner may retire.

FLAME's rules:

- checkout goes to the *least loaded* runner whose load is under ``max_concurrency`` (ties: the
  oldest, for warm caches);
- otherwise the caller waits in a FIFO queue, and the pool boots **one runner per
  ``max_concurrency`` waiters** not already covered by runners that are booting, up to ``max``;
- ``min`` runners are kept alive; a runner may retire when it is idle and the pool would keep at
  least ``min`` runners.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RunnerLoad", "choose_runner", "may_retire", "runners_to_boot"]


@dataclass(frozen=True)
class RunnerLoad:
    """A runner as the policy sees it: its id, in-flight work, and whether it takes work."""

    id: str
    load: int
    accepting: bool = True


def choose_runner(runners: Sequence[RunnerLoad], max_concurrency: int) -> str | None:
    """The id of the least-loaded accepting runner with a free slot (oldest first on ties)."""
    best: RunnerLoad | None = None
    for runner in runners:
        if not runner.accepting or runner.load >= max_concurrency:
            continue
        if best is None or runner.load < best.load:
            best = runner
    return best.id if best is not None else None


def runners_to_boot(
    *,
    waiters: int,
    live: int,
    booting: int,
    free_slots: int,
    min: int,
    max: int,
    max_concurrency: int,
) -> int:
    """How many runners to start now.

    Parameters
    ----------
    waiters:
        Callers queued for a runner.
    live:
        Runners connected (or connecting) that count toward ``max``, excluding ``booting``.
    booting:
        Runners requested from the backend that have not connected yet.
    free_slots:
        Unused slots on live, accepting runners.
    """
    total = live + booting
    room = max - total
    if room <= 0:
        return 0
    keep_min = min - total
    uncovered = waiters - free_slots - booting * max_concurrency
    demand = -(-uncovered // max_concurrency) if uncovered > 0 else 0
    return builtins.max(0, builtins.min(room, builtins.max(keep_min, demand)))


def may_retire(*, live: int, min: int, load: int) -> bool:
    """Whether an idle runner may shut down: it holds no work and ``min`` stays satisfied."""
    return load == 0 and live > min
