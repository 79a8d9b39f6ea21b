"""KubernetesBackend against the local Kubernetes stand-in (``jupyter flame sim``).

One stand-in per module (one node, no GPUs), started with ``python -m jupyter_flame.sim up``
and stopped with ``sim down``. The backend reads the notebook pod the stand-in registered and
clones it; runners are real ``python -m jupyter_flame.runner`` processes dialling a real
Listener on the notebook pod's IP. The backend contract runs unchanged (except the test that
needs a runner pointed elsewhere, adapted below); then the Kubernetes-only rules.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_flame.backends.base import Backend, BootRequest, RunnerHandle, RunnerSpec
from jupyter_flame.backends.kubernetes.backend import (
    KubernetesBackend,
    cleanup_runner_pods,
    list_runner_pods,
)
from jupyter_flame.backends.kubernetes.pod_template import RunnerPodTemplate
from jupyter_flame.channel.protocol import EXIT_UNREACHABLE
from jupyter_flame.errors import BackendError, BootError, ConfigError
from tests.backend_contract import BackendContract, ContractPlumbing

pytestmark = [
    pytest.mark.sim,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stand-in needs Linux"),
]

MANAGED = "app.kubernetes.io/managed-by=jupyter-flame"


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jupyter_flame.sim", *args],
                          capture_output=True, text=True, timeout=120)


def start_sim(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[dict[str, str]]:
    d = tmp_path_factory.mktemp("k8s")
    up = sim("up", "--dir", str(d), *args)
    if up.returncode != 0:
        sim("down", "--dir", str(d))
        pytest.fail(f"sim up failed:\n{up.stdout}\n{up.stderr}")
    env = dict(line.split("=", 1) for line in (d / "notebook.env").read_text().splitlines()
               if "=" in line)
    env.update(ADMIN=str(d / "admin.kubeconfig"), DIR=str(d))
    try:
        yield env
    finally:
        sim("down", "--dir", str(d))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running stand-in, one node without GPUs; yields notebook.env as a dict (plus
    ``ADMIN``, ``DIR``)."""
    yield from start_sim(tmp_path_factory)


@pytest.fixture
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stand-in with a CPU node and a tainted node of 2 H100s."""
    yield from start_sim(tmp_path_factory, "--gpus-per-node", "2")


@pytest.fixture(scope="module")
def admin(cluster: dict[str, str]) -> Iterator[Any]:
    """CoreV1Api with admin rights (to read back what the backend did)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=cluster["ADMIN"])
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


def backend_for(cluster: dict[str, str], **kwargs: Any) -> KubernetesBackend:
    kwargs.setdefault("kubeconfig", cluster["KUBECONFIG"])
    return KubernetesBackend(namespace=cluster["POD_NAMESPACE"], pod_name=cluster["POD_NAME"],
                             pod_ip=cluster["POD_IP"], **kwargs)


def runner_pods(admin: Any, namespace: str = "default") -> list[str]:
    pods = admin.list_namespaced_pod(namespace, label_selector=MANAGED).items
    return [p.metadata.name for p in pods]


def pod_exists(admin: Any, name: str, namespace: str = "default") -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        admin.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


class SimPlumbing(ContractPlumbing):
    """Runners are pods: gone means the pod no longer exists."""

    boot_timeout = 30.0
    test_timeout = 90.0

    @pytest.fixture(autouse=True)
    def _admin(self, admin: Any) -> None:
        self.admin = admin

    def runner_gone(self, handle: RunnerHandle) -> bool:
        return not pod_exists(self.admin, handle.info["pod"])


class TestKubernetesBackendContract(SimPlumbing, BackendContract):
    @pytest.fixture
    def make_backend(self, cluster: dict[str, str]) -> Callable[[], Backend]:
        return lambda: backend_for(cluster)

    def test_runner_that_cannot_connect_fails_with_log_tail(
        self, make_backend: Callable[[], Backend]
    ) -> None:
        # The cell's env cannot redirect a pod (runner variables are forced), so point the
        # request itself at a port where nobody listens.
        async def scenario() -> None:
            async with self.harness(make_backend) as h:
                request = h.request(self.spec(), boot_timeout=3.0)
                host = h.listener.address[0]
                request = BootRequest(**{**vars(request), "parent_address": (host, 1)})
                handle = await h.backend.boot(request)
                error = await asyncio.wait_for(handle.failed, self.boot_timeout)
                assert isinstance(error, BootError)
                assert error.reason == "exited"
                assert f"Runner {handle.id} of pool 'contract'" in str(error)
                assert "before connecting" in str(error) and f"{host}:1" in str(error)
                assert error.log_tail and f"{host}:1" in error.log_tail, error.log_tail
                assert await asyncio.wait_for(handle.exited, 5.0) == EXIT_UNREACHABLE
                assert h.phases(handle.id)[-1] == "failed"
                await h.backend.terminate(handle, grace=1.0)
                assert h.phases(handle.id)[-1] == "failed"
                await self.wait_gone(handle, within=10.0)  # a failed boot deletes its pod

        self.run(scenario())


