"""The kubelet state machine with a fake API (no API server, no container processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame.sim.agent.images import ImageStore
from jupyter_flame.sim.agent.kubelet import EXTERNAL_ANNOTATION, Kubelet
from jupyter_flame.sim.agent.node import NodeConfig
from jupyter_flame.sim.agent.process import ProcessTable

pytestmark = pytest.mark.sim


class FakeApi:
    """Records the calls the kubelet makes."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str, str]] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append((namespace, name, uid))

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append((name, status))


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[Kubelet, FakeApi, list[tuple[str, str]]]]:
    api = FakeApi()
    events: list[tuple[str, str]] = []
    timers: list[tuple[float, Callable[[], None]]] = []

    def record(pod: dict[str, Any], type_: str, reason: str, message: str, **kw: Any) -> None:
        events.append((reason, message))

    procs = ProcessTable(tmp_path, lambda key, code: None)
    nodes = {"n0": NodeConfig("n0", gpus=1)}
    k = Kubelet(
        nodes, tmp_path, api, record, ImageStore(), lambda d, fn: timers.append((d, fn)), procs
    )  # type: ignore[arg-type]
    yield k, api, events
    procs.kill_all(0.1)


def pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", **meta},
        "spec": {
            "nodeName": "n0",
            "containers": [
                {"name": "c", "image": "jupyter-flame/notebook:local", "command": ["true"]}
            ],
        },
        "status": {},
    }


def test_external_pod_is_adopted_without_a_process(kubelet: Any) -> None:
    k, _, events = kubelet
    k.sync(pod("nb", annotations={EXTERNAL_ANNOTATION: "true"}))
    (run, status), *_ = k.flush()
    assert status["phase"] == "Running" and status["podIP"] == "127.0.0.2"
    assert status["containerStatuses"][0]["ready"] is True
    assert not run.alive() and events == []


def test_pod_seen_first_while_deleting_is_deleted_without_starting(kubelet: Any) -> None:
    k, api, events = kubelet
    k.sync(pod("old", deletionTimestamp="2026-01-01T00:00:00Z"))
    assert api.deleted == [("default", "old", "uid-old")]
    assert not k.runs and events == []


def test_too_many_gpus_fail_admission(kubelet: Any) -> None:
    k, _, events = kubelet
    p = pod("greedy")
    p["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
    k.sync(p)
    (_, status), *_ = k.flush()
    assert status["phase"] == "Failed"
    assert events[0][0] == "UnexpectedAdmissionError"
    assert "Requested: 2, Available: 1" in events[0][1]


def test_never_pull_policy_waits_with_err_image_never_pull(kubelet: Any) -> None:
    k, _, events = kubelet
    p = pod("never")
    p["spec"]["containers"][0].update(image="other:1", imagePullPolicy="Never")
    k.sync(p)
    (_, status), *_ = k.flush()
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImageNeverPull"
    assert events == [("ErrImageNeverPull", waiting["message"])]
