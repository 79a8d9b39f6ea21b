"""apps/v1 Deployments and ReplicaSets on the stand-in, seen through real kubectl and the
official client as on a cluster: rollouts, scaling, pod replacement, template changes
(rolling and Recreate), undo, cascading and orphaning deletes, validation, retries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sim_harness import Sim

pytestmark = pytest.mark.sim

Json = dict[str, Any]
IMAGE = "jupyter-flame/notebook:local"
SLEEP = ["python", "-c", "import time; time.sleep(3600)"]


class Kubectl:
    """kubectl as the admin of the stand-in, in one namespace."""

    def __init__(self, sim: Sim, namespace: str) -> None:
        binary = "/usr/bin/kubectl" if os.access("/usr/bin/kubectl", os.X_OK) else shutil.which("kubectl")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("kubectl is not installed, and CI must run the kubectl tests")
            pytest.skip("kubectl is not installed")
        self.binary, self.ns = binary, namespace
        self.env = dict(os.environ, KUBECONFIG=str(sim.dir / "admin.kubeconfig"), HOME=str(sim.dir))

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, "-n", self.ns, *args], capture_output=True, text=True,
                              env=self.env, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def json(self, *args: str) -> Json:
        return dict(json.loads(self("get", *args, "-o", "json").stdout))

    def items(self, kind: str, selector: str = "") -> list[Json]:
        args = [kind, "-l", selector] if selector else [kind]
        return list(self.json(*args)["items"])


def deployment(name: str, replicas: int = 2, **spec: Any) -> Json:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "tier": "web"}},
                              "spec": {"containers": [{"name": "main", "image": IMAGE, "command": SLEEP}]}},
                 **spec},
    }


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def live_pods(k: Kubectl, selector: str) -> list[Json]:
    return [p for p in k.items("pods", selector) if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture
def k(sim: Sim) -> Iterator[Kubectl]:
    ns = f"w-{uuid.uuid4().hex[:6]}"
    kubectl = Kubectl(sim, ns)
    kubectl("create", "namespace", ns)
    yield kubectl
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_deployment_rolls_out_a_replicaset_with_owned_pods(k: Kubectl) -> None:
    k("apply", "-f", "-", input=json.dumps(deployment("web")))
    assert "successfully rolled out" in k("rollout", "status", "deployment/web", "--timeout=30s").stdout
    table = k("get", "deploy", "web").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "2/2", "2", "2"]
    d = k.json("deployment", "web")
    spec = d["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    status = d["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"],
            status["updatedReplicas"]) == (2, 2, 2, 2)
    assert status["observedGeneration"] == d["metadata"]["generation"] == 1
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds["Available"]["status"], conds["Available"]["reason"]) == ("True", "MinimumReplicasAvailable")
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"

    [rs] = k.items("replicasets", "app=web")
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    [ref] = rs["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Deployment", "web",
                                                                        d["metadata"]["uid"], True)
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    rs_table = k("get", "rs").stdout.splitlines()
    assert rs_table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert rs_table[1].split()[:4] == [f"web-{h}", "2", "2", "2"]

    pods = live_pods(k, "app=web")
    assert len(pods) == 2
    for pod in pods:
        name = pod["metadata"]["name"]
        assert name.startswith(f"web-{h}-") and len(name) == len(f"web-{h}-") + 5
        assert pod["metadata"]["labels"] == {"app": "web", "tier": "web", "pod-template-hash": h}
        [pref] = pod["metadata"]["ownerReferences"]
        assert (pref["kind"], pref["name"], pref["controller"]) == ("ReplicaSet", f"web-{h}", True)
        assert pod["status"]["phase"] == "Running"
    events = k("get", "events", "--field-selector", "involvedObject.kind=Deployment").stdout
    assert f"Scaled up replica set web-{h} from 0 to 2" in events


def test_scale_and_replacement_of_deleted_pods(k: Kubectl, sim: Sim) -> None:
    from kubernetes import client

    k("apply", "-f", "-", input=json.dumps(deployment("api", replicas=1)))
    k("rollout", "status", "deployment/api", "--timeout=30s")
    k("scale", "deployment/api", "--replicas=3")
    k("rollout", "status", "deployment/api", "--timeout=30s")
    assert k("get", "deploy", "api").stdout.splitlines()[1].split()[1] == "3/3"
    victim = live_pods(k, "app=api")[0]["metadata"]["name"]
    k("delete", "pod", victim, "--wait=false")
    names = wait_for("a replacement pod", lambda: (
        {p["metadata"]["name"] for p in live_pods(k, "app=api")}
        if len(live_pods(k, "app=api")) == 3 and victim not in
        {p["metadata"]["name"] for p in live_pods(k, "app=api")} else None))
    assert victim not in names and len(names) == 3
    k("rollout", "status", "deployment/api", "--timeout=30s")
    # the scale subresource through the official client: an autoscaling/v1 Scale comes back
    apps = client.AppsV1Api(sim.admin.api_client)
    scale = apps.patch_namespaced_deployment_scale("api", k.ns, {"spec": {"replicas": 1}})
    assert (scale.kind, scale.spec.replicas, scale.status.selector) == ("Scale", 1, "app=api")
    wait_for("one pod", lambda: len(live_pods(k, "app=api")) == 1)
    rs = apps.list_namespaced_replica_set(k.ns).items
    assert [r.spec.replicas for r in rs] == [1]
    k("rollout", "status", "deployment/api", "--timeout=30s")
    assert apps.read_namespaced_deployment_status("api", k.ns).status.ready_replicas == 1


def test_template_change_rolls_to_a_new_replicaset_and_undo_goes_back(k: Kubectl) -> None:
    k("apply", "-f", "-", input=json.dumps(deployment("app")))
    k("rollout", "status", "deployment/app", "--timeout=30s")
    [first] = k.items("replicasets", "app=app")
    # an image the registry does not serve: maxUnavailable 25% of 2 = 0, so the old pods stay
    k("set", "image", "deployment/app", "main=registry.example.com/missing:1")
    stuck = k("rollout", "status", "deployment/app", "--timeout=3s", check=False)
    assert stuck.returncode != 0
    assert "1 out of 2 new replicas have been updated" in stuck.stdout + stuck.stderr
    rss = {r["metadata"]["name"]: r for r in k.items("replicasets", "app=app")}
    assert len(rss) == 2 and rss[first["metadata"]["name"]]["spec"]["replicas"] == 2
    assert k("get", "deploy", "app").stdout.splitlines()[1].split()[1:4] == ["2/2", "1", "2"]
    # a working template: a third ReplicaSet takes over, the others go to 0
    fix = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": IMAGE, "env": [{"name": "COLOR", "value": "blue"}]}]}}}}
    k("patch", "deployment/app", "-p", json.dumps(fix))
    k("rollout", "status", "deployment/app", "--timeout=30s")
    rss = {r["metadata"]["name"]: r for r in k.items("replicasets", "app=app")}
    assert len(rss) == 3
    current = [r for r in rss.values() if r["spec"]["replicas"] == 2]
    assert len(current) == 1
    assert current[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    wait_for("old pods gone", lambda: len(live_pods(k, "app=app")) == 2)
    pods = live_pods(k, "app=app")
    assert all(p["spec"]["containers"][0]["env"] == [{"name": "COLOR", "value": "blue"}] for p in pods)
    assert all(p["metadata"]["labels"]["pod-template-hash"] ==
               current[0]["metadata"]["labels"]["pod-template-hash"] for p in pods)
    history = k("rollout", "history", "deployment/app").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2", "3"]
    k("rollout", "undo", "deployment/app", "--to-revision=1")
    k("rollout", "status", "deployment/app", "--timeout=30s")
    first_now = k.json("rs", first["metadata"]["name"])
    assert first_now["spec"]["replicas"] == 2
    assert first_now["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    assert k.json("deployment", "app")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"


def test_recreate_stops_old_pods_before_starting_new_ones(k: Kubectl) -> None:
    k("apply", "-f", "-", input=json.dumps(deployment("rc", replicas=1, strategy={"type": "Recreate"})))
    k("rollout", "status", "deployment/rc", "--timeout=30s")
    [old] = live_pods(k, "app=rc")
    k("set", "env", "deployment/rc", "V=2")
    k("rollout", "status", "deployment/rc", "--timeout=30s")
    [new] = live_pods(k, "app=rc")
    assert new["metadata"]["name"] != old["metadata"]["name"]
    events = [e for e in k.items("events") if e["involvedObject"]["kind"] == "Deployment"]
    messages = [e["message"] for e in sorted(events, key=lambda e: e["metadata"]["resourceVersion"].zfill(12))]
    old_rs = old["metadata"]["ownerReferences"][0]["name"]
    new_rs = new["metadata"]["ownerReferences"][0]["name"]
    down = messages.index(f"Scaled down replica set {old_rs} from 1 to 0")
    up = messages.index(f"Scaled up replica set {new_rs} from 0 to 1")
    assert down < up


def test_cascading_and_orphaning_deletes(k: Kubectl) -> None:
    k("apply", "-f", "-", input=json.dumps(deployment("gc")))
    k("rollout", "status", "deployment/gc", "--timeout=30s")
    [rs] = k.items("replicasets", "app=gc")
    k("delete", "deployment", "gc", "--cascade=orphan")
    orphan = k.json("rs", rs["metadata"]["name"])
    assert not orphan["metadata"].get("ownerReferences")
    assert len(live_pods(k, "app=gc")) == 2
    # a new Deployment with the same selector and template adopts the ReplicaSet
    k("apply", "-f", "-", input=json.dumps(deployment("gc")))
    k("rollout", "status", "deployment/gc", "--timeout=30s")
    adopted = k.json("rs", rs["metadata"]["name"])
    assert adopted["metadata"]["ownerReferences"][0]["name"] == "gc"
    assert len(k.items("replicasets", "app=gc")) == 1
    k("delete", "deployment", "gc")
    wait_for("ReplicaSet and pods gone",
             lambda: not k.items("replicasets", "app=gc") and not k.items("pods", "app=gc"))


def test_invalid_workloads_are_refused_with_the_real_messages(k: Kubectl) -> None:
    bad = deployment("bad")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    out = k("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert ('spec.template.metadata.labels: Invalid value: map[string]string{"app":"bad", "tier":"web"}: '
            "`selector` does not match template `labels`") in out.stderr
    never = deployment("never")
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    out = k("apply", "-f", "-", input=json.dumps(never), check=False)
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"' in out.stderr
    k("apply", "-f", "-", input=json.dumps(deployment("fixed")))
    moved = deployment("fixed")
    moved["spec"]["selector"]["matchLabels"]["tier"] = "web"
    out = k("apply", "-f", "-", input=json.dumps(moved), check=False)
    assert "spec.selector" in out.stderr and "field is immutable" in out.stderr


def test_refused_pods_are_retried_once_the_service_account_exists(k: Kubectl) -> None:
    d = deployment("sa", replicas=1)
    d["spec"]["template"]["spec"]["serviceAccountName"] = "later"
    k("apply", "-f", "-", input=json.dumps(d))
    rs = wait_for("the ReplicaFailure condition", lambda: next(
        (r for r in k.items("replicasets", "app=sa")
         if any(c["type"] == "ReplicaFailure" for c in r.get("status", {}).get("conditions") or [])), None))
    [cond] = rs["status"]["conditions"]
    assert 'error looking up service account' in cond["message"] and cond["reason"] == "FailedCreate"
    events = k("get", "events", "--field-selector", "reason=FailedCreate").stdout
    assert 'serviceaccount "later" not found' in events
    k("create", "serviceaccount", "later")
    k("rollout", "status", "deployment/sa", "--timeout=30s")
    assert not k.json("rs", rs["metadata"]["name"])["status"].get("conditions")


def test_rollout_status_fails_after_the_progress_deadline(k: Kubectl) -> None:
    d = deployment("slow", replicas=1, progressDeadlineSeconds=2)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/missing:1"
    k("apply", "-f", "-", input=json.dumps(d))
    out = k("rollout", "status", "deployment/slow", "--timeout=20s", check=False)
    assert out.returncode != 0
    assert 'deployment "slow" exceeded its progress deadline' in out.stderr
    progressing = next(c for c in k.json("deployment", "slow")["status"]["conditions"]
                       if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")


def test_rolling_update_stays_within_max_surge_and_max_unavailable(k: Kubectl, sim: Sim) -> None:
    from kubernetes import client, watch

    k("apply", "-f", "-", input=json.dumps(deployment("roll", replicas=4)))
    k("rollout", "status", "deployment/roll", "--timeout=30s")
    apps = client.AppsV1Api(sim.admin.api_client)
    listing = apps.list_namespaced_replica_set(k.ns)
    desired = {rs.metadata.name: rs.spec.replicas for rs in listing.items}
    available = {rs.metadata.name: rs.status.available_replicas or 0 for rs in listing.items}
    k("set", "env", "deployment/roll", "V=2")
    k("rollout", "status", "deployment/roll", "--timeout=60s")
    most, fewest, seen = sum(desired.values()), sum(available.values()), 0
    stream = watch.Watch().stream(apps.list_namespaced_replica_set, k.ns,
                                  resource_version=listing.metadata.resource_version, timeout_seconds=1)
    for event in stream:  # every ReplicaSet write of the rollout, replayed in order
        rs = event["object"]
        desired[rs.metadata.name] = rs.spec.replicas
        available[rs.metadata.name] = rs.status.available_replicas or 0
        most, fewest = max(most, sum(desired.values())), min(fewest, sum(available.values()))
        seen += 1
    # 25% of 4: at most 1 pod above 4 (maxSurge rounds up), at most 1 below (maxUnavailable down)
    assert seen > 4 and most == 5 and fewest == 3, (seen, most, fewest)
    assert sorted(desired.values()) == [0, 4]
