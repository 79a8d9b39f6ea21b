"""``jupyter flame list`` against the local stand-in: one namespace, or all of them (``-A``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame.sim.apiserver.launch import ApiServerProcess, start_apiserver

pytestmark = pytest.mark.sim

LABELS = {"app.kubernetes.io/managed-by": "jupyter-flame", "jupyter-flame/pool": "p",
          "jupyter-flame/runner": "r1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, Path]]:
    from kubernetes import client

    server = start_apiserver(tmp_path_factory.mktemp("apiserver"), exit_with_parent=True)
    try:
        kubeconfig = server.write_kubeconfig(server.state_dir / "admin.kubeconfig",
                                             namespace="team-a")
        api = client.CoreV1Api(client.ApiClient(server.client_configuration()))
        for ns in ("team-a", "team-b"):
            api.create_namespace({"metadata": {"name": ns}})
            api.create_namespaced_pod(ns, {
                "metadata": {"name": f"nb-flame-{ns}", "labels": LABELS},
                "spec": {"containers": [{"name": "runner", "image": "python:3.11"}]}})
        api.create_namespaced_pod("team-b", {  # not a runner: never listed
            "metadata": {"name": "other"},
            "spec": {"containers": [{"name": "c", "image": "python:3.11"}]}})
        yield server, kubeconfig
    finally:
        server.stop()


def flame_list(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POD_")}
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(["jupyter", "flame", "list", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def pods(out: subprocess.CompletedProcess[str]) -> list[tuple[Any, Any]]:
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    return sorted((r["namespace"], r["name"]) for r in rows if r["backend"] == "kubernetes")


def test_list_shows_the_current_namespace(cluster: tuple[ApiServerProcess, Path]) -> None:
    _, kubeconfig = cluster
    assert pods(flame_list(kubeconfig, "--json")) == [("team-a", "nb-flame-team-a")]
    assert pods(flame_list(kubeconfig, "--json", "--namespace", "team-b")) == [
        ("team-b", "nb-flame-team-b")]


def test_list_all_namespaces(cluster: tuple[ApiServerProcess, Path]) -> None:
    _, kubeconfig = cluster
    expected = [("team-a", "nb-flame-team-a"), ("team-b", "nb-flame-team-b")]
    assert pods(flame_list(kubeconfig, "--json", "--all-namespaces")) == expected
    table = flame_list(kubeconfig, "-A")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["BACKEND", "NAMESPACE", "POOL"]
    assert any(line.split()[:2] == ["kubernetes", "team-b"] for line in lines[1:])
