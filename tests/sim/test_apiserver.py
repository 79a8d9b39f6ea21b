"""The stand-in API server through the official ``kubernetes`` client."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from jupyter_flame.sim.apiserver.launch import ApiServerProcess, start_apiserver

pytestmark = pytest.mark.sim


def _pod(name: str | None = None, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels or {}}
    if name:
        meta["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "main", "image": "python:3.11"}], **spec}}


def _status(exc: ApiException) -> dict[str, Any]:
    return dict(json.loads(exc.body))


def test_starts_fast_and_reports_itself(apiserver: ApiServerProcess) -> None:
    assert apiserver.start_seconds < 2.0  # type: ignore[attr-defined]
    info = json.loads((apiserver.state_dir / "apiserver.json").read_text())
    assert info["url"] == apiserver.url and info["pid"] == apiserver.pid
    assert Path(info["ca_file"]).exists()


def test_version_and_unauthorized(apiserver: ApiServerProcess) -> None:
    anon = client.ApiClient(apiserver.client_configuration())
    anon.configuration.api_key = {}
    assert client.VersionApi(anon).get_code().major == "1"
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(anon).list_namespaced_pod("default")
    assert err.value.status == 401
    assert _status(err.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    bad = client.ApiClient(apiserver.client_configuration(token="nope"))
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(bad).list_namespaced_pod("default")
    assert err.value.status == 401
    anon.close()
    bad.close()


def test_pod_crud_defaults_and_errors(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    pod = v1.create_namespaced_pod(ns, _pod("p1", {"app": "x"}))
    assert pod.metadata.uid and pod.metadata.resource_version and pod.metadata.creation_timestamp
    assert pod.metadata.namespace == ns and pod.status.phase == "Pending"
    spec = pod.spec
    assert (spec.restart_policy, spec.dns_policy, spec.termination_grace_period_seconds,
            spec.scheduler_name) == ("Always", "ClusterFirst", 30, "default-scheduler")
    c = spec.containers[0]
    assert (c.termination_message_path, c.image_pull_policy) == ("/dev/termination-log", "IfNotPresent")
    assert pod.status.qos_class == "BestEffort"
    sized = _pod("sized")
    sized["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "0.5", "memory": "1024Mi", "nvidia.com/gpu": "1"}}
    sized = v1.create_namespaced_pod(ns, sized)
    assert sized.spec.containers[0].resources.limits == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}
    assert sized.spec.containers[0].resources.requests == sized.spec.containers[0].resources.limits
    assert sized.status.qos_class == "Guaranteed"
    v1.delete_namespaced_pod("sized", ns)
    assert v1.read_namespaced_pod("p1", ns).metadata.uid == pod.metadata.uid

    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod(ns, _pod("p1"))
    assert err.value.status == 409
    assert _status(err.value)["message"] == 'pods "p1" already exists'
    assert _status(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("nope", ns)
    assert _status(err.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": 'pods "nope" not found', "reason": "NotFound",
                                  "details": {"name": "nope", "kind": "pods"}, "code": 404}
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod(ns, {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    body = _status(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'Pod "bad" is invalid: spec.containers: Required value'

    # merge, strategic and JSON patches
    v1.patch_namespaced_pod("p1", ns, {"metadata": {"labels": {"b": "2"}, "annotations": {"n": "1"}}})
    got = v1.read_namespaced_pod("p1", ns)
    assert got.metadata.labels == {"app": "x", "b": "2"} and got.metadata.annotations == {"n": "1"}
    v1.patch_namespaced_pod("p1", ns, {"spec": {"containers": [{"name": "main", "image": "python:3.12"}]}})
    got = v1.read_namespaced_pod("p1", ns)
    assert got.spec.containers[0].image == "python:3.12" and got.spec.containers[0].name == "main"
    v1.patch_namespaced_pod("p1", ns, [{"op": "remove", "path": "/metadata/labels/b"}])
    assert v1.read_namespaced_pod("p1", ns).metadata.labels == {"app": "x"}

    # status subresource: only status changes; main update keeps status
    v1.patch_namespaced_pod_status("p1", ns, {"status": {"phase": "Running", "podIP": "10.0.0.7"}})
    got = v1.read_namespaced_pod("p1", ns)
    assert got.status.phase == "Running" and got.status.pod_ip == "10.0.0.7"
    v1.patch_namespaced_pod("p1", ns, {"status": {"phase": "Failed"}})
    assert v1.read_namespaced_pod("p1", ns).status.phase == "Running"

    # spec.nodeName is immutable outside the binding subresource
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod("p1", ns, {"spec": {"nodeName": "n1"}})
    assert err.value.status == 422
    assert _status(err.value)["message"].startswith('Pod "p1" is invalid: spec: Forbidden: pod updates may not change')

    v1.delete_namespaced_pod("p1", ns)
    with pytest.raises(ApiException):
        v1.read_namespaced_pod("p1", ns)


def test_generate_name_and_missing_namespace(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    body = _pod()
    body["metadata"]["generateName"] = "runner-flame-"
    names = {v1.create_namespaced_pod(ns, body).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("runner-flame-") and len(n) == 18 for n in names)
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("no-such-ns", _pod("x"))
    assert err.value.status == 404 and _status(err.value)["message"] == 'namespaces "no-such-ns" not found'


def test_optimistic_concurrency(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    pod = v1.create_namespaced_pod(ns, _pod("c1"))
    pod.metadata.labels = {"v": "1"}
    updated = v1.replace_namespaced_pod("c1", ns, pod)
    assert int(updated.metadata.resource_version) > int(pod.metadata.resource_version)
    pod.metadata.labels = {"v": "2"}
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_pod("c1", ns, pod)
    assert err.value.status == 409
    assert _status(err.value)["message"] == (
        'Operation cannot be fulfilled on pods "c1": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert _status(err.value)["reason"] == "Conflict"


def test_selectors(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod(ns, _pod("a", {"app": "x", "tier": "web"}))
    v1.create_namespaced_pod(ns, _pod("b", {"app": "y"}))
    v1.create_namespaced_pod(ns, _pod("c", {"app": "z", "tier": "db"}))
    v1.patch_namespaced_pod_status("c", ns, {"status": {"phase": "Running"}})

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in v1.list_namespaced_pod(ns, **kw).items)

    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app==x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x, z)") == ["a", "c"]
    assert names(label_selector="app notin (x,z)") == ["b"]
    assert names(label_selector="tier") == ["a", "c"]
    assert names(label_selector="!tier") == ["b"]
    assert names(label_selector="tier,app=z") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Running") == ["c"]
    assert names(field_selector="status.phase!=Running,metadata.name!=a") == ["b"]
    assert names(field_selector="spec.nodeName=") == ["a", "b", "c"]
    listing = v1.list_namespaced_pod(ns)
    assert int(listing.metadata.resource_version) >= max(int(p.metadata.resource_version) for p in listing.items)
    with pytest.raises(ApiException) as err:
        v1.list_namespaced_pod(ns, field_selector="spec.bogus=1")
    assert err.value.status == 400
    all_ns = [p.metadata.name for p in v1.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items]
    assert sorted(all_ns) == ["a", "b", "c"]


def test_watch_from_resource_version(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod(ns, _pod("w0", {"w": "yes"}))
    rv = v1.list_namespaced_pod(ns).metadata.resource_version
    v1.create_namespaced_pod(ns, _pod("w1", {"w": "yes"}))
    v1.create_namespaced_pod(ns, _pod("other", {"w": "no"}))
    v1.patch_namespaced_pod("w1", ns, {"metadata": {"labels": {"w": "no"}}})  # leaves the selection

    def later() -> None:
        time.sleep(0.3)
        v1.create_namespaced_pod(ns, _pod("w2", {"w": "yes"}))
        v1.delete_namespaced_pod("w0", ns)

    threading.Thread(target=later, daemon=True).start()
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_pod, ns, label_selector="w=yes", resource_version=rv,
                       timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 4:
            w.stop()
    assert seen == [("ADDED", "w1"), ("DELETED", "w1"), ("ADDED", "w2"), ("DELETED", "w0")]

    # resourceVersion "0": synthetic ADDED events of current objects first
    seen = [(e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(v1.list_namespaced_pod, ns, resource_version="0", timeout_seconds=1)]
    assert sorted(seen) == [("ADDED", "other"), ("ADDED", "w1"), ("ADDED", "w2")]


def test_watch_too_old_gives_410(tmp_path: Path) -> None:
    with start_apiserver(tmp_path, history_size=5, exit_with_parent=True) as srv:
        api = client.ApiClient(srv.client_configuration())
        v1 = client.CoreV1Api(api)
        rv = v1.list_namespaced_pod("default").metadata.resource_version
        for i in range(8):
            v1.create_namespaced_pod("default", _pod(f"p{i}"))
        resp = v1.list_namespaced_pod("default", watch=True, resource_version=rv, _preload_content=False)
        line = resp.readline() if hasattr(resp, "readline") else resp.data.split(b"\n")[0]
        event = json.loads(line)
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
        assert event["object"]["message"].startswith(f"too old resource version: {rv} (")
        with pytest.raises(ApiException) as err:
            for _ in watch.Watch().stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=2):
                pass
        assert err.value.status == 410
        api.close()


def test_graceful_delete_binding_and_finalizers(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod(ns, _pod("g1"))
    v1.create_namespaced_binding(ns, {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "g1"},
                                      "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}},
                                 _preload_content=False)
    pod = v1.read_namespaced_pod("g1", ns)
    assert pod.spec.node_name == "node-a"
    assert [c.type for c in pod.status.conditions] == ["PodScheduled"]
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod_binding("g1", ns, {"metadata": {"name": "g1"}, "target": {"name": "node-b"}},
                                         _preload_content=False)
    assert err.value.status == 409
    v1.patch_namespaced_pod_status("g1", ns, {"status": {"phase": "Running"}})
    v1.delete_namespaced_pod("g1", ns, grace_period_seconds=20)
    pod = v1.read_namespaced_pod("g1", ns)
    assert pod.metadata.deletion_timestamp is not None and pod.metadata.deletion_grace_period_seconds == 20
    v1.delete_namespaced_pod("g1", ns, body=client.V1DeleteOptions(grace_period_seconds=0))
    with pytest.raises(ApiException):
        v1.read_namespaced_pod("g1", ns)
    # unbound pods go at once
    v1.create_namespaced_pod(ns, _pod("g2"))
    v1.delete_namespaced_pod("g2", ns)
    assert not v1.list_namespaced_pod(ns).items
    # finalizers hold an object until they are removed
    v1.create_namespaced_secret(ns, {"metadata": {"name": "s", "finalizers": ["x/y"]}, "stringData": {}})
    v1.delete_namespaced_secret("s", ns)
    assert v1.read_namespaced_secret("s", ns).metadata.deletion_timestamp is not None
    v1.patch_namespaced_secret("s", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException):
        v1.read_namespaced_secret("s", ns)


def test_garbage_collection_of_owned_objects(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    owner = v1.create_namespaced_pod(ns, _pod("parent"))
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "parent", "uid": owner.metadata.uid,
           "controller": True, "blockOwnerDeletion": True}
    child = _pod()
    child["metadata"].update(generateName="parent-flame-", ownerReferences=[ref])
    runner = v1.create_namespaced_pod(ns, child)
    v1.create_namespaced_binding(ns, {"metadata": {"name": runner.metadata.name},
                                      "target": {"name": "node-a"}}, _preload_content=False)
    v1.create_namespaced_secret(ns, {"metadata": {"name": "sec", "ownerReferences": [ref]}, "data": {}})
    other = v1.create_namespaced_secret(ns, {"metadata": {"name": "keep"}})
    assert other.type == "Opaque"
    v1.delete_namespaced_pod("parent", ns)
    assert [s.metadata.name for s in v1.list_namespaced_secret(ns).items] == ["keep"]
    left = v1.read_namespaced_pod(runner.metadata.name, ns)
    assert left.metadata.deletion_timestamp is not None  # bound pod: graceful path
    v1.delete_namespaced_pod(runner.metadata.name, ns, grace_period_seconds=0)
    assert not v1.list_namespaced_pod(ns).items


def test_events_and_logs(apiserver: ApiServerProcess, kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    pod = v1.create_namespaced_pod(ns, _pod("lg"))
    for reason in ("Scheduled", "Pulled"):
        v1.create_namespaced_event(ns, {
            "metadata": {"generateName": "lg."}, "reason": reason, "type": "Normal", "message": reason,
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": "lg", "uid": pod.metadata.uid},
            "source": {"component": "sim-kubelet"}})
    fs = f"involvedObject.name=lg,involvedObject.namespace={ns},involvedObject.kind=Pod,involvedObject.uid={pod.metadata.uid}"
    assert sorted(e.reason for e in v1.list_namespaced_event(ns, field_selector=fs).items) == ["Pulled", "Scheduled"]
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("lg", ns)
    assert err.value.status == 400 and "is waiting to start" in _status(err.value)["message"]
    log = apiserver.log_dir / ns / "lg" / "main.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\nthree\n")
    assert v1.read_namespaced_pod_log("lg", ns) == "one\ntwo\nthree\n"
    assert v1.read_namespaced_pod_log("lg", ns, container="main", tail_lines=1) == "three\n"
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("lg", ns, container="nope")
    assert err.value.status == 400

