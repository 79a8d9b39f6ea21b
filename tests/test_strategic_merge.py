"""One strategic merge for the product's pod templates and the stand-in's PATCH: the same
table of cases runs through both entry points (the backend's ``deep_merge`` and the stand-in
API server's ``strategic_merge_patch``), and a template that adds a second mount of the
parent's volume gets both mounts in the runner pod."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_flame.backends.kubernetes._pod_parts import deep_merge
from jupyter_flame.sim.apiserver.patch import strategic_merge_patch

from .test_pod_template import PARENTS, RunnerPodTemplate, build


def c(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, **kw}


CASES = [
    ("a second mount of a volume at another path is added, not replacing",
     {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     {"volumeMounts": [{"name": "data", "mountPath": "/mnt/data2", "readOnly": True}]},
     {"volumeMounts": [{"name": "data", "mountPath": "/data"},
                       {"name": "data", "mountPath": "/mnt/data2", "readOnly": True}]}),
    ("a mount at the same path is merged into",
     {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     {"volumeMounts": [{"mountPath": "/data", "readOnly": True}]},
     {"volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}]}),
    ("ports merge by containerPort",
     {"ports": [{"containerPort": 8888, "name": "http"}]},
     {"ports": [{"containerPort": 8888, "protocol": "TCP"}, {"containerPort": 9000}]},
     {"ports": [{"containerPort": 8888, "name": "http", "protocol": "TCP"},
                {"containerPort": 9000}]}),
    ("env merges by name, new names appended",
     {"env": [c("A", value="1"), c("B", value="2")]},
     {"env": [c("B", value="3"), c("C", value="4")]},
     {"env": [c("A", value="1"), c("B", value="3"), c("C", value="4")]}),
    ("containers merge by name",
     {"containers": [c("runner", image="a"), c("side", image="s")]},
     {"containers": [c("runner", stdin=True)]},
     {"containers": [c("runner", image="a", stdin=True), c("side", image="s")]}),
    ("lists without a merge key are replaced (args, tolerations)",
     {"args": ["a", "b"], "tolerations": [{"key": "x"}]},
     {"args": ["c"], "tolerations": [{"key": "y"}]},
     {"args": ["c"], "tolerations": [{"key": "y"}]}),
    ("None deletes a key", {"nodeSelector": {"a": "1", "b": "2"}},
     {"nodeSelector": {"a": None}}, {"nodeSelector": {"b": "2"}}),
    ("$patch: delete removes a list item",
     {"env": [c("A", value="1"), c("B", value="2")]},
     {"env": [{"name": "A", "$patch": "delete"}]}, {"env": [c("B", value="2")]}),
    ("$patch: replace replaces a list",
     {"volumes": [c("a"), c("b")]},
     {"volumes": [c("z"), {"$patch": "replace"}]}, {"volumes": [c("z")]}),
]


@pytest.mark.parametrize("what,base,patch,expected", CASES, ids=[x[0] for x in CASES])
def test_product_and_stand_in_merge_alike(what: str, base: Any, patch: Any,
                                          expected: Any) -> None:
    assert deep_merge(base, patch) == expected, what
    assert strategic_merge_patch(base, patch) == expected, what


def test_template_adds_a_second_mount_of_the_parents_volume() -> None:
    parent = PARENTS["deployment"]
    pod = build(parent, template=RunnerPodTemplate(extra={"spec": {"containers": [{
        "name": "runner",
        "volumeMounts": [{"name": "shared-data", "mountPath": "/mnt/again", "readOnly": True}],
    }]}}))
    mounts = {(m["name"], m["mountPath"]) for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert ("shared-data", "/data") in mounts  # the parent's mount is kept
    assert ("shared-data", "/mnt/again") in mounts  # and the template's is added


def test_an_unnamed_template_container_merges_into_the_runner() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(extra={
        "spec": {"containers": [{"stdin": True}]}}))
    (runner,) = [x for x in pod["spec"]["containers"] if x["name"] == "runner"]
    assert runner["stdin"] is True
