"""Pure pieces of the stand-in API server: selectors, patches, RBAC, GC, protobuf."""

from __future__ import annotations

import pytest

from jupyter_flame.sim import quantity
from jupyter_flame.sim.apiserver import gc, patch, protobuf, rbac
from jupyter_flame.sim.apiserver.selectors import Selector
from jupyter_flame.sim.apiserver.status import ApiError

# Pure functions: no stand-in is started, so these run without the `sim` marker.


def _obj(labels: dict[str, str], **extra: object) -> dict[str, object]:
    return {"metadata": {"name": "x", "namespace": "ns", "labels": labels}, **extra}


@pytest.mark.parametrize(("text", "labels", "ok"), [
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a in (b, c),d", {"a": "c", "d": ""}, True),
    ("a notin (b)", {"a": "b"}, False),
    ("!a", {"b": "1"}, True),
    ("example.com/role=gpu", {"example.com/role": "gpu"}, True),
])
def test_label_selectors(text: str, labels: dict[str, str], ok: bool) -> None:
    assert Selector.parse(text, None, "pods").matches(_obj(labels)) is ok


def test_field_selectors_and_errors() -> None:
    ev = {"metadata": {"name": "e", "namespace": "ns"}, "type": "Warning",
          "involvedObject": {"kind": "Pod", "name": "p", "uid": "u"}}
    assert Selector.parse(None, "involvedObject.name=p,type=Warning", "events").matches(ev)
    assert not Selector.parse(None, "involvedObject.uid!=u", "events").matches(ev)
    with pytest.raises(ApiError) as err:
        Selector.parse(None, "spec.nodeName=x", "secrets")
    assert err.value.code == 400 and err.value.status["message"] == "field label not supported: spec.nodeName"


def test_strategic_merge_patch_directives() -> None:
    pod = {"metadata": {"labels": {"a": "1"}, "finalizers": ["f1"]},
           "spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
                                   {"name": "b", "image": "y"}]}}
    out = patch.strategic_merge_patch(pod, {
        "metadata": {"labels": {"a": None, "b": "2"}, "finalizers": ["f2"]},
        "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                 "containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]},
                                {"name": "b", "$patch": "delete"}]}})
    assert out["metadata"] == {"labels": {"b": "2"}, "finalizers": ["f1", "f2"]}
    assert out["spec"]["containers"] == [{"name": "a", "image": "x", "env": [
        {"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}]
    assert patch.strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})[
        "metadata"]["finalizers"] == []
    assert pod["metadata"]["labels"] == {"a": "1"}  # inputs untouched


def test_merge_and_json_patch() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    assert patch.merge_patch(doc, {"a": {"b": [3]}, "c": None}) == {"a": {"b": [3]}}
    out = patch.json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3},
                                 {"op": "replace", "path": "/c", "value": 2},
                                 {"op": "test", "path": "/c", "value": 2},
                                 {"op": "move", "from": "/c", "path": "/d"}])
    assert out == {"a": {"b": [1, 2, 3]}, "d": 2}
    with pytest.raises(patch.PatchError):
        patch.json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_rbac_rules() -> None:
    user = rbac.UserInfo("system:serviceaccount:ns:sa", ("system:serviceaccounts", "system:authenticated"))
    role = {"metadata": {"name": "r", "namespace": "ns"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["s"]}]}
    rb = {"metadata": {"name": "rb", "namespace": "ns"}, "roleRef": {"kind": "Role", "name": "r"},
          "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}
    objs = rbac.RbacObjects({("ns", "r"): role}, {}, [rb], [])

    def can(verb: str, resource: str, sub: str = "", ns: str = "ns", name: str = "") -> bool:
        return rbac.authorize(rbac.Attributes(user, verb, "", resource, sub, ns, name), objs)

    assert can("get", "pods") and can("get", "pods", "log") and not can("get", "pods", "status")
    assert not can("list", "pods") and not can("get", "pods", ns="other")
    assert can("get", "secrets", name="s") and not can("get", "secrets", name="t")
    attrs = rbac.Attributes(user, "list", "", "pods", "", "ns")
    assert rbac.forbidden_reason(attrs) == (
        'User "system:serviceaccount:ns:sa" cannot list resource "pods" in API group "" in the namespace "ns"')


def test_gc_decisions() -> None:
    owner = (("", "pods"), {"metadata": {"name": "o", "uid": "1"}})
    dep = (("", "pods"), {"metadata": {"name": "d", "uid": "2", "ownerReferences": [{"uid": "1"}]}})
    two = (("", "secrets"), {"metadata": {"name": "s", "uid": "3", "ownerReferences": [{"uid": "1"}, {"uid": "2"}]}})
    assert gc.garbage([owner, dep, two]) == []
    assert [o["metadata"]["name"] for _, o in gc.garbage([dep, two])] == ["d"]
    assert [o["metadata"]["name"] for _, o in gc.garbage([two])] == ["s"]


@pytest.mark.parametrize(("given", "stored"), [
    ("1000m", "1"), (0.5, "500m"), ("1.5", "1500m"), ("2048Mi", "2Gi"), ("1.5Gi", "1536Mi"),
    ("1000", "1k"), ("129e6", "129e6"), ("128974848", "128974848"), (2, "2"), ("0", "0"),
])
def test_quantities_are_canonical(given: object, stored: str) -> None:
    assert quantity.canonical(given) == stored


def test_protobuf_access_review() -> None:
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload

    attrs = field(1, b"ns") + field(2, b"create") + field(5, b"pods")
    raw = field(2, field(1, attrs))
    envelope = field(1, field(1, b"authorization.k8s.io/v1") + field(2, b"SelfSubjectAccessReview")) + field(2, raw)
    out = protobuf.decode(protobuf.MAGIC + envelope)
    assert out["spec"]["resourceAttributes"] == {"namespace": "ns", "verb": "create", "resource": "pods"}
