"""The runner pod builder on realistic parent pods (tests/fixtures/pods/*.yaml).

Every fixture x option set goes through :func:`check_invariants` (the rules that hold for any
runner pod); the tests after it pin the rules that depend on the parent or the options.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.backends.kubernetes.pod_template import (
    RunnerPodTemplate,
    build_runner_pod,
    find_app_container,
)
from jupyter_flame.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "pods"
PARENTS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(FIXTURES.glob("*.yaml"))}
KEY_HEX = "00ff" * 16
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ACCESS_MODES = {
    "team-data": ["ReadWriteMany"],
    "home-lab-0": ["ReadWriteOnce"],
    "claim-alice": ["ReadWriteOnce"],
    "jhub-shared": ["ReadWriteMany"],
}
HUB_SECRETS = {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JUPYTER_TOKEN"}


def add_sidecar(parent: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"terminationGracePeriodSeconds": 7,
                     "containers": [{"resources": {"requests": {"cpu": "1"}}}]}}


OPTION_SETS: dict[str, dict[str, Any]] = {
    "none": {"template": None},
    "defaults": {"template": RunnerPodTemplate()},
    "resources": {"template": RunnerPodTemplate(cpu=2, memory="8Gi")},
    "plain-numbers": {"template": RunnerPodTemplate(cpu=0.25, memory=3 * 2**30)},
    "gpu": {"template": RunnerPodTemplate(gpu=2, gpu_type="NVIDIA-H100-80GB-HBM3")},
    "placement": {"template": RunnerPodTemplate(
        node_selector={"pool": "batch"},
        tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}])},
    "volumes": {"template": RunnerPodTemplate(volumes=[("scratch", "/mnt/scratch")])},
    "image-env": {"template": RunnerPodTemplate(
        image="example.com/runner:1", image_pull_secrets=["extra-creds"],
        image_pull_policy="Always", env={"OMP_NUM_THREADS": "4"})},
    "copy-all": {"template": RunnerPodTemplate(copy_init_containers=True,
                                               copy_rwo_volumes=True)},
    "magic": {"template": RunnerPodTemplate(cpu=1, memory="1Gi"),
              "spec": RunnerSpec(gpu=1, memory="16Gi", env=(("A", "1"),),
                                 tolerations=(("spot", "true", "NoSchedule"),))},
    "callable": {"template": add_sidecar},
    "callable-magic": {"template": add_sidecar, "spec": RunnerSpec(cpu="6")},
    "no-owner": {"template": None, "omit_owner_reference": True},
}


def build(parent: dict[str, Any], **options: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "pool": "default",
        "runner_id": "r-1",
        "kernel_id": "6a1f2b7c-0c4e-4a59-9d7e-5f1e2d3c4b5a",
        "secret_name": "nb-flame-default-key",
        "parent_address": ("10.42.0.17", 40123),
        "pvc_access_modes": ACCESS_MODES,
        "template": None,
    }
    kwargs.update(options)
    return build_runner_pod(parent, **kwargs)


def env_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}


def check_invariants(parent: dict[str, Any], pod: dict[str, Any], options: dict[str, Any]) -> None:
    pmeta, pspec = parent["metadata"], parent["spec"]
    meta, spec = pod["metadata"], pod["spec"]
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert "status" not in pod
    json.dumps(pod)  # plain JSON, ready for the API

    # metadata: fresh, forced
    for key in ("name", "uid", "resourceVersion", "creationTimestamp", "managedFields"):
        assert key not in meta
    assert meta["generateName"] == pmeta["name"] + "-flame-"
    assert meta["namespace"] == pmeta["namespace"]
    if options.get("omit_owner_reference"):
        assert "ownerReferences" not in meta
    else:
        assert meta["ownerReferences"] == [{
            "apiVersion": "v1", "kind": "Pod", "name": pmeta["name"], "uid": pmeta["uid"],
            "controller": True,
        }]

    # labels: ours, never the parent's
    labels = meta["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "jupyter-flame"
    assert labels["jupyter-flame/pool"] == "default"
    assert labels["jupyter-flame/parent"] == pmeta["name"]
    assert labels["jupyter-flame/kernel"] == "6a1f2b7c-0c4e-4a59-9d7e-5f1e2d3c4b5a"
    assert labels["jupyter-flame/runner"] == "r-1"
    for key, value in pmeta.get("labels", {}).items():
        assert labels.get(key) != value, f"parent label {key}={value} leaked"
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert not set(pmeta.get("annotations", {})) & set(meta["annotations"])

    # pod spec: forced and dropped fields
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "jupyter-flame-runner"
    assert spec["serviceAccountName"] != pspec.get("serviceAccountName")
    for key in ("nodeName", "hostname", "subdomain", "ephemeralContainers", "priority",
                "serviceAccount", "topologySpreadConstraints", "preemptionPolicy"):
        assert key not in spec, key
    if not getattr(options.get("template"), "copy_init_containers", False):
        assert "initContainers" not in spec

    # the runner container
    runner = spec["containers"][0]
    assert runner["name"] == "runner"
    assert runner["command"] == ["python", "-m", "jupyter_flame.runner"]
    for key in ("args", "livenessProbe", "readinessProbe", "startupProbe", "ports", "lifecycle"):
        assert key not in runner, key
    if not callable(options.get("template")):
        assert [c["name"] for c in spec["containers"]] == ["runner"]

    # environment: runner env, key from the Secret only, no hub credentials
    env = env_of(pod)
    assert len(env) == len(runner["env"]), "duplicate env names"
    assert env["JUPYTER_FLAME_KEY"] == {
        "name": "JUPYTER_FLAME_KEY",
        "valueFrom": {"secretKeyRef": {"name": "nb-flame-default-key", "key": "key"}},
    }
    assert env["JUPYTER_FLAME_PARENT"]["value"] == "10.42.0.17:40123"
    assert env["JUPYTER_FLAME_RUNNER_ID"]["value"] == "r-1"
    assert env["JUPYTER_FLAME_POOL"]["value"] == "default"
    assert float(env["JUPYTER_FLAME_BOOT_TIMEOUT"]["value"]) == 30.0
    assert KEY_HEX not in json.dumps(pod)
    assert not HUB_SECRETS & set(env)

    # no API credentials
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert len(volumes) == len(spec.get("volumes", []))
    for volume in volumes.values():
        assert not volume["name"].startswith("kube-api-access-")
        assert not any("serviceAccountToken" in s
                       for s in volume.get("projected", {}).get("sources", []))
    for container in [*spec["containers"], *spec.get("initContainers", [])]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes
            assert not mount["mountPath"].startswith("/var/run/secrets/")

    # security context and resources
    sc = runner["securityContext"]
    parent_app = find_app_container(parent)
    parent_sc = parent_app.get("securityContext", {})
    assert sc["allowPrivilegeEscalation"] is parent_sc.get("allowPrivilegeEscalation", False)
    assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}
    resources = runner.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if "memory" in requests:
        assert "memory" in limits
    gpus = getattr(options.get("template"), "gpu", 0) or getattr(options.get("spec"), "gpu", 0)
    assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu") == (
        str(gpus) if gpus else None)
    tolerations = spec.get("tolerations", [])
    assert len(tolerations) == len({json.dumps(t, sort_keys=True) for t in tolerations})


@pytest.mark.parametrize("options_name", OPTION_SETS)
@pytest.mark.parametrize("parent_name", PARENTS)
def test_invariants(parent_name: str, options_name: str) -> None:
    parent = PARENTS[parent_name]
    before = copy.deepcopy(parent)
    options = OPTION_SETS[options_name]
    pod = build(parent, **options)
    check_invariants(parent, pod, options)
    assert parent == before, "the parent pod was modified"


# ------------------------------------------------------------------------------ the clone


@pytest.mark.parametrize(("parent_name", "container", "image"), [
    ("deployment", "notebook", "registry.example.com/team/notebook:2026.11"),
    ("statefulset", "lab", "quay.io/jupyter/scipy-notebook:2026-11-01"),
    ("z2jh-singleuser", "notebook", "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"),
    ("gpu-notebook", "jupyter", "nvcr.io/nvidia/pytorch:24.10-py3"),
])
def test_app_container_runs_jupyter(parent_name: str, container: str, image: str) -> None:
    parent = PARENTS[parent_name]
    assert find_app_container(parent)["name"] == container
    assert build(parent)["spec"]["containers"][0]["image"] == image


def test_app_container_by_name() -> None:
    pod = build(PARENTS["statefulset"], app_container_name="log-shipper")
    assert pod["spec"]["containers"][0]["image"] == "fluent/fluent-bit:3.1"
    with pytest.raises(ConfigError, match=r"'log-shipper', 'lab'"):
        build(PARENTS["statefulset"], app_container_name="nope")


def test_clone_copies_the_app_container_and_placement() -> None:
    pod = build(PARENTS["deployment"])
    spec, runner = pod["spec"], pod["spec"]["containers"][0]
    assert runner["workingDir"] == "/home/jovyan/work"
    assert runner["imagePullPolicy"] == "IfNotPresent"
    assert runner["envFrom"] == [{"configMapRef": {"name": "notebook-settings"}}]
    assert env_of(pod)["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env_of(pod)["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["securityContext"] == {"fsGroup": 100}
    assert spec["tolerations"][0]["key"] == "node.kubernetes.io/not-ready"
    assert [m["mountPath"] for m in runner["volumeMounts"]] == ["/data", "/tmp/scratch"]
    assert runner["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_level_fields_admission_would_reject_are_dropped() -> None:
    pod = build(PARENTS["statefulset"])
    assert pod["spec"]["priorityClassName"] == "interactive"
    assert "priority" not in pod["spec"] and "preemptionPolicy" not in pod["spec"]
    assert pod["spec"]["affinity"]["podAntiAffinity"]
    z2jh = build(PARENTS["z2jh-singleuser"])["spec"]
    assert z2jh["schedulerName"] == "jhub-user-scheduler"
    assert z2jh["enableServiceLinks"] is False
    assert build(PARENTS["gpu-notebook"])["spec"]["runtimeClassName"] == "nvidia"


def test_sidecars_are_not_copied_but_shared_volumes_are() -> None:
    pod = build(PARENTS["statefulset"])
    assert [c["name"] for c in pod["spec"]["containers"]] == ["runner"]
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"logs"}


def test_hub_credentials_are_stripped_and_the_rest_kept() -> None:
    env = env_of(build(PARENTS["z2jh-singleuser"]))
    for name in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"):
        assert name not in env
    for name in ("JUPYTERHUB_USER", "JUPYTERHUB_API_URL", "JUPYTERHUB_CLIENT_ID", "MEM_LIMIT",
                 "JUPYTER_IMAGE", "POD_NAME"):
        assert name in env, name
    stricter = RunnerPodTemplate(strip_env=("JUPYTERHUB_*",))
    assert not [n for n in env_of(build(PARENTS["z2jh-singleuser"], template=stricter))
                if n.startswith("JUPYTERHUB_")]
    assert "JUPYTER_TOKEN" not in env_of(build(PARENTS["deployment"]))
    assert "DB_PASSWORD" in env_of(build(PARENTS["statefulset"]))  # a secretKeyRef, kept


def test_no_parent_env() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(copy_parent_env=False))
    assert all(n.startswith("JUPYTER_FLAME_") for n in env_of(pod))
    assert "envFrom" not in pod["spec"]["containers"][0]


def test_token_volumes_and_env_pointing_into_them_are_dropped() -> None:
    pod = build(PARENTS["gpu-notebook"])
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"dshm"}
    env = env_of(pod)
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" not in env
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"


def test_init_containers_only_when_asked() -> None:
    parent = PARENTS["z2jh-singleuser"]
    assert "initContainers" not in build(parent)["spec"]
    pod = build(parent, template=RunnerPodTemplate(copy_init_containers=True))
    (init,) = pod["spec"]["initContainers"]
    assert init["name"] == "block-cloud-metadata"
    assert init["securityContext"]["privileged"] is True  # copied as is, when asked


@pytest.mark.parametrize(("template", "modes", "expected"), [
    (None, ACCESS_MODES, {"shared"}),
    (None, {}, set()),  # unknown access modes count as ReadWriteOnce
    (RunnerPodTemplate(copy_rwo_volumes=True), ACCESS_MODES, {"shared", "volume-alice"}),
    (None, {"claim-alice": ["ReadOnlyMany"]}, {"volume-alice"}),
])
def test_read_write_once_claims(template: Any, modes: dict[str, list[str]],
                                expected: set[str]) -> None:
    pod = build(PARENTS["z2jh-singleuser"], template=template, pvc_access_modes=modes)
    assert {v["name"] for v in pod["spec"].get("volumes", [])} == expected
    skipped = pod["metadata"]["annotations"].get("jupyter-flame/skipped-volumes", "")
    assert ("volume-alice" in skipped) is ("volume-alice" not in expected)
    if not modes:
        assert "access modes unknown" in skipped


# --------------------------------------------------------------------------- security


def test_non_root_parent_gets_the_restricted_profile() -> None:
    sc = build(PARENTS["z2jh-singleuser"])["spec"]["containers"][0]["securityContext"]
    assert sc == {
        "runAsUser": 1000, "runAsGroup": 100, "allowPrivilegeEscalation": False,
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize("parent_name", ["gpu-notebook", "deployment"])
def test_root_or_unknown_user_is_not_forced_non_root(parent_name: str) -> None:
    sc = build(PARENTS[parent_name])["spec"]["containers"][0]["securityContext"]
    assert "runAsNonRoot" not in sc and "capabilities" not in sc
    assert sc["allowPrivilegeEscalation"] is False


def test_explicit_parent_settings_win_over_restricted_defaults() -> None:
    sc = build(PARENTS["statefulset"])["spec"]["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is True  # the parent said so
    assert sc["runAsNonRoot"] is True  # pod-level runAsUser 1000


def test_privileged_parent_container_is_copied_unchanged() -> None:
    parent = copy.deepcopy(PARENTS["deployment"])
    parent["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    sc = build(parent)["spec"]["containers"][0]["securityContext"]
    assert sc == {"privileged": True}


# -------------------------------------------------------------------------- resources


def resources(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]["resources"]  # type: ignore[no-any-return]


def test_resources_from_the_parent_minus_gpus() -> None:
    assert resources(build(PARENTS["deployment"])) == {
        "requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    # limits only: requests become the limits, as Kubernetes would default them
    assert resources(build(PARENTS["statefulset"]))["requests"] == {
        "memory": "8Gi", "cpu": "4", "ephemeral-storage": "10Gi"}
    # memory request only: the limit becomes the request
    z2jh = resources(build(PARENTS["z2jh-singleuser"]))
    assert z2jh["limits"] == {"memory": "2147483648"}
    gpu = resources(build(PARENTS["gpu-notebook"]))
    assert gpu == {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}}


def test_template_resources_override_the_parent() -> None:
    res = resources(build(PARENTS["deployment"], template=RunnerPodTemplate(cpu=4, memory="16Gi")))
    assert res == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}
    res = resources(build(PARENTS["deployment"], template=RunnerPodTemplate(
        cpu="1", memory="1Gi", limits={"cpu": 2, "memory": "3Gi"})))
    assert res == {"requests": {"cpu": "1", "memory": "1Gi"},
                   "limits": {"cpu": "2", "memory": "3Gi"}}
    res = resources(build(PARENTS["deployment"], template=RunnerPodTemplate(
        requests={"ephemeral-storage": 2**30, "example.com/fpga": 1})))
    assert res["requests"]["ephemeral-storage"] == "1Gi"
    assert res["requests"]["example.com/fpga"] == res["limits"]["example.com/fpga"] == "1"


@pytest.mark.parametrize(("cpu", "memory", "want_cpu", "want_memory"), [
    (0.5, 2**30, "500m", "1Gi"),
    (2, 1536 * 2**20, "2", "1536Mi"),
    (0.0015, 1000, "2m", "1000"),
    ("250m", "1.5G", "250m", "1.5G"),
])
def test_plain_numbers_like_teraslice(cpu: Any, memory: Any, want_cpu: str,
                                      want_memory: str) -> None:
    res = resources(build(PARENTS["deployment"],
                          template=RunnerPodTemplate(cpu=cpu, memory=memory)))
    assert res["requests"] == {"cpu": want_cpu, "memory": want_memory}


def test_request_above_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="memory request 2Gi is above its limit 1Gi"):
        build(PARENTS["deployment"], template=RunnerPodTemplate(memory="2Gi",
                                                                limits={"memory": "1Gi"}))


@pytest.mark.parametrize("kwargs", [
    {"gpu": -1}, {"gpu": 1.5}, {"cpu": "lots"}, {"memory": "12 GB"}, {"cpu": -1},
    {"volumes": [("claim", "relative/path")]}, {"tolerations": ["gpu"]},
])
def test_bad_template_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RunnerPodTemplate(**kwargs)


# --------------------------------------------------------------------------------- GPUs


def test_runner_without_gpu_takes_none_from_a_gpu_parent() -> None:
    res = resources(build(PARENTS["gpu-notebook"]))
    assert "nvidia.com/gpu" not in res["requests"] and "nvidia.com/gpu" not in res["limits"]


def test_gpu_adds_resources_and_one_toleration() -> None:
    pod = build(PARENTS["gpu-notebook"], template=RunnerPodTemplate(gpu=2))
    assert resources(pod)["limits"]["nvidia.com/gpu"] == "2"
    assert resources(pod)["requests"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gpu_type_replaces_the_parents_product_in_every_term() -> None:
    product = "NVIDIA-H100-80GB-HBM3"
    pod = build(PARENTS["gpu-notebook"], template=RunnerPodTemplate(gpu=1, gpu_type=product))
    assert "nvidia.com/gpu.product" not in pod["spec"].get("nodeSelector", {})
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        products = [e for e in term["matchExpressions"] if e["key"] == "nvidia.com/gpu.product"]
        assert products == [{"key": "nvidia.com/gpu.product", "operator": "In",
                             "values": [product]}]
    assert {"key": "topology.kubernetes.io/zone", "operator": "In",
            "values": ["us-east-1a"]} in terms[0]["matchExpressions"]


def test_gpu_type_without_parent_affinity_makes_one_term() -> None:
    pod = build(PARENTS["z2jh-singleuser"], template=RunnerPodTemplate(gpu_type="L4"))
    node = pod["spec"]["affinity"]["nodeAffinity"]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                               "values": ["L4"]}]}]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"]  # the parent's, kept


# ---------------------------------------------------------------------------- placement


def test_node_selector_merges_and_replaces_the_parents_key() -> None:
    pod = build(PARENTS["gpu-notebook"], template=RunnerPodTemplate(
        node_selector={"topology.kubernetes.io/zone": "us-east-1b", "disk": "ssd"}))
    assert pod["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "topology.kubernetes.io/zone": "us-east-1b", "disk": "ssd"}
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert all(e["key"] != "topology.kubernetes.io/zone"
               for t in terms for e in t.get("matchExpressions", []))


def test_tolerations_appended_without_repeats() -> None:
    toleration = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
                  "effect": "NoSchedule"}
    extra = {"key": "batch", "operator": "Exists"}
    pod = build(PARENTS["z2jh-singleuser"],
                template=RunnerPodTemplate(tolerations=[toleration, extra]))
    assert pod["spec"]["tolerations"] == [*PARENTS["z2jh-singleuser"]["spec"]["tolerations"],
                                          extra]


def test_affinity_replaced_per_kind() -> None:
    mine = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    pod = build(PARENTS["statefulset"], template=RunnerPodTemplate(affinity=mine))
    assert pod["spec"]["affinity"]["nodeAffinity"] == mine["nodeAffinity"]
    assert "podAntiAffinity" in pod["spec"]["affinity"]


# ------------------------------------------------------------------------ volumes, image


def test_volume_option_mounts_existing_claims() -> None:
    pod = build(PARENTS["z2jh-singleuser"], template=RunnerPodTemplate(
        volumes=[("datasets", "/mnt/data"), ("jhub-shared", "/home/shared"),
                 ("claim-alice", "/home/jovyan")]))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["flame-datasets"] == {"name": "flame-datasets",
                                         "persistentVolumeClaim": {"claimName": "datasets"}}
    assert mounts == {"/mnt/data": "flame-datasets", "/home/shared": "shared",
                      "/home/jovyan": "flame-claim-alice"}


def test_image_env_and_pull_secrets() -> None:
    pod = build(PARENTS["deployment"], **OPTION_SETS["image-env"])
    runner = pod["spec"]["containers"][0]
    assert runner["image"] == "example.com/runner:1"
    assert runner["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-creds"},
                                               {"name": "extra-creds"}]
    assert env_of(pod)["OMP_NUM_THREADS"]["value"] == "4"


def test_template_cannot_override_runner_env() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(
        env={"JUPYTER_FLAME_KEY": "leaked", "JUPYTER_FLAME_PARENT": "evil:1", "DATA_DIR": "/x"}))
    env = env_of(pod)
    assert "value" not in env["JUPYTER_FLAME_KEY"]
    assert env["JUPYTER_FLAME_PARENT"]["value"] == "10.42.0.17:40123"
    assert env["DATA_DIR"]["value"] == "/x"


# ------------------------------------------------------------------ labels, names, owners


def test_labels_sanitized_and_originals_annotated() -> None:
    pool = "gpu=1,memory=24Gi,image=example.com/team/a-very-long-image-name:2026.11.21-cuda12"
    parent = copy.deepcopy(PARENTS["deployment"])
    parent["metadata"]["name"] = "n" * 80 + "-x"
    pod = build(parent, pool=pool, kernel_id="")
    labels = pod["metadata"]["labels"]
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert labels["jupyter-flame/kernel"] == ""
    assert pod["metadata"]["annotations"]["jupyter-flame/pool-name"] == pool
    assert labels["jupyter-flame/pool"] != build(parent, pool=pool + "x")["metadata"]["labels"][
        "jupyter-flame/pool"]
    assert len(pod["metadata"]["generateName"]) <= 58


def test_template_labels_kept_unless_equal_to_the_parents() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(
        labels={"team": "ml", "app": "notebook", "jupyter-flame/pool": "x"},
        annotations={"note": "hi"}))
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "ml" and "app" not in labels
    assert labels["jupyter-flame/pool"] == "default"
    assert pod["metadata"]["annotations"]["note"] == "hi"


def test_service_account_never_the_parents() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(service_account="runner-sa"))
    assert pod["spec"]["serviceAccountName"] == "runner-sa"

    def copies_parent(parent: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"serviceAccountName": parent["spec"]["serviceAccountName"]}}

    pod = build(PARENTS["deployment"], template=copies_parent)
    assert pod["spec"]["serviceAccountName"] == "jupyter-flame-runner"


def test_missing_uid_needs_omit_owner_reference() -> None:
    parent = copy.deepcopy(PARENTS["deployment"])
    del parent["metadata"]["uid"]
    with pytest.raises(ConfigError, match="omit_owner_reference"):
        build(parent)
    assert "ownerReferences" not in build(parent, omit_owner_reference=True)["metadata"]


# ------------------------------------------------------------------- callables and merging


def test_callable_result_is_merged_then_forced() -> None:
    seen: list[dict[str, Any]] = []

    def template(parent: dict[str, Any]) -> dict[str, Any]:
        seen.append(parent)
        parent["metadata"]["name"] = "mutated"  # a copy: must not leak back
        return {
            "metadata": {"labels": {"team": "ml", "pod-template-hash": "7d9c6b5f4"}},
            "spec": {
                "restartPolicy": "Always",
                "nodeName": "node-b",
                "automountServiceAccountToken": True,
                "priorityClassName": None,  # None deletes
                "containers": [
                    {"env": [{"name": "EXTRA", "value": "1"}], "args": ["--nope"]},
                    {"name": "proxy", "image": "envoy:1"},
                ],
            },
        }

    pod = build(PARENTS["deployment"], template=template)
    assert seen and PARENTS["deployment"]["metadata"]["name"] == "notebook-7d9c6b5f4-x2k8p"
    spec = pod["spec"]
    assert [c["name"] for c in spec["containers"]] == ["runner", "proxy"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert "nodeName" not in spec
    assert env_of(pod)["EXTRA"]["value"] == "1"
    assert env_of(pod)["DATA_DIR"]["value"] == "/data"  # the clone is still there
    assert "args" not in spec["containers"][0]
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert "pod-template-hash" not in pod["metadata"]["labels"]


def test_callable_then_magic_options() -> None:
    pod = build(PARENTS["deployment"], **OPTION_SETS["callable-magic"])
    assert pod["spec"]["terminationGracePeriodSeconds"] == 7
    assert resources(pod)["requests"]["cpu"] == "6"  # the cell's option wins over the callable


def test_callable_must_return_a_dict() -> None:
    with pytest.raises(ConfigError, match="must return a dict"):
        build(PARENTS["deployment"], template=lambda parent: None)


def test_extra_is_deep_merged() -> None:
    pod = build(PARENTS["deployment"], template=RunnerPodTemplate(extra={
        "spec": {"terminationGracePeriodSeconds": 3, "nodeSelector": {"kubernetes.io/os": None},
                 "containers": [{"name": "runner", "stdin": True}]}}))
    assert pod["spec"]["terminationGracePeriodSeconds"] == 3
    assert "nodeSelector" not in pod["spec"] or not pod["spec"]["nodeSelector"]
    assert pod["spec"]["containers"][0]["stdin"] is True


def test_magic_options_win_over_the_template() -> None:
    template = RunnerPodTemplate(cpu=1, memory="1Gi", env={"A": "0", "B": "2"},
                                 node_selector={"pool": "cpu"}, gpu_type="L4",
                                 volumes=[("one", "/mnt/a")])
    spec = RunnerSpec(gpu=1, gpu_type="H100", memory="16Gi", env=(("A", "1"),),
                      node_selector=(("pool", "gpu"),), volumes=(("two", "/mnt/a"),),
                      tolerations=(("spot", "true", "NoSchedule"), ("dedicated", None, "")))
    merged = template.with_spec(spec)
    assert (merged.cpu, merged.memory, merged.gpu, merged.gpu_type) == (1, "16Gi", 1, "H100")
    assert merged.env == {"A": "1", "B": "2"}
    assert merged.node_selector == {"pool": "gpu"}
    assert merged.volumes == [("two", "/mnt/a")]
    assert merged.tolerations == [
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists"}]
    pod = build(PARENTS["deployment"], template=template, spec=spec)
    assert resources(pod)["requests"] == {"cpu": "1", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert template.with_spec(None) is template
