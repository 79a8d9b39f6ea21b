"""Field ownership and server-side apply conflicts (pure functions, table-driven)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jupyter_flame.sim.apiserver import managed
from jupyter_flame.sim.apiserver.status import ApiError

NOW = "2026-12-07T00:00:00Z"


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"containers": [{"name": "main", "image": "python:3.11"}], **spec},
            "status": {"phase": "Pending"}}


def test_fields_v1_of_a_pod() -> None:
    obj = pod(tolerations=[{"key": "a", "operator": "Exists"}])
    obj["metadata"]["labels"] = {"app": "web"}
    obj["metadata"]["finalizers"] = ["x"]
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "protocol": "TCP"}]
    tree = managed.to_fields_v1(set(managed.leaves(obj, managed._kind_schema(obj) or {})))
    assert tree == {
        "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {'v:"x"': {}}},
        "f:spec": {
            "f:containers": {'k:{"name":"main"}': {
                ".": {}, "f:name": {}, "f:image": {},
                "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                    ".": {}, "f:containerPort": {}, "f:protocol": {}}}}},
            "f:tolerations": {},  # an atomic list is one leaf
        },
    }
    assert managed.from_fields_v1(tree) == set(managed.leaves(obj, managed._kind_schema(obj) or {}))


@pytest.mark.parametrize(("path", "text"), [
    (("f:data", "f:mode"), ".data.mode"),
    (("f:spec", "f:containers", 'k:{"name":"main"}', "f:image"), '.spec.containers[name="main"].image'),
    (("f:metadata", "f:finalizers", 'v:"x"'), '.metadata.finalizers[="x"]'),
    (("f:spec", "f:containers", 'k:{"name":"a"}', "f:ports", 'k:{"containerPort":80,"protocol":"TCP"}', "."),
     '.spec.containers[name="a"].ports[containerPort=80,protocol="TCP"]'),
])
def test_shown_paths(path: tuple[str, ...], text: str) -> None:
    assert managed.shown(path) == text


def cm(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": data}


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {(e["manager"], e["operation"]): {managed.shown(p) for p in managed.from_fields_v1(e["fieldsV1"])}
            for e in obj["metadata"]["managedFields"]}


def merged(live: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(live)
    out["data"] = {**live.get("data", {}), **applied.get("data", {})}
    return out


def test_updates_move_ownership() -> None:
    first = cm(a="1", b="2")
    managed.record_update(None, first, "kubectl-create", NOW)
    assert owners(first) == {("kubectl-create", "Update"): {".data.a", ".data.b"}}
    second = copy.deepcopy(first)
    second["data"]["b"] = "3"
    managed.record_update(first, second, "editor", NOW)
    assert owners(second) == {("kubectl-create", "Update"): {".data.a"}, ("editor", "Update"): {".data.b"}}
    same = copy.deepcopy(second)
    managed.record_update(second, same, "noop", NOW)
    assert owners(same) == owners(second)


@pytest.mark.parametrize(("applied", "force", "error", "data", "owned"), [
    # same value as the other manager's: shared, no conflict
    (cm(a="1"), False, None, {"a": "1", "b": "2"}, {".data.a"}),
    # a different value for a field someone else set: 409 naming them and the field
    (cm(a="9"), False, 'Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a', None, None),
    (cm(a="9", b="8"), False, 'Apply failed with 2 conflicts: conflicts with "kubectl-create" using v1:\n'
     "- .data.a\n- .data.b", None, None),
    # forced: the applier takes the field
    (cm(a="9"), True, None, {"a": "9", "b": "2"}, {".data.a"}),
    # new fields: no conflict
    (cm(c="3"), False, None, {"a": "1", "b": "2", "c": "3"}, {".data.c"}),
])
def test_apply_conflicts(applied: dict[str, Any], force: bool, error: str | None, data: dict[str, str] | None,
                         owned: set[str] | None) -> None:
    live = cm(a="1", b="2")
    managed.record_update(None, live, "kubectl-create", NOW)
    if error is not None:
        with pytest.raises(ApiError) as info:
            managed.apply(live, merged(live, applied), applied, "kubectl", NOW, force)
        status = info.value.status
        assert status["code"] == 409 and status["reason"] == "Conflict" and status["message"] == error
        assert {c["reason"] for c in status["details"]["causes"]} == {"FieldManagerConflict"}
        return
    out = managed.apply(live, merged(live, applied), applied, "kubectl", NOW, force)
    assert out["data"] == data
    assert owners(out)[("kubectl", "Apply")] == owned
    if force:
        assert ".data.a" not in owners(out)[("kubectl-create", "Update")]


def test_apply_removes_what_it_no_longer_applies() -> None:
    live = cm()
    live["data"] = {}
    first = managed.apply(live, merged(live, cm(a="1", b="2")), cm(a="1", b="2"), "kubectl", NOW, False)
    assert first["data"] == {"a": "1", "b": "2"}
    second = managed.apply(first, merged(first, cm(a="1")), cm(a="1"), "kubectl", NOW, False)
    assert second["data"] == {"a": "1"}
    assert owners(second)[("kubectl", "Apply")] == {".data.a"}
    # a field another manager also owns stays when the applier drops it
    shared = copy.deepcopy(first)
    managed.record_update(first, shared, "other", NOW)  # no change: nothing moves
    other = copy.deepcopy(first)
    other["data"]["b"] = "2"
    other["metadata"]["managedFields"].append({"manager": "other", "operation": "Update", "apiVersion": "v1",
                                               "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:b": {}}}})
    third = managed.apply(other, merged(other, cm(a="1")), cm(a="1"), "kubectl", NOW, False)
    assert third["data"] == {"a": "1", "b": "2"}
