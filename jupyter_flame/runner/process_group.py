"""The runner's process group: it leads one, and on exit stops the children its cells started.

Members are found with psutil (every process whose process group is ours, zombies excluded),
so this works wherever psutil does, not only with a Linux ``/proc``.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

__all__ = ["become_group_leader", "group_members", "kill_children"]

CHILD_GRACE = 1.0
"""Seconds between SIGTERM and SIGKILL for the runner's children."""


def become_group_leader() -> None:
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    except OSError:
        pass  # a session leader (start_new_session=True) already leads its group


def group_members(pgid: int, exclude: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, ``exclude`` left out."""
    members = []
    for proc in psutil.process_iter(["status"]):
        pid = proc.pid
        if pid == exclude or proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except OSError:  # gone meanwhile
            continue
    return members


def kill_children(grace: float = CHILD_GRACE) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, the other processes of our own group."""
    me = os.getpid()
    if os.getpgrp() != me:
        return  # not our group: never signal anyone else's processes
    members = group_members(me, me)
    sig = signal.SIGTERM
    deadline = time.monotonic() + grace
    while members:
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGKILL:
            return
        while members and time.monotonic() < deadline:
            time.sleep(0.05)
            members = group_members(me, me)
        sig = signal.SIGKILL
