"""Faults on the Kubernetes path, each with nothing lost and a clear message: the API server
restarting during a boot and while the backend watches (through tests/blackout_proxy.py: every
connection cut, new ones refused, then served again with the state intact), and the network
between the kernel and a runner pod cut and restored (the runner's process stopped: it neither
sends nor answers, as behind a partition)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame.backends.kubernetes.backend import KubernetesBackend
from jupyter_flame.errors import RunnerLostError
from jupyter_flame.pool.pool import Pool

from .blackout_proxy import BlackoutProxy
from .sim_harness import MANAGED, Sim

pytestmark = [pytest.mark.sim]


@pytest.fixture
def proxied(sim: Sim, tmp_path: Path) -> Iterator[tuple[BlackoutProxy, str]]:
    """A proxy to the API server and a kubeconfig (the notebook's rights) that goes through it."""
    text = Path(sim.env["KUBECONFIG"]).read_text()
    server = re.search(r"server:\s*https://([\d.]+):(\d+)", text)
    assert server is not None, text
    proxy = BlackoutProxy((server.group(1), int(server.group(2))))
    kubeconfig = tmp_path / "proxied.kubeconfig"
    kubeconfig.write_text(text.replace(server.group(0), f"server: {proxy.url}"))
    try:
        yield proxy, str(kubeconfig)
    finally:
        proxy.close()


def backend(sim: Sim, kubeconfig: str) -> KubernetesBackend:
    return KubernetesBackend(namespace=sim.env["POD_NAMESPACE"], pod_name=sim.env["POD_NAME"],
                             pod_ip=sim.env["POD_IP"], kubeconfig=kubeconfig)


def live_pods(sim: Sim, pool: str) -> list[Any]:
    return [p for p in sim.runner_pods(f"jupyter-flame/pool={pool}")
            if p.metadata.deletion_timestamp is None]


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def close(pool: Pool, b: KubernetesBackend, sim: Sim, name: str) -> None:
    pool.shutdown()
    asyncio.run(b.close())
    assert wait_for(lambda: not sim.runner_pods(f"jupyter-flame/pool={name}"), 30), \
        "runner pods were left behind"


def test_api_server_restart_during_a_boot(sim: Sim, proxied: tuple[BlackoutProxy, str]) -> None:
    """The pod is created, then the API server goes away for 3 s before the runner is up:
    the boot resumes (its watch reconnects), the call runs, and there is exactly one pod."""
    proxy, kubeconfig = proxied
    b = backend(sim, kubeconfig)
    pool = Pool("fault-boot", backend=b, boot_timeout=60)
    try:
        fut = pool.submit(os.getpid)
        assert wait_for(lambda: live_pods(sim, "fault-boot"), 30), "no pod was created"
        booting = not fut.done()
        before = proxy.connections
        proxy.restart(3.0)
        assert isinstance(fut.result(timeout=60), int)
        assert booting, "the runner was up before the restart: not a restart during a boot"
        # the pod's watch came back through the proxy (it retries with backoff)
        assert wait_for(lambda: proxy.connections > before, 15)
        assert len(live_pods(sim, "fault-boot")) == 1  # no duplicate pod
        assert pool.status()["boots"] == 1
        assert isinstance(pool.call(os.getpid), int)
    finally:
        close(pool, b, sim, "fault-boot")


def test_api_server_restart_while_watching(sim: Sim, proxied: tuple[BlackoutProxy, str]) -> None:
    """A live runner, then the API server restarts: the pool keeps working, and its watch,
    reconnected, still sees the pod's end: a pod deleted after the restart is noticed, the
    pool replaces the runner, and shutdown removes everything through the proxy."""
    proxy, kubeconfig = proxied
    b = backend(sim, kubeconfig)
    pool = Pool("fault-watch", backend=b, boot_timeout=60)
    try:
        first = pool.call(os.getpid)
        (pod,) = live_pods(sim, "fault-watch")
        before = proxy.connections
        proxy.restart(3.0)
        assert pool.call(os.getpid) == first  # the runner's own channel was never cut
        assert wait_for(lambda: proxy.connections > before, 15), "the watch never came back"
        sim.admin.delete_namespaced_pod(pod.metadata.name, "default")
        assert wait_for(lambda: pool.status()["runners"] == [] or all(
            r["pod"] != pod.metadata.name for r in pool.status()["runners"]), 30), \
            "the pool never noticed its pod was deleted"
        assert pool.call(os.getpid) != first
    finally:
        close(pool, b, sim, "fault-watch")


def test_network_cut_to_a_runner_pod_and_restored(sim: Sim) -> None:
    """The runner pod goes silent mid-cell (its process group stopped: no bytes either way).
    The task fails with RunnerLostError within heartbeat_timeout; once the network is back the
    old runner finds its connection gone and ends; its pod is deleted; the pool goes on."""
    b = KubernetesBackend(namespace=sim.env["POD_NAMESPACE"], pod_name=sim.env["POD_NAME"],
                          pod_ip=sim.env["POD_IP"], kubeconfig=sim.env["KUBECONFIG"])
    pool = Pool("fault-net", backend=b, boot_timeout=60, heartbeat_timeout=5.0)
    try:
        pid = pool.call(os.getpid)
        (pod,) = live_pods(sim, "fault-net")
        fut = pool.submit(time.sleep, 60)
        time.sleep(0.5)
        os.killpg(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            with pytest.raises(RunnerLostError) as info:
                fut.result(timeout=30)
            took = time.monotonic() - t0
        finally:
            threading.Timer(1.0, lambda: _cont(pid)).start()  # the network comes back
        assert took < 5.0 + 2 * 2.0 + 2, took
        assert "sent nothing for" in str(info.value)
        assert wait_for(lambda: pod.metadata.name not in
                        {p.metadata.name for p in sim.runner_pods(MANAGED.split(",")[0])}, 30), \
            "the cut-off runner's pod was left behind"
        assert pool.call(os.getpid) != pid
    finally:
        _cont(pid)
        close(pool, b, sim, "fault-net")


def _cont(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
