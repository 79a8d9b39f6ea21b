"""More API semantics of the stand-in (official client): paging, nodes, propagation, validation."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from jupyter_flame.sim.apiserver.launch import ApiServerProcess

pytestmark = pytest.mark.sim


def _pod(name: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels or {}}
    if name:
        meta["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "main", "image": "python:3.11"}]}}


def _status(exc: ApiException) -> dict[str, Any]:
    return dict(json.loads(exc.body))


def test_secrets_nodes_paging_and_collections(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    sec = v1.create_namespaced_secret(ns, {"metadata": {"name": "tok"}, "stringData": {"t": "abc"}})
    assert sec.data == {"t": "YWJj"} and sec.string_data is None
    for i in range(5):
        v1.create_namespaced_secret(ns, {"metadata": {"name": f"s{i}", "labels": {"batch": "1"}}})
    page = v1.list_namespaced_secret(ns, limit=2)
    names = [s.metadata.name for s in page.items]
    while page.metadata._continue:
        page = v1.list_namespaced_secret(ns, limit=2, _continue=page.metadata._continue)
        names += [s.metadata.name for s in page.items]
    assert names == ["s0", "s1", "s2", "s3", "s4", "tok"]
    v1.delete_collection_namespaced_secret(ns, label_selector="batch=1")
    assert [s.metadata.name for s in v1.list_namespaced_secret(ns).items] == ["tok"]

    node = f"node-{ns}"
    v1.create_node({"metadata": {"name": node, "labels": {"gpu": "yes"}},
                    "status": {"capacity": {"cpu": "4", "nvidia.com/gpu": "2"},
                               "conditions": [{"type": "Ready", "status": "False"},
                                              {"type": "MemoryPressure", "status": "False"}]}})
    v1.patch_node_status(node, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    got = v1.read_node(node)
    assert {c.type: c.status for c in got.status.conditions} == {"Ready": "True", "MemoryPressure": "False"}
    assert got.status.capacity["nvidia.com/gpu"] == "2"
    assert [n.metadata.name for n in v1.list_node(label_selector="gpu=yes").items] == [node]
    v1.delete_node(node)


def test_watch_all_namespaces_by_node(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    rv = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n9").metadata.resource_version
    v1.create_namespaced_pod(ns, _pod("unbound"))
    v1.create_namespaced_pod(ns, _pod("bound"))
    v1.create_namespaced_pod_binding("bound", ns, {"metadata": {"name": "bound"}, "target": {"name": "n9"}},
                                     _preload_content=False)
    events = []
    w = watch.Watch()
    for ev in w.stream(v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=n9",
                       resource_version=rv, timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.name, ev["object"].spec.node_name))
        w.stop()
    assert events == [("ADDED", "bound", "n9")]


def test_foreground_and_orphan_propagation(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    for policy in ("Foreground", "Orphan"):
        owner = v1.create_namespaced_secret(ns, {"metadata": {"name": "owner"}})
        ref = {"apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid}
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "dep", "ownerReferences": [ref]}})
        v1.delete_namespaced_secret("owner", ns, propagation_policy=policy)
        assert [s.metadata.name for s in v1.list_namespaced_secret(ns).items] == []
        deps = v1.list_namespaced_config_map(ns).items
        if policy == "Foreground":
            assert deps == []
        else:
            assert [d.metadata.name for d in deps] == ["dep"] and not deps[0].metadata.owner_references
            v1.delete_namespaced_config_map("dep", ns)


def test_watch_list_initial_events_end_with_bookmark(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod(ns, _pod("a"))
    resp = v1.list_namespaced_pod(ns, watch=True, send_initial_events=True, allow_watch_bookmarks=True,
                                  resource_version_match="NotOlderThan", timeout_seconds=1,
                                  _preload_content=False)
    events = [json.loads(line) for line in resp.data.splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_follow_logs(apiserver: ApiServerProcess, kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod(ns, _pod("f"))
    v1.patch_namespaced_pod_status("f", ns, {"status": {"phase": "Running", "containerStatuses": [
        {"name": "main", "ready": True, "restartCount": 0, "image": "python:3.11", "imageID": "",
         "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}})
    log = apiserver.log_dir / ns / "f" / "main.log"
    log.parent.mkdir(parents=True)
    log.write_text("a\n")

    def later() -> None:
        time.sleep(0.3)
        with log.open("a") as fh:
            fh.write("b\n")
        time.sleep(0.3)
        v1.patch_namespaced_pod_status("f", ns, {"status": {"phase": "Succeeded"}})

    threading.Thread(target=later, daemon=True).start()
    resp = v1.read_namespaced_pod_log("f", ns, follow=True, _preload_content=False)
    assert resp.data == b"a\nb\n"


def test_metadata_validation(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod(ns, _pod("v", {"kernel": "not valid!"}))
    body = _status(err.value)
    assert err.value.status == 422 and body["details"]["causes"][0]["field"] == "metadata.labels"
    assert body["message"].startswith('Pod "v" is invalid: metadata.labels: Invalid value: "not valid!": a valid label')
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod(ns, _pod("Bad_Name"))
    assert _status(err.value)["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain')
    long = _pod()
    long["metadata"]["generateName"] = "x" * 70
    assert len(v1.create_namespaced_pod(ns, long).metadata.name) == 63


def test_owner_in_another_namespace_does_not_count(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    owner = v1.create_namespaced_secret("default", {"metadata": {"generateName": "owner-"}})
    ref = {"apiVersion": "v1", "kind": "Secret", "name": owner.metadata.name, "uid": owner.metadata.uid}
    v1.create_namespaced_secret(ns, {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    assert v1.list_namespaced_secret(ns).items == []  # collected at once, like the real GC
    v1.delete_namespaced_secret(owner.metadata.name, "default")


def test_pod_spec_validation_like_the_real_server(kube: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(kube)
    bad = _pod("v2")
    bad["spec"]["containers"][0].update(
        volumeMounts=[{"name": "kube-api-access-gone", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        resources={"requests": {"cpu": "2", "nvidia.com/gpu": "1"}, "limits": {"cpu": "1", "nvidia.com/gpu": "2"}})
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod(ns, bad)
    causes = [(c["field"], c["message"]) for c in _status(err.value)["details"]["causes"]]
    assert causes == [
        ("spec.containers[0].volumeMounts[0].name", 'Not found: "kube-api-access-gone"'),
        ("spec.containers[0].resources.requests[cpu]", 'Invalid value: "2": must be less than or equal to cpu limit of 1'),
        ("spec.containers[0].resources.requests[nvidia.com/gpu]",
         'Invalid value: "1": must be equal to nvidia.com/gpu limit of 2'),
    ]
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_secret(ns, {"metadata": {"name": "raw"}, "data": {"k": "not base64!"}})
    assert err.value.status == 400
