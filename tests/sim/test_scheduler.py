"""Table-driven tests of the pure scheduler (filters and kube-scheduler wording)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from jupyter_flame.sim.agent.scheduler import (
    NodeInfo,
    fit_error_message,
    is_schedulable_by_us,
    matches_node_affinity,
    node_info,
    pod_requests,
    schedule,
    tolerates,
)
from jupyter_flame.sim.quantity import QuantityError, format_cpu_millis, parse_quantity

# Pure functions: no stand-in is started, so these run without the `sim` marker.

GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
GPU_TOL = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod(
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}], **spec},
    }


def node(
    name: str = "n0", gpus: int = 0, labels: dict[str, str] | None = None, **kw: Any
) -> NodeInfo:
    alloc = {"cpu": Fraction(8), "memory": parse_quantity("32Gi"), "pods": Fraction(110)}
    taints: tuple[dict[str, Any], ...] = ()
    if gpus:
        alloc["nvidia.com/gpu"] = Fraction(gpus)
        taints = (GPU_TAINT,)
    return NodeInfo(name, labels or {}, kw.pop("taints", taints), alloc, **kw)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("1Ki", Fraction(1024)),
        ("1Mi", Fraction(2**20)),
        ("24Gi", Fraction(24 * 2**30)),
        ("1k", Fraction(1000)),
        ("5M", Fraction(5 * 10**6)),
        ("3G", Fraction(3 * 10**9)),
        ("1e3", Fraction(1000)),
        ("1.5e-3", Fraction(3, 2000)),
        ("-1", Fraction(-1)),
        (4, Fraction(4)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_parse_quantity(text: str | int | float, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Gb", "1.2.3", "m"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(QuantityError, match=repr(text)):
        parse_quantity(text)


def test_format_cpu() -> None:
    assert format_cpu_millis(Fraction(2)) == "2"
    assert format_cpu_millis(Fraction(3, 2)) == "1500m"


def test_pod_requests_sums_containers_and_maxes_init() -> None:
    p = {
        "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
        }
    }
    req = pod_requests(p)
    assert req["cpu"] == 2
    assert req["memory"] == 2**30
    assert req["pods"] == 1


def test_limits_default_requests() -> None:
    assert pod_requests(pod(limits={"nvidia.com/gpu": "1"}))["nvidia.com/gpu"] == 1


TOLERATION_CASES = [
    ([], GPU_TAINT, False),
    ([GPU_TOL], GPU_TAINT, True),
    ([{"operator": "Exists"}], GPU_TAINT, True),
    ([{"key": "nvidia.com/gpu", "operator": "Exists"}], GPU_TAINT, True),
    ([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], GPU_TAINT, False),
    (
        [{"key": "k", "value": "v", "effect": "NoSchedule"}],
        {"key": "k", "value": "v", "effect": "NoSchedule"},
        True,
    ),
    (
        [{"key": "k", "operator": "Equal", "value": "w"}],
        {"key": "k", "value": "v", "effect": "NoSchedule"},
        False,
    ),
    ([{"key": "other", "operator": "Exists"}], GPU_TAINT, False),
]


@pytest.mark.parametrize(("tols", "taint", "ok"), TOLERATION_CASES)
def test_tolerates(tols: list[dict[str, str]], taint: dict[str, str], ok: bool) -> None:
    assert tolerates(tols, taint) is ok


def affinity(*exprs: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(exprs)}]
            }
        }
    }


LABELS = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": "a", "gen": "5"}
AFFINITY_CASES = [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
    ({"key": "zone", "operator": "In", "values": ["b"]}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["b"]}, True),
    ({"key": "missing", "operator": "NotIn", "values": ["b"]}, True),
    ({"key": "zone", "operator": "Exists"}, True),
    ({"key": "missing", "operator": "Exists"}, False),
    ({"key": "missing", "operator": "DoesNotExist"}, True),
    ({"key": "zone", "operator": "DoesNotExist"}, False),
    ({"key": "gen", "operator": "Gt", "values": ["4"]}, True),
    ({"key": "gen", "operator": "Gt", "values": ["5"]}, False),
    ({"key": "gen", "operator": "Lt", "values": ["6"]}, True),
    ({"key": "zone", "operator": "Lt", "values": ["6"]}, False),
]


@pytest.mark.parametrize(("expr", "ok"), AFFINITY_CASES)
def test_node_affinity_operators(expr: dict[str, Any], ok: bool) -> None:
    n = node(labels=LABELS)
    assert matches_node_affinity(pod(affinity=affinity(expr)), n) is ok


def test_node_affinity_terms_are_ored_and_selector_anded() -> None:
    n = node(labels=LABELS)
    terms = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n0"]}]},
                ]
            }
        }
    }
    assert matches_node_affinity(pod(affinity=terms), n)
    assert not matches_node_affinity(pod(affinity=terms, nodeSelector={"zone": "b"}), n)
    assert matches_node_affinity(pod(nodeSelector={"zone": "a"}), n)


GPU1 = {"limits": {"nvidia.com/gpu": "1"}}
MESSAGE_CASES: list[tuple[str, dict[str, Any], list[NodeInfo], str]] = [
    (
        "no gpu anywhere",
        pod(limits={"nvidia.com/gpu": "1"}, tolerations=[GPU_TOL]),
        [node("n0"), node("n1")],
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are "
        "available: 2 No preemption victims found for incoming pod.",
    ),
    (
        "selector mismatch",
        pod(nodeSelector={"zone": "b"}),
        [node("n0", labels={"zone": "a"})],
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    ),
    (
        "untolerated gpu taint",
        pod(),
        [node("n0", gpus=2)],
        "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    ),
    (
        "mixed reasons sorted",
        pod(
            requests={"cpu": "16", "memory": "64Gi"},
            tolerations=[GPU_TOL],
            nodeSelector={"zone": "a"},
        ),
        [node("n0", labels={"zone": "a"}), node("n1", gpus=1, labels={"zone": "a"}), node("n2")],
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 Insufficient cpu, 2 Insufficient memory. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
    ),
    (
        "cordoned",
        pod(),
        [node("n0", unschedulable=True)],
        "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are "
        "available: 1 Preemption is not helpful for scheduling.",
    ),
    (
        "not ready",
        pod(),
        [node("n0", ready=False)],
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    ),
    ("no nodes", pod(), [], "no nodes available to schedule pods"),
]


@pytest.mark.parametrize(
    ("p", "nodes", "message"), [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES]
)
def test_failed_scheduling_message(p: dict[str, Any], nodes: list[NodeInfo], message: str) -> None:
    decision = schedule(p, nodes, {})
    assert decision.node is None
    assert decision.message == message


def test_gpu_capacity_is_consumed_by_bound_pods() -> None:
    p = pod(limits={"nvidia.com/gpu": "1"}, tolerations=[GPU_TOL])
    nodes = [node("n0", gpus=1), node("n1", gpus=1)]
    used = {"n0": {"nvidia.com/gpu": Fraction(1), "pods": Fraction(1)}}
    assert schedule(p, nodes, used).node == "n1"
    used["n1"] = {"nvidia.com/gpu": Fraction(1)}
    assert "2 Insufficient nvidia.com/gpu" in schedule(p, nodes, used).message


def test_too_many_pods() -> None:
    n = NodeInfo("n0", {}, (), {"cpu": Fraction(1), "pods": Fraction(1)})
    message = schedule(pod(), [n], {"n0": {"pods": Fraction(1)}}).message
    assert message.startswith("0/1 nodes are available: 1 Too many pods.")


def test_spreads_to_least_allocated_node() -> None:
    nodes = [node("n0"), node("n1")]
    assert schedule(pod(), nodes, {}).node == "n0"
    assert schedule(pod(), nodes, {"n0": {"cpu": Fraction(1), "pods": Fraction(1)}}).node == "n1"


def test_fit_error_message_counts() -> None:
    failures = {"a": (["Insufficient cpu"], True), "b": (["Insufficient cpu"], True)}
    assert fit_error_message(2, failures).startswith("0/2 nodes are available: 2 Insufficient cpu.")


def test_node_info_from_json() -> None:
    info = node_info(
        {
            "metadata": {"name": "n", "labels": {"a": "b"}},
            "spec": {"taints": [GPU_TAINT]},
            "status": {
                "allocatable": {"cpu": "4", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert info.ready and info.allocatable["nvidia.com/gpu"] == 2 and info.taints == (GPU_TAINT,)


@pytest.mark.parametrize(
    ("spec", "meta", "status", "ok"),
    [
        ({}, {}, {}, True),
        ({"nodeName": "n"}, {}, {}, False),
        ({"schedulerName": "other"}, {}, {}, False),
        ({}, {"deletionTimestamp": "x"}, {}, False),
        ({}, {}, {"phase": "Failed"}, False),
    ],
)
def test_is_schedulable_by_us(
    spec: dict[str, str], meta: dict[str, str], status: dict[str, str], ok: bool
) -> None:
    assert is_schedulable_by_us({"metadata": meta, "spec": spec, "status": status}) is ok
