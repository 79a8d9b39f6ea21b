"""The Kubernetes backend's pure parts: reading pod status, API errors, names. No cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from jupyter_flame.backends.kubernetes.api import api_error
from jupyter_flame.backends.kubernetes.backend import KubernetesBackend
from jupyter_flame.backends.kubernetes.cleanup import secret_name
from jupyter_flame.backends.kubernetes.pod_template import RunnerPodTemplate, build_runner_pod
from jupyter_flame.backends.kubernetes.watch import Observation, observe
from jupyter_flame.errors import BackendError


def pod(phase: str = "Pending", node: str = "", state: dict[str, Any] | None = None,
        conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    statuses = [{"name": "runner", "state": state}] if state is not None else []
    return {
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions or [],
                   "containerStatuses": statuses, **status},
    }


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}


@pytest.mark.parametrize(("manifest", "expected"), [
    (pod(), Observation(phase="scheduling")),
    (pod(conditions=[UNSCHEDULABLE]),
     Observation(phase="scheduling", reason="Unschedulable", message=UNSCHEDULABLE["message"])),
    (pod(node="n1", state={"waiting": {"reason": "ContainerCreating"}}),
     Observation(phase="pulling", reason="ContainerCreating", node="n1")),
    (pod(node="n1", state={"waiting": {"reason": "ErrImagePull", "message": "not found"}}),
     Observation(failure=("ErrImagePull", "not found"), node="n1")),
    (pod(node="n1", state={"waiting": {"reason": "CreateContainerConfigError",
                                       "message": 'secret "s" not found'}}),
     Observation(failure=("CreateContainerConfigError", 'secret "s" not found'), node="n1")),
    (pod("Running", "n1", {"running": {}}, podIP="10.0.0.5"),
     Observation(phase="starting", node="n1", pod_ip="10.0.0.5")),
    (pod("Failed", "n1", {"terminated": {"exitCode": 3, "reason": "Error", "message": "tail"}}),
     Observation(exit_code=3, terminated_reason="Error", terminated_message="tail", node="n1")),
    (pod("Succeeded", "n1", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
     Observation(exit_code=0, terminated_reason="Completed", node="n1")),
    (pod("Failed", "n1", reason="Evicted", message="The node was low on resource: memory."),
     Observation(exit_code=1, terminated_reason="Evicted",
                 terminated_message="The node was low on resource: memory.", node="n1")),
])
def test_observe(manifest: dict[str, Any], expected: Observation) -> None:
    assert observe(manifest) == expected


def api_exception(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message,
                           "reason": reason, "code": status})
    return exc


def test_403_names_the_rule_and_the_fix() -> None:
    exc = api_exception(403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:'
                        'ns:nb" cannot create resource "pods" in API group "" in the namespace '
                        '"ns"')
    error = api_error(exc, "create", "pods", "ns")
    assert isinstance(error, BackendError)
    assert (error.status, error.reason) == (403, "Forbidden")
    text = str(error)
    assert 'cannot create resource "pods"' in text
    assert 'resources: ["pods"]' in text and 'verbs: ["create"]' in text
    assert "kubectl apply -n ns -f deploy/rbac.yaml" in text


def test_403_for_a_missing_runner_service_account() -> None:
    exc = api_exception(403, "Forbidden", 'error looking up service account ns/jupyter-flame-'
                        'runner: serviceaccount "jupyter-flame-runner" not found')
    text = str(api_error(exc, "create", "pods", "ns"))
    assert "creates jupyter-flame-runner" in text and "service_account=" in text


def test_other_api_errors_carry_status_reason_message() -> None:
    error = api_error(api_exception(422, "Invalid", "spec.containers[0].image: Required value"),
                      "create", "pods", "ns")
    assert (error.status, error.reason) == (422, "Invalid")
    assert "422 Invalid: spec.containers[0].image: Required value" in str(error)
    unreachable = api_error(ConnectionRefusedError("refused"), "get", "pods", "ns")
    assert "unreachable" in str(unreachable) and unreachable.status is None


def test_secret_names_are_valid_and_per_kernel() -> None:
    a = secret_name("nb-0", "gpu=1,memory=24Gi", "6a1f2b7c-0c4e-4a59-9d7e-5f1e2d3c4b5a")
    b = secret_name("nb-0", "gpu=1,memory=24Gi", "0b1f2b7c-0c4e-4a59-9d7e-5f1e2d3c4b5a")
    assert a != b and a.startswith("nb-0-flame-") and a.endswith("-6a1f2b7c-key")
    for name in (a, b, secret_name("x" * 250, "P" * 100, "")):
        assert len(name) <= 253
        assert all(c.islower() or c.isdigit() or c in "-." for c in name), name


def test_backend_service_account_reaches_every_kind_of_template() -> None:
    plain = KubernetesBackend(pod_name="nb", namespace="ns", service_account="mine")
    assert isinstance(plain.template, RunnerPodTemplate)
    assert plain.template.service_account == "mine"
    explicit = KubernetesBackend(pod_name="nb", namespace="ns", service_account="mine",
                                 template=RunnerPodTemplate(service_account="theirs"))
    assert isinstance(explicit.template, RunnerPodTemplate)
    assert explicit.template.service_account == "theirs"

    def user_template(parent: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"priorityClassName": "x"}}

    wrapped = KubernetesBackend(pod_name="nb", namespace="ns", service_account="mine",
                                template=user_template)
    assert callable(wrapped.template)
    # the user's own callable (errors name it); the account reaches the pod it builds
    assert wrapped.template is user_template
    parent = {"metadata": {"name": "nb", "namespace": "ns", "uid": "u1"},
              "spec": {"containers": [{"name": "notebook", "image": "img"}]}}
    built = build_runner_pod(parent, template=wrapped.template, pool="p", runner_id="r1",
                             kernel_id="k", secret_name="s", parent_address=("10.0.0.1", 1),
                             service_account=wrapped.service_account)
    assert built["spec"]["serviceAccountName"] == "mine"
    assert built["spec"]["priorityClassName"] == "x"


# --- watch recovery and pod deletion, with fakes ------------------------------------------------
def test_watcher_survives_a_failed_reread_after_410() -> None:
    from jupyter_flame.backends.kubernetes import watch as _kube_watch

    class Expired:
        def stream(self, *args: Any, **kwargs: Any) -> Any:
            raise ApiException(status=410, reason="Gone")

        def stop(self) -> None:
            pass

    rereads: list[str] = []

    def reread() -> tuple[dict[str, Any] | None, str | None]:
        rereads.append("x")
        if len(rereads) == 1:
            raise BackendError("Cannot get pods in namespace ns: the API is unreachable.")
        return None, None  # the pod is gone

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        delivered: list[str] = []
        gone = loop.create_future()

        def deliver(kind: str, obj: dict[str, Any]) -> None:
            delivered.append(kind)
            if kind == "GONE" and not gone.done():
                gone.set_result(None)

        watcher = _kube_watch.Watcher(lambda *a, **k: None, "ns", "metadata.name=p", "1",
                                      deliver, loop, reread, make_watch=Expired)
        watcher.start()
        try:
            await asyncio.wait_for(gone, 10)
        finally:
            watcher.stop()
        return delivered

    assert asyncio.run(scenario()) == ["GONE"]
    assert len(rereads) == 2


def test_a_failed_pod_delete_does_not_stop_the_next_one() -> None:
    from jupyter_flame.backends.base import BootRequest, RunnerHandle
    from jupyter_flame.backends.kubernetes.runner_pod import PodRunners, Runner

    class Response:
        status, data = 200, b"{}"

    class Core:
        def __init__(self) -> None:
            self.deletes: list[int] = []

        def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Response:
            self.deletes.append(kwargs["grace_period_seconds"])
            if len(self.deletes) == 1:
                raise ApiException(status=503, reason="Service Unavailable")
            return Response()

    class Pods(PodRunners):
        namespace = "ns"

        def __init__(self, core: Core) -> None:
            super().__init__()
            self._core = core
            self._runners = {}

        @property
        def core(self) -> Any:
            return self._core

        async def boot(self, request: BootRequest) -> RunnerHandle:
            raise NotImplementedError

        async def close(self) -> None:
            pass

    async def scenario() -> list[int]:
        core = Core()
        pods = Pods(core)
        loop = asyncio.get_running_loop()
        runner = Runner(RunnerHandle("r1", "p"), "nb-flame-x", "uid", "10.0.0.1:1",
                        gone=loop.create_future())
        with pytest.raises(BackendError, match="503"):
            await pods._delete(runner, 0)
        await pods._delete(runner, 0)  # the first never reached the API: sent again
        await pods._delete(runner, 0)  # this one did: not repeated
        return core.deletes

    assert asyncio.run(scenario()) == [0, 0]
