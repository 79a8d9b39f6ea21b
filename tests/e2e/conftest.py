"""The cluster the end-to-end suite runs against: a real one, or the stand-in.

Against a real cluster (kind, minikube, a cloud one), set:

``JUPYTER_FLAME_E2E_KUBECONFIG``
    A kubeconfig path, or ``in-cluster`` for the pod's service account. Its user
    needs the rights of ``deploy/rbac.yaml`` (the ``jupyter-flame`` Role) in the
    namespace, and ``deploy/rbac.yaml`` must be applied there (runner pods use its
    ``jupyter-flame-runner`` ServiceAccount).
``JUPYTER_FLAME_E2E_NAMESPACE``
    The namespace (default: ``$POD_NAMESPACE``, else ``default``).
``JUPYTER_FLAME_E2E_IMAGE``
    The runner image, with this jupyter-flame installed (default: the image of
    the notebook pod's container, cloned as the product does).
``POD_NAME``, ``POD_IP`` (required)
    What the product itself needs: the *notebook pod* runners are cloned from and
    owned by, and the address the test process listens on for runners to dial.
    The honest minimum is to run the suite inside a pod of that cluster, with
    the downward API setting ``POD_NAME``/``POD_NAMESPACE``/``POD_IP`` (see
    ``deploy/``); from outside, ``POD_NAME`` must name a running pod of the
    namespace and ``POD_IP`` an address of this machine that pods can reach.

Unset ``JUPYTER_FLAME_E2E_KUBECONFIG``: the suite starts the stand-in
(``jupyter flame sim up``) once per session, uses its notebook pod and token
(``DIR/notebook.env``: RBAC applies as in a pod) and stops it at the end.

Tests marked ``standin_only`` use the stand-in's own node agents (their process
records, their kubelet API certificates); they skip on a real cluster.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_flame import KubernetesBackend, RunnerPodTemplate

KUBECONFIG_VAR = "JUPYTER_FLAME_E2E_KUBECONFIG"
NAMESPACE_VAR = "JUPYTER_FLAME_E2E_NAMESPACE"
IMAGE_VAR = "JUPYTER_FLAME_E2E_IMAGE"
MANAGED = "app.kubernetes.io/managed-by=jupyter-flame"
EXTERNAL = bool(os.environ.get(KUBECONFIG_VAR))


@dataclass
class Cluster:
    """Where the suite runs, and how the product and the tests reach it.

    ``kubeconfig`` is what the product uses (None: in-cluster); ``core`` is a
    ``CoreV1Api`` the tests read back with (the same credentials on a real
    cluster, the admin's on the stand-in); ``dir`` is the stand-in's state dir.
    """

    standin: bool
    namespace: str
    pod_name: str
    pod_ip: str
    kubeconfig: str | None
    image: str | None
    core: Any
    dir: Path | None = None

    def env(self) -> dict[str, str]:
        """The environment of a process that believes it runs in the notebook pod."""
        env = {"POD_NAME": self.pod_name, "POD_NAMESPACE": self.namespace, "POD_IP": self.pod_ip}
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def backend(self) -> KubernetesBackend:
        """A KubernetesBackend for the notebook pod (with the runner image, if one is set)."""
        template = RunnerPodTemplate(image=self.image) if self.image else None
        return KubernetesBackend(namespace=self.namespace, pod_name=self.pod_name,
                                 pod_ip=self.pod_ip, kubeconfig=self.kubeconfig,
                                 template=template)  # fmt: skip

    def runner_pods(self, pool: str | None = None) -> list[Any]:
        """Runner pods of our notebook pod (of ``pool``, if given), deleting ones included."""
        selector = f"{MANAGED},jupyter-flame/parent={self.pod_name}"
        if pool is not None:
            selector += f",jupyter-flame/pool={pool}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def wait_no_runner_pods(self, pool: str, timeout: float) -> list[str]:
        """Names of ``pool``'s runner pods still there after up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            names = [p.metadata.name for p in self.runner_pods(pool)]
            if not names or time.monotonic() > deadline:
                return names
            time.sleep(0.1)


def unique(prefix: str) -> str:
    """A pool name no other run of the suite on the same cluster uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def close(backend: KubernetesBackend) -> None:
    """Close a backend made by :meth:`Cluster.backend` (outside any event loop)."""
    asyncio.run(backend.close())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a real cluster: stop at once if the notebook pod is not named, else skip
    ``standin_only`` tests, saying why."""
    if not EXTERNAL:
        return
    missing = [v for v in ("POD_NAME", "POD_IP") if not os.environ.get(v)]
    if missing:
        raise pytest.UsageError(
            f"{KUBECONFIG_VAR} is set but not {' and '.join(missing)}: runner pods are cloned "
            "from the notebook pod (POD_NAME) and dial the test process back at POD_IP. Run "
            "the suite inside a pod of the cluster with the downward API env (deploy/), or "
            "set POD_NAME to a running pod and POD_IP to an address of this machine pods reach."
        )
    for item in items:
        mark = item.get_closest_marker("standin_only")
        if mark is not None:
            why = mark.kwargs.get("reason", "uses the stand-in's node agents")
            item.add_marker(pytest.mark.skip(
                reason=f"stand-in only ({why}); {KUBECONFIG_VAR} names a real cluster"))  # fmt: skip


def _client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def _external() -> Cluster:
    value = os.environ[KUBECONFIG_VAR]
    kubeconfig = None if value == "in-cluster" else str(Path(value).expanduser().resolve())
    namespace = (os.environ.get(NAMESPACE_VAR) or os.environ.get("POD_NAMESPACE")
                 or "default")  # fmt: skip
    return Cluster(False, namespace, os.environ["POD_NAME"], os.environ["POD_IP"], kubeconfig,
                   os.environ.get(IMAGE_VAR) or None, _client(kubeconfig))  # fmt: skip


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jupyter_flame.sim", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster of the session (see the module docstring)."""
    if EXTERNAL:
        found = _external()
        yield found
        left = [p.metadata.name for p in found.runner_pods()]
        assert not left, f"runner pods left behind on the cluster: {left}"
        return
    d = Path(tempfile.mkdtemp(prefix="jupyter-flame-e2e-"))
    image = os.environ.get(IMAGE_VAR) or None
    up = _sim("up", "--dir", str(d), "--exit-with", str(os.getpid()),  # a killed run leaves none
              *(["--images", image] if image else []))
    if up.returncode != 0:
        _sim("down", "--dir", str(d))
        pytest.fail(f"sim up failed:\n{up.stdout}\n{up.stderr}")
    env = dict(line.split("=", 1) for line in (d / "notebook.env").read_text().splitlines()
               if "=" in line)  # fmt: skip
    try:
        standin = Cluster(
            True,
            env["POD_NAMESPACE"],
            env["POD_NAME"],
            env["POD_IP"],
            env["KUBECONFIG"],
            image,
            _client(str(d / "admin.kubeconfig")),
            d,
        )
        yield standin
        left = [p.metadata.name for p in standin.runner_pods()]
        assert not left, f"runner pods left behind: {left}"
    finally:
        _sim("down", "--dir", str(d))


@pytest.fixture
def backend(cluster: Cluster) -> Iterator[KubernetesBackend]:
    """A fresh backend for one test, closed afterwards."""
    made = cluster.backend()
    try:
        yield made
    finally:
        close(made)
