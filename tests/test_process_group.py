"""The runner's process group: members found with psutil, children stopped on exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil

from jupyter_flame.runner.process_group import group_members

LEADER = textwrap.dedent("""
    import os, subprocess, sys, time
    from jupyter_flame.runner.process_group import become_group_leader, kill_children
    become_group_leader()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    sys.stdin.readline()          # the test looks at the group now
    kill_children(grace=0.5)
    print("done", child.poll() is not None or child.wait(5) is not None, flush=True)
""")


def test_group_members_and_kill_children() -> None:
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert leader.stdout is not None and leader.stdin is not None
        child = int(leader.stdout.readline())
        assert group_members(leader.pid, leader.pid) == [child]
        assert sorted(group_members(leader.pid, -1)) == sorted([leader.pid, child])
        leader.stdin.write("\n")
        leader.stdin.flush()
        assert leader.stdout.readline().split() == ["done", "True"]
        deadline = time.monotonic() + 5
        while psutil.pid_exists(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        leader.kill()
        leader.wait()


def test_a_group_of_nobody_has_no_members() -> None:
    assert group_members(2**22 + 12345, -1) == []
