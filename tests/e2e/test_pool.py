"""The Pool API on the Kubernetes backend: runners are pods cloned from the notebook pod."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from jupyter_flame import KubernetesBackend, Pool, RunnerLostError

from .conftest import Cluster, unique

pytestmark = pytest.mark.e2e

BOOT = 60.0  # seconds; a real cluster may pull the image first


def test_a_pool_boots_runner_pods_and_calls_run_there(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    name = unique("boot")
    pool = Pool(name, backend=backend, min=2, max=2, boot_timeout=BOOT)
    try:
        where = pool.call(os.getenv, "POD_NAME")
        assert where.startswith(f"{cluster.pod_name}-flame-")
        pods = cluster.runner_pods(name)
        assert len(pods) == 2 and where in {p.metadata.name for p in pods}
        parent = cluster.core.read_namespaced_pod(cluster.pod_name, cluster.namespace)
        for pod in pods:
            assert pod.status.phase == "Running"
            (owner,) = pod.metadata.owner_references
            assert (owner.kind, owner.uid) == ("Pod", parent.metadata.uid)
            assert pod.spec.automount_service_account_token is False
        assert sorted(pool.map(abs, [-1, -2, -3, -4])) == [1, 2, 3, 4]
    finally:
        pool.shutdown()


def test_a_shipped_value_comes_back_changed(backend: KubernetesBackend) -> None:
    def grow(
        table: dict[str, list[int]], values: np.ndarray
    ) -> tuple[dict[str, list[int]], np.ndarray]:
        table["seen"].append(len(values))
        table["pid"] = [os.getpid()]
        return table, values * 2

    pool = Pool(unique("ship"), backend=backend, boot_timeout=BOOT)
    try:
        values = np.arange(1_000_000, dtype=np.float64)
        table, doubled = pool.call(grow, {"seen": [1]}, values)
        assert table["seen"] == [1, 1_000_000] and table["pid"] != [os.getpid()]
        assert doubled.dtype == np.float64 and np.array_equal(doubled, values * 2)
    finally:
        pool.shutdown()


def test_a_crashed_runner_is_an_error_and_the_pool_goes_on(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    name = unique("crash")
    pool = Pool(name, backend=backend, boot_timeout=BOOT)
    try:
        crashed = pool.call(os.getenv, "POD_NAME")
        with pytest.raises(RunnerLostError) as info:
            pool.call(os._exit, 7)
        assert info.value.exit_code == 7
        assert f"pool '{name}'" in str(info.value) and "exited with code 7" in str(info.value)
        again = pool.call(os.getenv, "POD_NAME")
        assert again != crashed and again.startswith(f"{cluster.pod_name}-flame-")
        assert cluster.wait_no_runner_pods(name, 0) != []  # the replacement runs
    finally:
        pool.shutdown()


def test_a_crashed_runners_error_names_its_pod(backend: KubernetesBackend) -> None:
    pool = Pool(unique("crashpod"), backend=backend, boot_timeout=BOOT)
    try:
        pod = pool.call(os.getenv, "POD_NAME")
        with pytest.raises(RunnerLostError) as info:
            pool.call(os._exit, 7)
        assert info.value.pod == pod and f"(pod {pod})" in str(info.value)
    finally:
        pool.shutdown()


def test_idle_runners_shut_down_and_their_pods_go(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    name = unique("idle")
    pool = Pool(name, backend=backend, boot_timeout=BOOT, idle_shutdown_after=1.0)
    try:
        assert pool.call(abs, -3) == 3
        assert len(cluster.runner_pods(name)) == 1
        t0 = time.monotonic()
        assert cluster.wait_no_runner_pods(name, 30.0) == []
        assert time.monotonic() - t0 < 30.0
        assert pool.call(abs, -4) == 4  # a new runner boots on demand
    finally:
        pool.shutdown()


def test_shutdown_leaves_no_pods_and_no_key_secret(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    from kubernetes.client.exceptions import ApiException

    name = unique("down")
    pool = Pool(name, backend=backend, min=2, max=2, boot_timeout=BOOT)
    try:
        assert pool.call(abs, -1) == 1
        pods = cluster.runner_pods(name)
        assert len(pods) == 2
        (key,) = [e for e in pods[0].spec.containers[0].env if e.name == "JUPYTER_FLAME_KEY"]
        secret = key.value_from.secret_key_ref.name
        if cluster.standin:  # the admin reads it; deploy/rbac.yaml lets the notebook not
            assert cluster.core.read_namespaced_secret(secret, cluster.namespace).data
    finally:
        pool.shutdown()
    assert cluster.wait_no_runner_pods(name, 30.0) == []
    # With deploy/rbac.yaml's rights (secrets: create, delete) a delete is how to ask.
    with pytest.raises(ApiException) as info:
        cluster.core.delete_namespaced_secret(secret, cluster.namespace)
    assert info.value.status == 404