class TestKubernetesOnly(SimPlumbing):
    def test_runner_pod_carries_the_spec(self, cluster: dict[str, str], admin: Any) -> None:
        template = RunnerPodTemplate(labels={"team": "ml"}, env={"FROM_TEMPLATE": "1"})

        async def scenario() -> None:
            async with self.harness(lambda: backend_for(cluster, template=template)) as h:
                handle, channel = await self.boot_and_connect(
                    h, cpu="250m", memory="256Mi", env=(("FOO", "bar"),),
                    node_selector=(("kubernetes.io/os", "linux"),))
                pod = admin.read_namespaced_pod(handle.info["pod"], "default")
                parent = admin.read_namespaced_pod(cluster["POD_NAME"], "default")
                assert pod.metadata.name.startswith(cluster["POD_NAME"] + "-flame-")
                labels = pod.metadata.labels
                assert labels["app.kubernetes.io/managed-by"] == "jupyter-flame"
                assert labels["jupyter-flame/pool"] == "contract"
                assert labels["jupyter-flame/parent"] == cluster["POD_NAME"]
                assert labels["jupyter-flame/kernel"] == "contract-kernel"
                assert labels["jupyter-flame/runner"] == handle.id
                assert labels["team"] == "ml"
                assert "controller-revision-hash" not in labels
                (owner,) = pod.metadata.owner_references
                assert (owner.kind, owner.name, owner.uid) == ("Pod", parent.metadata.name,
                                                               parent.metadata.uid)
                spec = pod.spec
                assert spec.restart_policy == "Never"
                assert spec.automount_service_account_token is False
                assert spec.service_account_name == "jupyter-flame-runner"
                assert spec.node_selector == {"kubernetes.io/os": "linux"}
                (container,) = spec.containers
                assert container.name == "runner"
                assert container.command == ["python", "-m", "jupyter_flame.runner"]
                assert container.resources.requests == {"cpu": "250m", "memory": "256Mi"}
                assert container.resources.limits == {"memory": "256Mi"}
                env = {e.name: e for e in container.env}
                assert env["FOO"].value == "bar" and env["FROM_TEMPLATE"].value == "1"
                ref = env["JUPYTER_FLAME_KEY"].value_from.secret_key_ref
                assert env["JUPYTER_FLAME_KEY"].value is None
                assert not any(v.name.startswith("kube-api-access") for v in spec.volumes or [])
                secret = admin.read_namespaced_secret(ref.name, "default")
                assert base64.b64decode(secret.data[ref.key]).decode() == h.key.hex()
                assert secret.type == "Opaque"
                assert secret.metadata.labels["jupyter-flame/pool"] == "contract"
                assert secret.metadata.owner_references[0].uid == parent.metadata.uid
                assert handle.info["node"] and handle.info["pod_ip"]
                assert h.phases(handle.id)[:2] == ["requested", "scheduling"]
                await h.backend.close()
                channel.close()
                assert not pod_exists(admin, handle.info["pod"])
                assert ref.name not in [s.metadata.name for s in
                                        admin.list_namespaced_secret("default").items]

        self.run(scenario())

    def test_unknown_image_fails_at_once_and_leaves_no_pod(
        self, cluster: dict[str, str], admin: Any
    ) -> None:
        template = RunnerPodTemplate(image="example.com/does-not/exist:404")

        async def scenario() -> None:
            async with self.harness(lambda: backend_for(cluster, template=template)) as h:
                request = h.request(self.spec(), boot_timeout=60.0)
                started = time.monotonic()
                handle = await h.backend.boot(request)
                error = await asyncio.wait_for(handle.failed, 20.0)
                assert time.monotonic() - started < 20.0
                assert isinstance(error, BootError)
                assert error.reason in ("ErrImagePull", "ImagePullBackOff")
                assert "example.com/does-not/exist:404" in str(error)
                assert "Fix:" in str(error)
                await asyncio.wait_for(handle.exited, 15.0)
                await self.wait_gone(handle, within=10.0)
                phases = h.phases(handle.id)
                assert phases[-1] == "failed" and "starting" not in phases

        self.run(scenario())

    def test_unschedulable_gpu_shows_the_scheduler_then_fails_at_boot_timeout(
        self, cluster: dict[str, str], admin: Any
    ) -> None:
        from jupyter_flame.pool.pool import Pool

        backend = backend_for(cluster)
        events: list[Any] = []
        backend.subscribe(events.append)
        pool = Pool("k8s-gpu", backend=backend, boot_timeout=4.0, spec=RunnerSpec(gpu=1))
        try:
            started = time.monotonic()
            with pytest.raises(BootError) as info:
                pool.call(int, "1")
            assert 3.5 < time.monotonic() - started < 30.0
            assert "nvidia.com/gpu" in str(info.value)
            scheduling = [e for e in events if e.phase == "scheduling" and e.reason]
            assert scheduling and scheduling[0].reason == "Unschedulable"
            assert "nvidia.com/gpu" in scheduling[0].message
        finally:
            pool.shutdown()
            asyncio.run(backend.close())
        deadline = time.monotonic() + 15
        while runner_pods(admin) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner_pods(admin) == []

    def test_a_call_runs_in_a_runner_pod(self, cluster: dict[str, str], admin: Any) -> None:
        from jupyter_flame.pool.pool import Pool

        backend = backend_for(cluster)
        pool = Pool("k8s-call", backend=backend, boot_timeout=30.0)
        try:
            assert pool.call(os.getenv, "POD_NAME", "?").startswith(
                cluster["POD_NAME"] + "-flame-")
            assert pool.call(os.getenv, "JUPYTERHUB_API_TOKEN") is None
        finally:
            pool.shutdown()
            asyncio.run(backend.close())

    def test_missing_rbac_rule_is_a_403_pointing_to_rbac_yaml(
        self, cluster: dict[str, str], admin: Any, tmp_path: Path
    ) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=cluster["ADMIN"])
        rbac = client.RbacAuthorizationV1Api(api)
        ns = "default"
        admin.create_namespaced_service_account(ns, {"metadata": {"name": "no-create"}})
        rbac.create_namespaced_role(ns, {"metadata": {"name": "no-create"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "delete"]},
        ]})
        rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": "no-create"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "no-create"},
            "subjects": [{"kind": "ServiceAccount", "name": "no-create", "namespace": ns}]})
        token = admin.create_namespaced_service_account_token(
            "no-create", ns, {"spec": {"expirationSeconds": 3600}}).status.token
        base = yaml.safe_load(Path(cluster["KUBECONFIG"]).read_text())
        base["users"] = [{"name": base["users"][0]["name"], "user": {"token": token}}]
        kubeconfig = tmp_path / "limited.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(base))
        api.close()

        async def scenario() -> None:
            backend = backend_for(cluster, kubeconfig=str(kubeconfig))
            request = BootRequest(pool="rbac", runner_id="r1", spec=RunnerSpec(),
                                  parent_address=(cluster["POD_IP"], 1), key=os.urandom(32),
                                  kernel_id="k")
            try:
                with pytest.raises(BackendError) as info:
                    await backend.boot(request)
            finally:
                await backend.close()
            error = info.value
            assert error.status == 403 and error.reason == "Forbidden"
            assert "kubectl apply -n default -f deploy/rbac.yaml" in str(error)
            assert 'resources: ["pods"]' in str(error) and 'verbs: ["create"]' in str(error)

        asyncio.run(scenario())
        assert runner_pods(admin) == []

    def test_sweep_and_cleanup(self, cluster: dict[str, str], admin: Any) -> None:
        async def scenario() -> None:
            async with self.harness(lambda: backend_for(cluster)) as h:
                handle = await h.backend.boot(h.request(self.spec(), self.boot_timeout))
                listed = list_runner_pods(admin, "default")
                assert [p["name"] for p in listed] == [handle.info["pod"]]
                assert listed[0]["pool"] == "contract" and listed[0]["kernel_id"] == (
                    "contract-kernel")
                # live notebook pod and kernel: not an orphan
                assert cleanup_runner_pods(admin, "default") == []
                gone = cleanup_runner_pods(admin, "default", live_kernels=["other"])
                assert [(p["name"], p["why"]) for p in gone] == [
                    (handle.info["pod"], "kernel gone")]
                await asyncio.wait_for(handle.exited, 20.0)
                other = backend_for(cluster)
                leftover = await other.boot(h.request(self.spec(), self.boot_timeout))
                assert await h.backend.sweep("contract-kernel", "contract") == [  # type: ignore[attr-defined]
                    leftover.info["pod"]]
                await asyncio.wait_for(leftover.exited, 20.0)
                await other.close()

        self.run(scenario())
        assert runner_pods(admin) == []

    def test_close_during_pod_creation_deletes_the_new_pod(
        self, cluster: dict[str, str], admin: Any
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        from jupyter_flame.backends.kubernetes.cleanup import secret_name

        async def scenario() -> None:
            backend = backend_for(cluster)
            await asyncio.to_thread(backend._setup)
            loop = asyncio.get_running_loop()
            create = backend.core.create_namespaced_pod

            def create_then_close(*args: Any, **kwargs: Any) -> Any:
                created = create(*args, **kwargs)
                # close() overtakes the boot: it cannot see this runner yet
                asyncio.run_coroutine_threadsafe(backend.close(), loop).result(30)
                return created

            backend.core.create_namespaced_pod = create_then_close  # type: ignore[method-assign]
            request = BootRequest(pool="closing", runner_id="r1", spec=self.spec(),
                                  parent_address=(cluster["POD_IP"], 1), key=os.urandom(32),
                                  kernel_id="k-closing")
            with pytest.raises(BootError, match="is closed") as info:
                await backend.boot(request)
            assert info.value.reason == "closed"
            with pytest.raises(ApiException) as missing:
                admin.read_namespaced_secret(secret_name(cluster["POD_NAME"], "closing",
                                                         "k-closing"), "default")
            assert missing.value.status == 404

        self.run(scenario())
        deadline = time.monotonic() + 20
        while runner_pods(admin) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner_pods(admin) == []

    def test_release_pool_waits_for_the_secret_being_created(
        self, cluster: dict[str, str], admin: Any
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        async def scenario() -> None:
            backend = backend_for(cluster)
            await asyncio.to_thread(backend._setup)
            request = BootRequest(pool="race", runner_id="r1", spec=self.spec(),
                                  parent_address=(cluster["POD_IP"], 1), key=os.urandom(32),
                                  kernel_id="k-race")
            try:
                name, _ = await asyncio.gather(backend._ensure_secret(request),
                                               backend.release_pool("race"))
                assert backend._secrets == {} and backend._secret_locks == {}
                with pytest.raises(ApiException) as missing:
                    admin.read_namespaced_secret(name, "default")
                assert missing.value.status == 404
            finally:
                await backend.close()

        self.run(scenario())


def test_zero_config_from_the_notebook_environment(cluster: dict[str, str], admin: Any) -> None:
    """A kernel started with notebook.env gets a working backend from --backend kubernetes."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("POD_NAME", "POD_NAMESPACE", "POD_IP", "KUBERNETES_SERVICE_HOST")}
    env.update({k: cluster[k] for k in ("KUBECONFIG", "POD_NAME", "POD_NAMESPACE", "POD_IP")})
    code = ("import os; from jupyter_flame.pool.pool import Pool\n"
            "pool = Pool('zero', backend='kubernetes', boot_timeout=30)\n"
            "print(pool.backend.describe(), pool.call(os.getenv, 'POD_NAME'))\n"
            "pool.shutdown()\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    where, runner = done.stdout.split()[-2:]
    assert where == f"({cluster['POD_NAMESPACE']}/{cluster['POD_NAME']})"
    assert runner.startswith(cluster["POD_NAME"] + "-flame-")
    deadline = time.monotonic() + 15
    while runner_pods(admin) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner_pods(admin) == []


def test_gpu_runner_lands_on_the_gpu_node_of_the_product(gpu_cluster: dict[str, str]) -> None:
    from kubernetes import client, config

    from jupyter_flame.pool.pool import Pool

    api = config.new_client_from_config(config_file=gpu_cluster["ADMIN"])
    admin = client.CoreV1Api(api)
    gpu_nodes = {n.metadata.name for n in admin.list_node().items
                 if n.metadata.labels.get("nvidia.com/gpu.product") == "NVIDIA-H100-80GB-HBM3"}
    backend = backend_for(gpu_cluster)
    events: list[Any] = []
    backend.subscribe(events.append)
    right = Pool("gpu-right", backend=backend, boot_timeout=30,
                 spec=RunnerSpec(gpu=1, gpu_type="NVIDIA-H100-80GB-HBM3"))
    wrong = Pool("gpu-wrong", backend=backend, boot_timeout=3,
                 spec=RunnerSpec(gpu=1, gpu_type="NVIDIA-A100-SXM4-80GB"))
    try:
        devices = right.call(os.getenv, "CUDA_VISIBLE_DEVICES")
        assert devices and len(devices.split(",")) == 1
        (runner,) = [e for e in events if e.pool == "gpu-right" and e.phase == "starting"]
        assert runner.details["node"] in gpu_nodes
        with pytest.raises(BootError, match="Unschedulable"):
            wrong.call(int, "1")
    finally:
        right.shutdown()
        wrong.shutdown()
        asyncio.run(backend.close())
        api.close()


def test_missing_downward_api_shows_the_yaml(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    for name in ("POD_NAME", "POD_NAMESPACE", "POD_IP", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    backend = KubernetesBackend(kubeconfig=str(kubeconfig))
    with pytest.raises(ConfigError) as info:
        backend.parent_host()
    text = str(info.value)
    assert "POD_NAME" in text and "fieldPath: metadata.name" in text
    assert "fieldPath: status.podIP" in text and "singleuser.extraEnv" in text
