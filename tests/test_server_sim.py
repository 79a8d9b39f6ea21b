"""The server extension against the local Kubernetes stand-in: a server that runs "in" the
notebook pod (``notebook.env``) lists its kernels' runner pods by label, shows their logs,
deletes them, maps Kubernetes' 403 and an unreachable API server, and reaps the pods of a
SIGKILLed kernel (finished ones included)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .server_harness import SERVER_CONFIG, runners, start_kernel, wait_for
from .sim_harness import Sim

pytestmark = [pytest.mark.kernel, pytest.mark.sim, pytest.mark.slow]


@pytest.fixture
def jp_server_config(sim: Sim, jp_environ: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in sim.env.items():  # the server (and its kernels) "run in" the pod
        monkeypatch.setenv(key, value)
    return json.loads(json.dumps(SERVER_CONFIG))


def _pods(sim: Sim, pool: str) -> list[Any]:
    return sim.runner_pods(f"jupyter-flame/pool={pool}")


async def test_runner_pod_listed_logged_and_deleted(jp_fetch: Any, jp_serverapp: Any,
                                                     sim: Sim) -> None:
    kernel = await start_kernel(jp_fetch, jp_serverapp, "pods.ipynb")
    try:
        await kernel.run("%load_ext jupyter_flame")
        await kernel.run("%%flame --pool podweb --cpu 500m --memory 256Mi\nx = 1")
        [pod] = _pods(sim, "podweb")

        async def listed() -> Any:
            rows = [r for r in await runners(jp_fetch) if r["pod"] == pod.metadata.name]
            return rows[0] if rows and rows[0]["activity"] == "idle" and rows[0]["rss"] else None

        row = await wait_for(listed, 20, "the runner pod listed, idle, with its memory use "
                             "(its live annotation)")
        assert row["backend"] == "kubernetes" and row["namespace"] == "default"
        assert row["parent"] == sim.env["POD_NAME"] and row["kernel_id"] == kernel.id
        assert row["notebook"] == "pods.ipynb" and row["phase"] == "Running"
        assert row["resources"] == {"cpu": "500m", "memory": "256Mi"} and row["node"]
        assert row["cpu_percent"] is not None and row["orphan"] == ""

        resp = await jp_fetch("flame", "api", "runners", row["id"], "logs")
        assert any("dialing" in line for line in json.loads(resp.body)["lines"])

        resp = await jp_fetch("flame", "api", "runners", row["id"], method="DELETE")
        assert json.loads(resp.body)["action"] == "deleted"

        async def gone() -> bool:
            return not _pods(sim, "podweb")

        await wait_for(gone, 20, "the deleted pod to leave the API")
    finally:
        kernel.close()


async def test_kubernetes_403_names_the_missing_rule(jp_fetch: Any, jp_serverapp: Any,
                                                     sim: Sim) -> None:
    kernel = await start_kernel(jp_fetch, jp_serverapp)
    role = sim.rbac.read_namespaced_role("jupyter-flame", "default")
    original = sim.rbac.api_client.sanitize_for_serialization(role.rules)  # camelCase JSON
    try:
        await kernel.run("%load_ext jupyter_flame")
        await kernel.run("%%flame --pool forbidden\nx = 1")
        [pod] = _pods(sim, "forbidden")
        row = await wait_for(lambda: _row(jp_fetch, pod.metadata.name), 10, "the pod listed")
        rules = [dict(r, verbs=[v for v in r["verbs"] if v != "delete"])
                 if r["resources"] == ["pods"] else r for r in original]
        sim.rbac.patch_namespaced_role("jupyter-flame", "default", {"rules": rules})
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("flame", "api", "runners", row["id"], method="DELETE")
        body = json.loads(info.value.response.body)
        assert info.value.code == 403 and body["kubernetes_status"] == 403
        assert 'verbs: ["delete"]' in body["message"] and "deploy/rbac.yaml" in body["message"]
        assert _pods(sim, "forbidden")  # nothing deleted
    finally:
        sim.rbac.patch_namespaced_role("jupyter-flame", "default", {"rules": original})
        await kernel.run("%flame shutdown --all")
        kernel.close()


async def _row(jp_fetch: Any, pod: str) -> Any:
    return next((r for r in await runners(jp_fetch) if r["pod"] == pod), None)


async def test_reaper_deletes_the_pods_of_a_killed_kernel(jp_fetch: Any, jp_serverapp: Any,
                                                          sim: Sim) -> None:
    """The runner notices its kernel is gone and exits (its pod is left Succeeded or
    Failed); the reaper deletes the pod within 30 s."""
    kernel = await start_kernel(jp_fetch, jp_serverapp)
    try:
        await kernel.run("%load_ext jupyter_flame")
        await kernel.run("%%flame --pool reaped\nx = 1")
        [pod] = _pods(sim, "reaped")
        os.kill(kernel.pid, signal.SIGKILL)

        async def gone() -> bool:
            return not _pods(sim, "reaped")

        await wait_for(gone, 30, "the reaper to delete the runner pod", step=0.5)
        reaped = jp_serverapp.web_app.settings["jupyter_flame"].reaped
        assert any(r["pod"] == pod.metadata.name and r["orphan"] == "kernel gone"
                   for r in reaped)
    finally:
        kernel.close()


async def test_unreachable_api_server_is_503(sim: Sim, jp_fetch: Any, jp_serverapp: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    from jupyter_flame.server.kube import Kube

    flame = jp_serverapp.web_app.settings["jupyter_flame"]
    dead = client.Configuration()
    dead.host = "https://127.0.0.1:9"  # nothing listens there
    monkeypatch.setattr(flame, "kube", Kube(client.ApiClient(dead), "default",
                                            sim.env["POD_NAME"]))
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("flame", "api", "runners")
    body = json.loads(info.value.response.body)
    assert info.value.code == 503 and "unreachable" in body["message"]
    assert body["runners"] == [] and body["source"] == "kubernetes"
    for method, path in (("DELETE", ("runners", "pod~default~some-pod")),
                         ("GET", ("runners", "pod~default~some-pod", "logs"))):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("flame", "api", *path, method=method)
        assert info.value.code == 503, (method, path)
