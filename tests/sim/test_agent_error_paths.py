"""Error paths of the node agent and ``sim down``: failed status writes, QoS, refused
pods, processes reaped early, stopping a process that already exited, the test marker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame.sim import cli
from jupyter_flame.sim.agent.agent import Agent
from jupyter_flame.sim.agent.api import ApiException
from jupyter_flame.sim.agent.images import ImageStore
from jupyter_flame.sim.agent.kubelet import EXTERNAL_ANNOTATION, Kubelet
from jupyter_flame.sim.agent.node import NodeConfig
from jupyter_flame.sim.agent.podenv import TEST_SESSION_KEY, build_env
from jupyter_flame.sim.agent.podstatus import PodRun, pod_status, qos_class
from jupyter_flame.sim.agent.process import ProcessTable
from jupyter_flame.sim.apiserver.validation import _qos

pytestmark = pytest.mark.sim


class FakeApi:
    """What the agent calls; ``fail`` status writes raise first (an ApiException or not)."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.fail: list[Exception] = []

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.statuses.append((name, status))

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        pass

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        pass

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        pass


def pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", **meta},
        "spec": {
            "nodeName": "n0",
            "containers": [{"name": "c", "image": "jupyter-flame/notebook:local", "command": ["true"]}],
        },
        "status": {},
    }


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Agent, FakeApi]]:
    api = FakeApi()
    a = Agent(api, [NodeConfig("n0", gpus=1)], tmp_path, ImageStore(), scheduler=False)  # type: ignore[arg-type]
    yield a, api
    a.procs.kill_all(0.1)
    a.record.close(0.1)


@pytest.mark.parametrize(
    "error", [ApiException(status=500, reason="boom"), ConnectionError("server gone")]
)
def test_failed_status_write_is_retried(agent: Any, error: Exception) -> None:
    a, api = agent
    a.kubelet.sync(pod("nb", annotations={EXTERNAL_ANNOTATION: "true"}))
    api.fail.append(error)
    a._flush()
    assert api.statuses == []
    a._flush()  # the next pass sends it
    assert [name for name, _ in api.statuses] == ["nb"]
    assert api.statuses[0][1]["phase"] == "Running"
    a._flush()  # and once sent, not again
    assert len(api.statuses) == 1


def test_status_of_a_deleted_pod_is_not_retried(agent: Any) -> None:
    a, api = agent
    a.kubelet.sync(pod("gone", annotations={EXTERNAL_ANNOTATION: "true"}))
    api.fail.append(ApiException(status=404, reason="Not Found"))
    a._flush()
    a._flush()
    assert api.statuses == []


def test_qos_counts_init_containers_like_the_api_server() -> None:
    lim = {"cpu": "1", "memory": "1Gi"}
    specs: list[dict[str, Any]] = [
        {"containers": [{"resources": {"limits": lim}}], "initContainers": [{}]},
        {"containers": [{}], "initContainers": [{"resources": {"requests": lim}}]},
        {"containers": [{"resources": {"limits": lim}}],
         "initContainers": [{"resources": {"limits": lim}}]},
        {"containers": [{}], "initContainers": [{}]},
    ]
    got = [qos_class({"spec": spec}) for spec in specs]
    assert got == ["Burstable", "Burstable", "Guaranteed", "BestEffort"]
    assert got == [_qos(spec) for spec in specs]


def test_pod_status_keeps_the_servers_qos_class() -> None:
    p = pod("q")
    run = PodRun(uid="u", namespace="default", name="q", node="n0", pod=p)
    assert pod_status(run)["qosClass"] == "BestEffort"  # missing: computed
    p["status"]["qosClass"] = "Guaranteed"
    assert pod_status(run)["qosClass"] == "Guaranteed"  # set by the server: kept


def test_pod_refused_at_admission_gets_no_ip(tmp_path: Path) -> None:
    procs = ProcessTable(tmp_path, lambda key, code: None)
    k = Kubelet(
        {"n0": NodeConfig("n0", gpus=1)}, tmp_path, FakeApi(), lambda *a, **kw: None,  # type: ignore[arg-type]
        ImageStore(), lambda d, fn: None, procs,
    )
    try:
        p = pod("greedy")
        p["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
        k.sync(p)
        (_, status), *_ = k.flush()
        assert status["phase"] == "Failed"
        assert status["podIP"] is None and status["podIPs"] == []
        assert k.ips.get("uid-greedy") is None
        k.sync(pod("fits"))  # the next pod gets the first address
        assert k.runs["uid-fits"].ip == "127.0.0.2"
    finally:
        procs.kill_all(0.1)


def test_reaper_survives_a_process_reaped_before_it_watched_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[tuple[Any, int]] = []
    done = threading.Event()

    def on_exit(key: Any, code: int) -> None:
        exits.append((key, code))
        done.set()

    def gone(pid: int) -> int:
        raise ProcessLookupError(pid)

    procs = ProcessTable(tmp_path, on_exit)
    monkeypatch.setattr(os, "pidfd_open", gone)
    procs.spawn("a", [sys.executable, "-c", "raise SystemExit(3)"], {}, None, tmp_path / "a.log")
    assert done.wait(10), "the exit was not reported"
    assert exits == [("a", 3)]
    monkeypatch.undo()
    done.clear()
    procs.spawn("b", [sys.executable, "-c", "pass"], {}, None, tmp_path / "b.log")
    assert done.wait(10), "the reaper thread died"
    assert exits[-1] == ("b", 0)


def test_stop_does_not_kill_the_group_of_a_process_that_exited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        record = cli._record(proc.pid)
        killed: list[tuple[int, int]] = []
        real_killpg: Callable[[int, int], None] = os.killpg
        monkeypatch.setattr(os, "killpg", lambda pid, sig: killed.append((pid, sig)))
        cli._stop(record, 5.0)  # SIGTERM ends it well within the timeout (and reaps it)
        assert not cli._alive(record)
        assert killed == []
    finally:
        monkeypatch.undo()
        if proc.poll() is None:
            real_killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_agent_passes_the_test_session_marker_through(monkeypatch: pytest.MonkeyPatch) -> None:
    container = {"name": "c"}
    meta = {"metadata": {"name": "p", "namespace": "ns"}}

    def env() -> dict[str, str]:
        return build_env(container, meta, pod_ip="", host_ip="", lookup=lambda *a: None)

    monkeypatch.setenv(TEST_SESSION_KEY, "abc")
    assert env()[TEST_SESSION_KEY] == "abc"
    monkeypatch.delenv(TEST_SESSION_KEY)
    assert TEST_SESSION_KEY not in env()
