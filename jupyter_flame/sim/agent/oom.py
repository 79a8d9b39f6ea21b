"""Memory limits, enforced as a container runtime's cgroup would (approximately).

A real node puts each container in a memory cgroup capped at ``resources.limits.memory``; the
kernel's OOM killer ends it the moment it goes over, and the kubelet reports the container
``terminated`` with reason ``OOMKilled`` and exit code 137. The stand-in has no cgroups of its
own to rely on (it must run unprivileged), so it samples the resident memory of each limited
container's process tree every :data:`INTERVAL` seconds (psutil) and SIGKILLs the group of one
that is over. Differences: a fast allocation can overshoot the limit for up to one interval,
and page cache does not count (it does in a cgroup).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psutil

from ..quantity import parse_quantity
from .podstatus import ContainerRun

INTERVAL = 0.2


def memory_limit(spec: dict[str, Any]) -> int | None:
    """The container's memory limit in bytes (None when it has none)."""
    limits = (spec.get("resources") or {}).get("limits") or {}
    value = limits.get("memory")
    return None if value is None else int(parse_quantity(value))


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 once gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def over_limit(containers: Iterable[ContainerRun]) -> list[ContainerRun]:
    """The live, limited containers whose process tree is over its memory limit."""
    out = []
    for c in containers:
        if c.proc is not None and c.memory_limit is not None and not c.oom_killed:
            if tree_rss(c.proc.pid) > c.memory_limit:
                out.append(c)
    return out
