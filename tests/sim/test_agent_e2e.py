"""The node agents against the stand-in API server, seen only through the official
client and kubectl, as a user of a real cluster would see them."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

try:  # tests/sim may or may not become a package
    from .agent_fixtures import SimCluster, gone, phase, python_pod, sim_cluster
except ImportError:
    from agent_fixtures import SimCluster, gone, phase, python_pod, sim_cluster  # type: ignore[no-redef]

pytestmark = pytest.mark.sim
__all__ = ["sim_cluster"]

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def state(pod: dict[str, Any], container: int = 0) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][container]["state"])


def waiting_reason(reason: str) -> Any:
    def check(pod: dict[str, Any] | None) -> bool:
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
        return any(
            (s.get("state") or {}).get("waiting", {}).get("reason") == reason for s in statuses
        )

    return check


def test_pod_succeeds_with_logs_env_and_ip(sim_cluster: SimCluster) -> None:
    code = "import os; print('hello', os.environ['MY_IP'], os.environ['MY_NODE'], os.environ['GREETING'])"
    env = [
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "value": "hi-$(MY_NODE)"},
    ]
    sim_cluster.create_pod(python_pod("hello", code, container={"env": env}))
    pod = sim_cluster.wait_pod("hello", phase("Succeeded", "Failed"))
    assert pod is not None
    status = pod["status"]
    assert status["phase"] == "Succeeded"
    assert status["podIP"].startswith("127.") and status["podIP"] != "127.0.0.1"
    assert status["podIPs"] == [{"ip": status["podIP"]}]
    term = state(pod)["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert pod["spec"]["nodeName"] == "flame-sim-node-0"
    logs = sim_cluster.kubectl("logs", "hello").stdout
    assert logs == f"hello {status['podIP']} flame-sim-node-0 hi-flame-sim-node-0\n"
    sim_cluster.wait_event("hello", "Started", "Started container main")
    reasons = [e["reason"] for e in sim_cluster.events("hello")]
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= set(reasons)
    scheduled = sim_cluster.wait_event("hello", "Scheduled")
    assert scheduled["message"] == "Successfully assigned default/hello to flame-sim-node-0"
    assert scheduled["source"]["component"] == "default-scheduler"


def test_failing_container_fails_pod_with_exit_code(sim_cluster: SimCluster) -> None:
    sim_cluster.create_pod(python_pod("fails", "import sys; print('bad'); sys.exit(3)"))
    pod = sim_cluster.wait_pod("fails", phase("Succeeded", "Failed"))
    assert pod is not None and pod["status"]["phase"] == "Failed"
    term = state(pod)["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert sim_cluster.kubectl("logs", "fails").stdout == "bad\n"


def test_unschedulable_gpu_pod_reports_scheduler_message(sim_cluster: SimCluster) -> None:
    pod = python_pod(
        "too-big",
        "pass",
        container={"resources": {"limits": {"nvidia.com/gpu": "4"}}},
        tolerations=[GPU_TOLERATION],
    )
    sim_cluster.create_pod(pod)
    message = (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are "
        "available: 2 No preemption victims found for incoming pod."
    )
    event = sim_cluster.wait_event("too-big", "FailedScheduling")
    assert event["message"] == message and event["type"] == "Warning"
    assert event["source"]["component"] == "default-scheduler"
    got = sim_cluster.wait_pod("too-big", lambda p: bool(p and p["status"].get("conditions")))
    assert got is not None
    cond = got["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert cond["message"] == message and got["status"]["phase"] == "Pending"
    sim_cluster.core.delete_namespaced_pod("too-big", "default")
    sim_cluster.wait_pod("too-big", gone)


def test_untolerated_taint_and_selector_messages(sim_cluster: SimCluster) -> None:
    sim_cluster.create_pod(
        python_pod("picky", "pass", nodeSelector={"nvidia.com/gpu.product": "A100"})
    )
    event = sim_cluster.wait_event("picky", "FailedScheduling")
    assert event["message"].startswith(
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {nvidia.com/gpu: }."
    )
    sim_cluster.core.delete_namespaced_pod("picky", "default")


def test_unknown_image_goes_to_image_pull_backoff(sim_cluster: SimCluster) -> None:
    pod = python_pod("noimage", "pass", container={"image": "example.com/nope:1"})
    sim_cluster.create_pod(pod)
    got = sim_cluster.wait_pod("noimage", waiting_reason("ImagePullBackOff"), timeout=10)
    assert got is not None
    waiting = state(got)["waiting"]
    assert waiting["message"] == 'Back-off pulling image "example.com/nope:1"'
    assert got["status"]["phase"] == "Pending"
    sim_cluster.wait_event("noimage", "Failed", "Error: ImagePullBackOff")
    sim_cluster.wait_event("noimage", "BackOff", 'Back-off pulling image "example.com/nope:1"')
    failed = [e["message"] for e in sim_cluster.events("noimage") if e["reason"] == "Failed"]
    assert "Error: ErrImagePull" in failed
    assert any(m.startswith('Failed to pull image "example.com/nope:1"') for m in failed)
    sim_cluster.core.delete_namespaced_pod("noimage", "default")
    sim_cluster.wait_pod("noimage", gone)


def test_gpu_pods_get_exclusive_devices(sim_cluster: SimCluster) -> None:
    code = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(30)"
    for name in ("gpu-a", "gpu-b"):
        sim_cluster.create_pod(
            python_pod(
                name,
                code,
                container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
                tolerations=[GPU_TOLERATION],
            )
        )
    ids = []
    for name in ("gpu-a", "gpu-b"):
        pod = sim_cluster.wait_pod(name, phase("Running"))
        assert pod is not None and pod["spec"]["nodeName"] == "flame-sim-node-1"
        deadline = time.monotonic() + 10
        while not (out := sim_cluster.kubectl("logs", name).stdout):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ids.append(out.strip())
    assert sorted(ids) == ["0", "1"]
    # The node is full: a third GPU pod waits.
    sim_cluster.create_pod(
        python_pod(
            "gpu-c",
            code,
            container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
            tolerations=[GPU_TOLERATION],
        )
    )
    sim_cluster.wait_event("gpu-c", "FailedScheduling")
    # Freed devices go to the waiting pod.
    sim_cluster.core.delete_namespaced_pod("gpu-a", "default", grace_period_seconds=1)
    pod = sim_cluster.wait_pod("gpu-c", phase("Running"))
    for name in ("gpu-b", "gpu-c"):
        sim_cluster.core.delete_namespaced_pod(name, "default", grace_period_seconds=1)
    for name in ("gpu-a", "gpu-b", "gpu-c"):
        sim_cluster.wait_pod(name, gone)


def test_graceful_deletion_sends_sigterm_then_removes_pod(
    sim_cluster: SimCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "cleaned-up"
    code = (
        "import signal, sys, time, pathlib\n"
        "def bye(*a):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('SIGTERM')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    sim_cluster.create_pod(python_pod("graceful", code))
    sim_cluster.wait_pod("graceful", phase("Running"))
    deadline = time.monotonic() + 10
    while "ready" not in sim_cluster.kubectl("logs", "graceful").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    sim_cluster.core.delete_namespaced_pod("graceful", "default", grace_period_seconds=20)
    sim_cluster.wait_pod("graceful", gone, timeout=15)
    assert time.monotonic() - t0 < 5  # it exits on SIGTERM: no need to wait out the grace period
    assert marker.read_text() == "SIGTERM"
    assert sim_cluster.wait_event("graceful", "Killing")["message"] == "Stopping container main"


def test_sigkill_after_grace_period(sim_cluster: SimCluster) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('x', flush=True); time.sleep(60)"
    sim_cluster.create_pod(python_pod("stubborn", code))
    sim_cluster.wait_pod("stubborn", phase("Running"))
    time.sleep(0.3)
    t0 = time.monotonic()
    sim_cluster.core.delete_namespaced_pod("stubborn", "default", grace_period_seconds=1)
    sim_cluster.wait_pod("stubborn", gone, timeout=10)
    assert 0.9 < time.monotonic() - t0 < 5


def test_secret_key_ref_and_missing_secret(sim_cluster: SimCluster) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"token": base64.b64encode(b"s3cret").decode()},
    }
    sim_cluster.core.create_namespaced_secret("default", secret, _preload_content=False)
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]
    sim_cluster.create_pod(
        python_pod("uses-secret", "import os; print(os.environ['TOKEN'])", container={"env": env})
    )
    missing = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "token"}}}]
    sim_cluster.create_pod(python_pod("no-secret", "pass", container={"env": missing}))
    sim_cluster.wait_pod("uses-secret", phase("Succeeded"))
    assert sim_cluster.kubectl("logs", "uses-secret").stdout == "s3cret\n"
    pod = sim_cluster.wait_pod("no-secret", waiting_reason("CreateContainerConfigError"))
    assert pod is not None
    assert state(pod)["waiting"]["message"] == 'secret "nope" not found'
    sim_cluster.core.delete_namespaced_pod("no-secret", "default")


def test_init_containers_run_first_and_crash_loop(sim_cluster: SimCluster, tmp_path: Path) -> None:
    flag = tmp_path / "init-done"
    pod = python_pod("with-init", f"print(open({str(flag)!r}).read())")
    pod["spec"]["initContainers"] = [
        {
            "name": "setup",
            "image": "jupyter-flame/notebook:local",
            "command": ["python", "-c", f"open({str(flag)!r}, 'w').write('prepared')"],
        }
    ]
    sim_cluster.create_pod(pod)
    crash = python_pod("crashy", "import sys; sys.exit(1)", restartPolicy="OnFailure")
    sim_cluster.create_pod(crash)
    done = sim_cluster.wait_pod("with-init", phase("Succeeded", "Failed"))
    assert done is not None and done["status"]["phase"] == "Succeeded"
    assert (
        done["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    )
    assert sim_cluster.kubectl("logs", "with-init").stdout == "prepared\n"
    looping = sim_cluster.wait_pod("crashy", waiting_reason("CrashLoopBackOff"))
    assert looping is not None
    cs = looping["status"]["containerStatuses"][0]
    assert cs["restartCount"] >= 1 and cs["lastState"]["terminated"]["exitCode"] == 1
    assert looping["status"]["phase"] == "Running"
    assert (
        "back-off 10s restarting failed container=main pod=crashy_default"
        in cs["state"]["waiting"]["message"]
    )
    sim_cluster.wait_event("crashy", "BackOff")
    sim_cluster.core.delete_namespaced_pod("crashy", "default")
    sim_cluster.wait_pod("crashy", gone)


def test_fifty_pods_run_at_once(sim_cluster: SimCluster) -> None:
    names = [f"many-{i}" for i in range(50)]
    t0 = time.monotonic()
    for name in names:
        sim_cluster.create_pod(python_pod(name, "import time; time.sleep(60)"))
    deadline = time.monotonic() + 60
    while True:
        data = sim_cluster.kubectl(
            "get",
            "pods",
            "-l",
            "",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{'\\n'}{end}",
        ).stdout
        running = [
            line.split()[0]
            for line in data.splitlines()
            if line.endswith(" Running") and line.startswith("many-")
        ]
        if len(running) == 50:
            break
        assert time.monotonic() < deadline, f"only {len(running)} of 50 running"
        time.sleep(0.25)
    elapsed = time.monotonic() - t0
    print(f"50 pods running after {elapsed:.2f} s")
    ips = set()
    for name in names[:5]:
        ips.add(sim_cluster.get_pod(name)["status"]["podIP"])
    assert len(ips) == 5
    t1 = time.monotonic()
    for name in names:
        sim_cluster.core.delete_namespaced_pod(name, "default", _preload_content=False)
    for name in names:
        sim_cluster.wait_pod(name, gone, timeout=30)
    print(f"50 pods stopped (SIGTERM) and deleted after {time.monotonic() - t1:.2f} s")


def test_leftover_children_die_with_the_container(sim_cluster: SimCluster) -> None:
    code = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=False); "
        "print(p.pid, flush=True)"
    )
    sim_cluster.create_pod(python_pod("leaves-child", code))
    sim_cluster.wait_pod("leaves-child", phase("Succeeded"))
    child = int(sim_cluster.kubectl("logs", "leaves-child").stdout)
    deadline = time.monotonic() + 5
    while alive(child):
        assert time.monotonic() < deadline, "the orphaned child outlived its container"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
