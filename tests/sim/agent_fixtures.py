"""Fixtures for node-agent tests: a stand-in API server plus two agent processes.

``sim_cluster`` (module scope) runs the API server and two agents, the way a
real cluster has several kubelets and one scheduler:

- agent A serves ``flame-sim-node-0`` (CPU only) and is the scheduler;
- agent B serves ``flame-sim-node-1`` (2 x ``nvidia.com/gpu``, tainted) with
  ``--no-scheduler``.

Tests talk to it only through the official client and kubectl.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Json = dict[str, Any]


@dataclass
class SimCluster:
    """Handles on a running stand-in for tests."""

    state_dir: Path
    kubeconfig: Path
    core: Any
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster as admin."""
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def create_pod(self, pod: Json, namespace: str = "default") -> Json:
        """Create a pod; return its JSON."""
        resp = self.core.create_namespaced_pod(namespace, pod, _preload_content=False)
        return dict(json.loads(resp.data))

    def get_pod(self, name: str, namespace: str = "default") -> Json:
        """Read a pod as JSON."""
        return dict(
            json.loads(self.core.read_namespaced_pod(name, namespace, _preload_content=False).data)
        )

    def wait_pod(
        self,
        name: str,
        predicate: Callable[[Json | None], bool],
        timeout: float = 20.0,
        namespace: str = "default",
    ) -> Json | None:
        """Watch pod ``name`` until ``predicate(pod)`` (pod is None once deleted)."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout
        listing = json.loads(
            self.core.list_namespaced_pod(
                namespace, field_selector=f"metadata.name={name}", _preload_content=False
            ).data
        )
        pod = listing["items"][0] if listing["items"] else None
        if predicate(pod):
            return pod
        rv = listing["metadata"]["resourceVersion"]
        while time.monotonic() < deadline:
            w = watch.Watch()
            for event in w.stream(
                self.core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, int(deadline - time.monotonic())),
                deserialize=False,
            ):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                pod = None if event["type"] == "DELETED" else obj
                if predicate(pod):
                    w.stop()
                    return pod
        raise AssertionError(f"pod {name} did not reach the expected state in {timeout} s: {pod}")

    def events(self, name: str, namespace: str = "default") -> list[Json]:
        """Events about pod ``name``, oldest first."""
        data = json.loads(
            self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
            ).data
        )
        items = [e for e in data["items"] if e["involvedObject"]["name"] == name]
        return sorted(items, key=lambda e: e.get("firstTimestamp") or "")

    def wait_event(
        self, name: str, reason: str, message: str | None = None, timeout: float = 10.0
    ) -> Json:
        """Wait for an event with ``reason`` (and ``message``, if given) about pod ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(name):
                if event["reason"] == reason and message in (None, event["message"]):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no {reason} event for {name}: {self.events(name)}")
            time.sleep(0.1)


def phase(*phases: str) -> Callable[[Json | None], bool]:
    """Predicate: the pod is in one of ``phases``."""
    return lambda pod: pod is not None and (pod.get("status") or {}).get("phase") in phases


def gone(pod: Json | None) -> bool:
    """Predicate: the pod is deleted."""
    return pod is None


def python_pod(name: str, code: str, **spec: Any) -> Json:
    """A pod running ``python -c code`` in container ``main``."""
    container = {
        "name": "main",
        "image": "jupyter-flame/notebook:local",
        "command": ["python", "-c", code],
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def recorded_pids(state_dir: Path) -> list[int]:
    """Pids of live container processes recorded by the agents."""
    records = state_dir / "run" / "containers"
    return [int(p.name) for p in records.iterdir()] if records.is_dir() else []


def session_members(sids: set[int]) -> list[int]:
    """Live (non-zombie) processes whose session id is in ``sids``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[3]) in sids:
            found.append(int(entry.name))
    return found


def start_agent(kubeconfig: Path, state_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m jupyter_flame.sim.agent`` in its own session."""
    log = open(state_dir / f"agent-{len(list(state_dir.glob('agent-*.log')))}.log", "ab")  # noqa: SIM115
    with log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_flame.sim.agent",
                "--kubeconfig",
                str(kubeconfig),
                "--state-dir",
                str(state_dir),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_agent(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM an agent and wait; SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """API server + agent A (node-0, scheduler) + agent B (node-1, 2 GPUs)."""
    from kubernetes import client, config

    from jupyter_flame.sim.apiserver.launch import start_apiserver

    state_dir = tmp_path_factory.mktemp("sim")
    server = start_apiserver(state_dir)
    kubeconfig = server.write_kubeconfig(state_dir / "admin.kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    agents = [
        start_agent(kubeconfig, state_dir, "--nodes", "1", "--images", "python:3.11"),
        start_agent(
            kubeconfig,
            state_dir,
            "--nodes",
            "1",
            "--node-index-base",
            "1",
            "--gpus-per-node",
            "2",
            "--no-scheduler",
        ),
    ]
    cluster = SimCluster(state_dir, kubeconfig, core, agents)
    try:
        deadline = time.monotonic() + 15
        while len(json.loads(core.list_node(_preload_content=False).data)["items"]) < 2:
            assert time.monotonic() < deadline, "agents did not register their nodes"
            assert all(a.poll() is None for a in agents), "an agent exited"
            time.sleep(0.05)
        yield cluster
    finally:
        pids = recorded_pids(state_dir)
        for agent in agents:
            stop_agent(agent)
        server.stop()
        leftovers = session_members({*pids, *(a.pid for a in agents)})
        assert not leftovers, f"processes left behind: {leftovers}"


def kubelet_endpoint(core: Any, node: str) -> tuple[str, int]:
    """(InternalIP, kubelet port) a Node advertises, as an API server finds its kubelet."""
    obj = json.loads(core.read_node(node, _preload_content=False).data)
    ip = next(a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP")
    return ip, int(obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"])


def kubelet_get(
    endpoint: tuple[str, int],
    path: str,
    ca: Path,
    client_cert: tuple[Path, Path] | None,
    timeout: float = 20.0,
) -> Any:
    """GET ``path`` from a kubelet API over HTTPS, verifying its serving certificate with
    ``ca`` and presenting ``client_cert`` (cert, key) if given; returns the open
    ``http.client.HTTPResponse`` (read it, or iterate it line by line to follow)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    conn = http.client.HTTPSConnection(endpoint[0], endpoint[1], context=ctx, timeout=timeout)
    conn.request("GET", path)
    return conn.getresponse()
