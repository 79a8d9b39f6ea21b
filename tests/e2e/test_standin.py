"""What only the stand-in shows: runner pods as its node agent's processes and files."""

from __future__ import annotations

import os
import time

import pytest

from jupyter_flame import KubernetesBackend, Pool

from ..sim.agent_fixtures import kubelet_endpoint, kubelet_get
from .conftest import Cluster, unique

pytestmark = [pytest.mark.e2e, pytest.mark.sim]


@pytest.mark.standin_only(reason="reads the node agent's process records in DIR/run")
def test_runner_processes_are_the_agents_containers_and_die_with_the_pool(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    assert cluster.dir is not None
    pool = Pool(unique("procs"), backend=backend, boot_timeout=30)
    pid = pool.call(os.getpid)
    records = cluster.dir / "run" / "containers"
    assert str(pid) in {p.name for p in records.iterdir()}
    pool.shutdown()
    deadline = time.monotonic() + 15
    while (records / str(pid)).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (records / str(pid)).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.standin_only(reason="uses the stand-in's kubelet client certificate in DIR/pki")
def test_a_runner_pods_log_from_its_kubelet_matches_the_api_servers(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    assert cluster.dir is not None
    name = unique("logs")
    pool = Pool(name, backend=backend, boot_timeout=30)
    try:
        pod_name = pool.call(os.getenv, "POD_NAME")
        pod = cluster.core.read_namespaced_pod(pod_name, cluster.namespace)
        pki = cluster.dir / "pki"
        resp = kubelet_get(
            kubelet_endpoint(cluster.core, pod.spec.node_name),
            f"/containerLogs/{cluster.namespace}/{pod_name}/runner",
            pki / "kubelet-ca.crt",
            (pki / "apiserver-kubelet-client.crt", pki / "apiserver-kubelet-client.key"),
        )
        assert resp.status == 200
        from_kubelet = resp.read().decode()
        from_apiserver = cluster.core.read_namespaced_pod_log(
            pod_name, cluster.namespace, container="runner", _preload_content=False
        ).data.decode()
        assert f"of pool '{name}'" in from_kubelet  # the runner's banner
        assert from_kubelet == from_apiserver
    finally:
        pool.shutdown()
