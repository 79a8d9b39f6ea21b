"""Table-driven tests of the pool's pure scaling policy."""

from __future__ import annotations

import pytest

from jupyter_flame.pool.scaling import RunnerLoad, choose_runner, may_retire, runners_to_boot

R = RunnerLoad


@pytest.mark.parametrize(
    ("runners", "max_concurrency", "expected"),
    [
        ([], 1, None),
        ([R("a", 0)], 1, "a"),
        ([R("a", 1)], 1, None),
        ([R("a", 1), R("b", 0)], 1, "b"),
        ([R("a", 2), R("b", 1), R("c", 1)], 3, "b"),  # least loaded, oldest on ties
        ([R("a", 0, accepting=False), R("b", 1)], 2, "b"),  # retiring runners take no work
        ([R("a", 3), R("b", 3)], 3, None),
        ([R("a", 0), R("b", 0)], 1, "a"),
    ],
)
def test_choose_runner(
    runners: list[RunnerLoad], max_concurrency: int, expected: str | None
) -> None:
    assert choose_runner(runners, max_concurrency) == expected


# waiters, live, booting, free_slots, min, max, max_concurrency -> boots
BOOT_TABLE = [
    # nothing to do
    (0, 0, 0, 0, 0, 4, 1, 0),
    # min kept warm
    (0, 0, 0, 0, 2, 4, 1, 2),
    (0, 1, 0, 1, 2, 4, 1, 1),
    (0, 1, 1, 1, 2, 4, 1, 0),
    # one runner per waiter at max_concurrency=1, up to max
    (1, 0, 0, 0, 0, 4, 1, 1),
    (3, 0, 0, 0, 0, 4, 1, 3),
    (9, 0, 0, 0, 0, 4, 1, 4),
    # one runner per max_concurrency waiters
    (3, 0, 0, 0, 0, 10, 2, 2),
    (4, 0, 0, 0, 0, 10, 2, 2),
    (5, 0, 0, 0, 0, 10, 2, 3),
    # booting runners already cover waiters
    (2, 0, 1, 0, 0, 10, 2, 0),
    (3, 0, 1, 0, 0, 10, 2, 1),
    # free slots on live runners cover waiters
    (1, 1, 0, 1, 0, 4, 2, 0),
    (2, 1, 0, 1, 0, 4, 1, 1),
    # at max: never more
    (5, 2, 0, 0, 0, 2, 1, 0),
    (5, 1, 1, 0, 0, 2, 1, 0),
    # max below live (after a resize): no boots
    (1, 3, 0, 0, 0, 2, 1, 0),
]


@pytest.mark.parametrize(
    ("waiters", "live", "booting", "free", "min_", "max_", "mc", "expected"), BOOT_TABLE
)
def test_runners_to_boot(
    waiters: int, live: int, booting: int, free: int, min_: int, max_: int, mc: int, expected: int
) -> None:
    assert (
        runners_to_boot(
            waiters=waiters,
            live=live,
            booting=booting,
            free_slots=free,
            min=min_,
            max=max_,
            max_concurrency=mc,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("live", "min_", "load", "expected"),
    [(1, 0, 0, True), (1, 1, 0, False), (2, 1, 0, True), (2, 0, 1, False), (0, 0, 0, False)],
)
def test_may_retire(live: int, min_: int, load: int, expected: bool) -> None:
    assert may_retire(live=live, min=min_, load=load) is expected
