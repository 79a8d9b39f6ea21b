"""``jupyter flame sim up|down`` (run as ``python -m jupyter_flame.sim``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pid_alive

try:  # tests/sim may or may not become a package
    from .agent_fixtures import python_pod, session_members
except ImportError:
    from agent_fixtures import python_pod, session_members  # type: ignore[no-redef]

pytestmark = pytest.mark.sim

REPO = Path(__file__).resolve().parents[2]


def sim(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_flame.sim", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def client_for(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def our_sessions(d: Path) -> set[int]:
    state = json.loads((d / "sim.json").read_text())
    sids = {state["agent"]["pid"]}
    if state.get("apiserver"):
        sids.add(state["apiserver"]["pid"])
    records = d / "run" / "containers"
    sids |= {int(p.name) for p in records.iterdir()} if records.is_dir() else set()
    return sids


@pytest.fixture
def sim_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "sim"
    yield d
    if (d / "sim.json").exists():
        sim("down", "--dir", str(d), check=False)


def wait_phase(
    core: Any, name: str, phases: tuple[str, ...], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = json.loads(core.read_namespaced_pod(name, "default", _preload_content=False).data)
        if pod["status"].get("phase") in phases:
            return dict(pod)
        assert time.monotonic() < deadline, pod["status"]
        time.sleep(0.1)


def test_rbac_package_copy_matches_deploy() -> None:
    assert (REPO / "deploy" / "rbac.yaml").read_text() == (
        REPO / "jupyter_flame" / "sim" / "rbac.yaml"
    ).read_text()
    from jupyter_flame.sim.cli import load_rbac

    kinds = [(d["kind"], d["metadata"]["name"]) for d in load_rbac("ns1")]
    assert kinds == [
        ("ServiceAccount", "jupyter-flame-notebook"),
        ("ServiceAccount", "jupyter-flame-runner"),
        ("Role", "jupyter-flame"),
        ("RoleBinding", "jupyter-flame"),
    ]
    assert load_rbac("ns1")[3]["subjects"][0]["namespace"] == "ns1"


def test_sim_up_enforces_rbac_and_down_leaves_nothing(sim_dir: Path) -> None:
    # How fast `sim up` is belongs in benchmarks/, not in an assertion on a noisy machine.
    out = sim("up", "--dir", str(sim_dir), "--nodes", "1", "--gpus-per-node", "1").stdout
    assert "jupyter-flame-notebook-0" in out and "sim down" in out

    env = dict(line.split("=", 1) for line in (sim_dir / "notebook.env").read_text().splitlines())
    assert set(env) == {"KUBECONFIG", "POD_NAME", "POD_NAMESPACE", "POD_IP"}
    assert env["KUBECONFIG"] == str((sim_dir / "kubeconfig").resolve())
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("jupyter-flame-notebook-0", "default")
    shell = subprocess.run(
        ["bash", "-c", f"set -a; . {sim_dir}/notebook.env; set +a; echo $POD_IP"],
        capture_output=True,
        text=True,
    )
    assert shell.stdout.strip() == env["POD_IP"]

    # The notebook's own credentials: what the Role allows, nothing more.
    core = client_for(Path(env["KUBECONFIG"]))
    me = json.loads(
        core.read_namespaced_pod(env["POD_NAME"], "default", _preload_content=False).data
    )
    assert me["status"]["phase"] == "Running" and me["status"]["podIP"] == env["POD_IP"]
    assert me["spec"]["serviceAccountName"] == "jupyter-flame-notebook"
    assert me["status"]["containerStatuses"][0]["ready"] is True
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as denied:
        core.list_node()
    assert denied.value.status == 403
    runner = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runner-1"},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "jupyter-flame-runner",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "runner",
                    "image": "jupyter-flame/notebook:local",
                    "command": ["bash", "-c", "sleep 60 & python -c 'print(42, flush=True)'; wait"],
                }
            ],
        },
    }
    core.create_namespaced_pod("default", runner, _preload_content=False)
    pod = wait_phase(core, "runner-1", ("Running",))
    assert pod["status"]["podIP"] != env["POD_IP"]
    logs = subprocess.run(
        ["kubectl", "--kubeconfig", env["KUBECONFIG"], "logs", "runner-1"],
        capture_output=True,
        text=True,
    )
    deadline = time.monotonic() + 10
    while logs.stdout != "42\n" and time.monotonic() < deadline:
        time.sleep(0.1)
        logs = subprocess.run(
            ["kubectl", "--kubeconfig", env["KUBECONFIG"], "logs", "runner-1"],
            capture_output=True,
            text=True,
        )
    assert logs.stdout == "42\n", logs.stderr
    admin = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(sim_dir / "admin.kubeconfig"),
            "get",
            "nodes",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
    )
    assert admin.stdout.split() == ["node/flame-sim-node-0", "node/flame-sim-node-1"]

    sids = our_sessions(sim_dir)
    assert session_members(sids), "the stand-in should be running"
    t0 = time.monotonic()
    sim("down", "--dir", str(sim_dir))
    print(f"sim down took {time.monotonic() - t0:.2f} s")
    assert not session_members(sids)
    assert not (sim_dir / "sim.json").exists()


def test_sim_down_cleans_up_after_a_killed_agent(sim_dir: Path) -> None:
    sim("up", "--dir", str(sim_dir))
    core = client_for(sim_dir / "admin.kubeconfig")
    pod = python_pod("orphan", "import time; time.sleep(60)")
    core.create_namespaced_pod("default", pod, _preload_content=False)
    wait_phase(core, "orphan", ("Running",))
    sids = our_sessions(sim_dir)
    agent = json.loads((sim_dir / "sim.json").read_text())["agent"]["pid"]
    os.killpg(agent, signal.SIGKILL)
    time.sleep(0.2)
    assert session_members(sids), "the container outlives a SIGKILLed agent"
    sim("down", "--dir", str(sim_dir))
    assert not session_members(sids)


def test_sim_up_refuses_a_running_dir_and_down_is_idempotent(sim_dir: Path) -> None:
    sim("up", "--dir", str(sim_dir))
    again = sim("up", "--dir", str(sim_dir), check=False)
    assert again.returncode == 1 and "already up" in again.stderr
    sim("down", "--dir", str(sim_dir))
    assert sim("down", "--dir", str(sim_dir), check=False).returncode == 1


def test_sim_up_against_an_existing_apiserver(tmp_path: Path, sim_dir: Path) -> None:
    from jupyter_flame.sim.apiserver.launch import start_apiserver

    with start_apiserver(tmp_path / "external") as server:
        admin = server.write_kubeconfig(tmp_path / "admin.kubeconfig")
        out = sim(
            "up", "--dir", str(sim_dir), "--apiserver", server.url, "--kubeconfig", str(admin)
        ).stdout
        assert server.url in out
        core = client_for(sim_dir / "kubeconfig")
        me = json.loads(
            core.read_namespaced_pod(
                "jupyter-flame-notebook-0", "default", _preload_content=False
            ).data
        )
        assert me["status"]["phase"] == "Running"
        sim("down", "--dir", str(sim_dir))
        assert server.alive(), "sim down must not stop an API server it did not start"


def test_agent_sigterm_kills_its_containers_and_marks_nodes_unknown(sim_dir: Path) -> None:
    sim("up", "--dir", str(sim_dir))
    core = client_for(sim_dir / "admin.kubeconfig")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "jupyter-flame/notebook:local",
                    "command": ["bash", "-c", f"python -c '{code}' & sleep 60 & wait"],
                }
            ]
        },
    }
    core.create_namespaced_pod("default", pod, _preload_content=False)
    wait_phase(core, "stubborn", ("Running",))
    time.sleep(0.3)
    containers = {int(p.name) for p in (sim_dir / "run" / "containers").iterdir()}
    assert containers and session_members(containers)
    agent = json.loads((sim_dir / "sim.json").read_text())["agent"]["pid"]
    os.kill(agent, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while session_members({agent}):
        assert time.monotonic() < deadline, "the agent did not exit on SIGTERM"
        time.sleep(0.05)
    assert not session_members(containers), "SIGTERM-ignoring children must be SIGKILLed"
    node = json.loads(core.read_node("flame-sim-node-0", _preload_content=False).data)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    sim("down", "--dir", str(sim_dir))


def test_sim_up_exit_with_stops_when_the_watched_process_goes(sim_dir: Path) -> None:
    """``--exit-with PID`` (what the test harnesses pass): a killed test session leaves no
    API server and no agent behind."""
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        sim("up", "--dir", str(sim_dir), "--exit-with", str(watched.pid))
        state = json.loads((sim_dir / "sim.json").read_text())
        pids = [state["apiserver"]["pid"], state["agent"]["pid"]]
        assert all(pid_alive(p) for p in pids)
    finally:
        watched.kill()
        watched.wait()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids), "the stand-in outlived the process it watched"

