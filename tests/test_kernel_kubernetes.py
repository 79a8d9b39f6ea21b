"""%%flame cells in a real kernel that believes it runs in a pod of the local Kubernetes
stand-in: runner pods cloned from the notebook pod, checked through the official client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import wait_gone
from .kernel_harness import Kernel
from .sim_harness import MANAGED, Sim

pytestmark = [pytest.mark.kernel, pytest.mark.sim]


@pytest.fixture(scope="module")
def kernel(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"), env=sim.env)
    assert k.run("x = 2\nfrom jupyter_flame.pool.pool import get_pool").status == "ok"
    yield k
    k.run("%flame shutdown --all")
    k.shutdown()


def test_cell_runs_in_a_runner_pod_cloned_from_the_notebook(sim: Sim, kernel: Kernel) -> None:
    res = kernel.run("%%flame\nimport os\ny = x * 21\nos.environ['JUPYTER_FLAME_RUNNER_ID']\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("y") == 42
    runner_id = (res.result or "").strip("'")
    assert kernel.value("get_pool('default').backend.name") == "kubernetes"
    # the kernel listens on the notebook pod's IP only
    assert kernel.value("get_pool('default')._core.listener.address[0]") == sim.env["POD_IP"]
    pods = sim.runner_pods(f"jupyter-flame/runner={runner_id}")
    assert len(pods) == 1
    pod = pods[0]
    parent = sim.admin.read_namespaced_pod(sim.env["POD_NAME"], "default")
    labels = pod.metadata.labels
    assert labels["jupyter-flame/pool"] == "default"
    assert labels["jupyter-flame/parent"] == parent.metadata.name
    assert "jupyter-flame/kernel" in labels
    assert not set(parent.metadata.labels.items()) & set(labels.items())  # never the parent's
    assert pod.metadata.name.startswith(f"{parent.metadata.name}-flame-")
    owners = pod.metadata.owner_references
    assert [(o.kind, o.name, o.uid) for o in owners] == [("Pod", parent.metadata.name,
                                                          parent.metadata.uid)]
    spec = pod.spec
    assert spec.restart_policy == "Never"
    assert spec.automount_service_account_token is False
    assert spec.service_account_name == "jupyter-flame-runner"
    assert [c.name for c in spec.containers] == ["runner"]
    runner = spec.containers[0]
    assert runner.image == parent.spec.containers[0].image
    assert "jupyter_flame.runner" in " ".join((runner.command or []) + (runner.args or []))
    key = [e for e in runner.env if e.name == "JUPYTER_FLAME_KEY"]
    assert len(key) == 1 and key[0].value is None and key[0].value_from.secret_key_ref.name
    assert not any("kube-api-access" in (v.name or "") for v in spec.volumes or [])
    assert runner.resources.requests and runner.resources.limits


def test_runner_pod_key_is_nowhere_in_its_environment(sim: Sim, kernel: Kernel) -> None:
    """The key comes from the Secret as an environment variable; the runner moves it into a
    pipe and re-executes (same pid), so neither os.environ nor /proc/<pid>/environ has it, and
    the channel is encrypted."""
    import base64

    res = kernel.run("%%flame\nimport os\npid = os.getpid()\n"
                     "seen = [k for k in os.environ if k.startswith('JUPYTER_FLAME_KEY')]\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("seen") == []
    pid = kernel.value("pid")
    secrets = sim.admin.list_namespaced_secret("default", label_selector=MANAGED).items
    keys = [base64.b64decode(v).decode() for s in secrets for v in (s.data or {}).values()]
    assert keys and all(len(k) >= 32 for k in keys)
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"JUPYTER_FLAME_RUNNER_ID" in environ  # we read the right process
    assert not any(k.encode() in environ for k in keys)
    assert b"JUPYTER_FLAME_KEY=" not in environ
    assert kernel.value("get_pool('default').status()['channel']") == "encrypted"


def test_backend_local_opts_out_inside_a_pod(sim: Sim, kernel: Kernel) -> None:
    res = kernel.run("%%flame --backend local\nimport os\nos.environ.get('JUPYTER_FLAME_RUNNER_ID')\n")
    assert res.status == "ok", res.traceback_text()
    runner_id = (res.result or "").strip("'")
    assert runner_id and sim.runner_pods(f"jupyter-flame/runner={runner_id}") == []
    assert kernel.value("get_pool('local:default').backend.name") == "local"


def test_gpu_cell_gets_a_gpu_node_and_its_devices(sim: Sim, kernel: Kernel) -> None:
    res = kernel.run("%%flame --gpu 1\nimport os\n"
                     "(os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['JUPYTER_FLAME_RUNNER_ID'])")
    assert res.status == "ok", res.traceback_text()
    devices, runner_id = eval(res.result or "")
    assert devices in ("0", "1")
    pods = sim.runner_pods(f"jupyter-flame/runner={runner_id}")
    assert len(pods) == 1
    pod = pods[0]
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)
    node = sim.admin.read_node(pod.spec.node_name)
    assert node.status.allocatable.get("nvidia.com/gpu") == "2"


def test_unknown_image_fails_fast_and_leaves_no_pod(sim: Sim, kernel: Kernel) -> None:
    # an explicit pool, so the label checked below is known (label_value keeps "img-bad")
    assert kernel.run("%flame pool img-bad --image registry.invalid/nope:1").status == "ok"
    t0 = time.monotonic()
    res = kernel.run("%%flame --pool img-bad\n1\n")
    assert res.status == "error"
    assert res.error is not None and res.error["ename"] == "BootError"
    assert "ErrImagePull" in res.traceback_text() or "ImagePullBackOff" in res.traceback_text()
    assert time.monotonic() - t0 < 15
    assert sim.wait_no_runner_pods_of("img-bad") == []


def test_unschedulable_gpu_request_reports_the_scheduler(sim: Sim, kernel: Kernel) -> None:
    assert kernel.run("%flame pool huge --gpu 8 --boot-timeout 3").status == "ok"
    t0 = time.monotonic()
    res = kernel.run("%%flame --pool huge\n1\n")
    assert res.status == "error"
    text = res.traceback_text()
    assert "Insufficient nvidia.com/gpu" in text and "boot_timeout" in text
    assert time.monotonic() - t0 < 15
    assert sim.wait_no_runner_pods_of("huge") == []


def test_shutdown_all_leaves_no_runner_pod(sim: Sim, kernel: Kernel) -> None:
    assert kernel.run("%%flame\nz = 1\n").status == "ok"
    assert sim.runner_pods()
    assert kernel.run("%flame shutdown --all").status == "ok"
    assert [p.metadata.name for p in sim.runner_pods()] == []
    secrets = sim.admin.list_namespaced_secret("default", label_selector=MANAGED).items
    assert [s.metadata.name for s in secrets] == []


def test_role_without_create_pods_gives_a_clear_403(sim: Sim, tmp_path: Path) -> None:
    from kubernetes import client

    sa = "limited-notebook"
    sim.admin.create_namespaced_service_account(
        "default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa)))
    sim.rbac.create_namespaced_role("default", client.V1Role(
        metadata=client.V1ObjectMeta(name=sa),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"],
                                   verbs=["get", "list", "watch"]),
               client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                                   verbs=["create", "get", "delete"])]))
    sim.rbac.create_namespaced_role_binding("default", client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=sa),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=sa),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=sa, namespace="default")]))
    token = sim.admin.create_namespaced_service_account_token(
        sa, "default", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[]))).status.token
    import yaml

    cfg = yaml.safe_load(Path(sim.env["KUBECONFIG"]).read_text())
    cfg["users"][0]["user"] = {"token": token}
    limited = tmp_path / "limited.kubeconfig"
    limited.write_text(yaml.safe_dump(cfg))
    k = Kernel(cwd=tmp_path, env={**sim.env, "KUBECONFIG": str(limited)})
    try:
        t0 = time.monotonic()
        res = k.run("%%flame\n1\n")
        assert res.status == "error"
        assert res.error is not None and res.error["ename"] == "BackendError"
        text = res.traceback_text()
        assert "403" in text or "Forbidden" in text or "forbidden" in text
        assert "create" in text and "pods" in text and "rbac.yaml" in text
        assert time.monotonic() - t0 < 10
        assert sim.runner_pods() == []
    finally:
        k.shutdown()


def test_kernel_exit_deletes_its_runner_pods(sim: Sim, tmp_path: Path) -> None:
    k = Kernel(cwd=tmp_path, env=sim.env)
    res = k.run("%%flame\nimport os\nos.environ['JUPYTER_FLAME_RUNNER_ID']\n")
    assert res.status == "ok", res.traceback_text()
    runner_id = (res.result or "").strip("'")
    assert sim.runner_pods(f"jupyter-flame/runner={runner_id}")
    k.shutdown()  # a normal kernel shutdown (restart, close the notebook)
    assert sim.runner_pods(f"jupyter-flame/runner={runner_id}") == []
    secrets = sim.admin.list_namespaced_secret("default", label_selector=MANAGED).items
    assert [s.metadata.name for s in secrets] == []


def test_killed_kernel_leaves_no_runner(sim: Sim, tmp_path: Path) -> None:
    k = Kernel(cwd=tmp_path, env=sim.env)
    res = k.run("%%flame\nimport os\n(os.getpid(), os.environ['JUPYTER_FLAME_RUNNER_ID'])\n")
    assert res.status == "ok", res.traceback_text()
    pid, runner_id = eval(res.result or "")
    k.kill()
    # the runner process notices its kernel is gone and exits (parent_timeout is 10 s)
    assert wait_gone({pid}, 15) == set()
    deadline = time.monotonic() + 10
    while True:
        pods = sim.runner_pods(f"jupyter-flame/runner={runner_id}")
        if not pods or pods[0].status.phase in ("Succeeded", "Failed"):
            break
        assert time.monotonic() < deadline, f"runner pod still {pods[0].status.phase}"
        time.sleep(0.2)
    # the finished runner pod of a dead kernel stays until the next pool start in this
    # notebook pod, or `jupyter flame cleanup`, sweeps it
    assert pods and pods[0].status.phase in ("Succeeded", "Failed")
    out = subprocess.run([sys.executable, "-m", "jupyter_flame.cli", "cleanup"],
                         env={**os.environ, **sim.env}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert sim.runner_pods(f"jupyter-flame/runner={runner_id}") == []
    assert f"deleted runner pod default/{pods[0].metadata.name}" in out.stdout, out.stdout


def test_widget_follows_the_runner_pod(sim: Sim, kernel: Kernel) -> None:
    from .widget_trace import html_values, steps

    kernel.comm_log.clear()
    res = kernel.run("%%flame --pool wpod --cpu 100m\nimport time\ntime.sleep(1)\n")
    assert res.status == "ok", res.traceback_text()
    values = html_values(kernel.comm_log)
    seen = steps(values)
    assert "booting" in seen and seen[-1] == "done", seen
    # the Kubernetes steps of the pod show while it boots, with the pod's name and request
    booting = [v for v in values if "booting a runner" in v]
    # every phase the pod went through, in order, even where updates were coalesced
    trail = re.split(r" \(|<", booting[-1].split("booting a runner: ")[1])[0].split(" &gt; ")
    assert trail[:2] == ["requested", "scheduling"] and trail[-1] == "starting", trail
    assert "pod jupyter-flame-notebook-0-flame-" in booting[-1] and " on flame-sim-node-0" in booting[-1]
    assert "cpu=100m" in values[-1] and "on flame-sim-node-0" in values[-1]


def test_widget_shows_why_a_pod_stays_pending(sim: Sim, kernel: Kernel) -> None:
    from .widget_trace import html_values, steps

    kernel.comm_log.clear()
    assert kernel.run("%flame pool whuge --gpu 8 --boot-timeout 3").status == "ok"
    res = kernel.run("%%flame --pool whuge\n1\n")
    assert res.status == "error"
    values = html_values(kernel.comm_log)
    booting = [v for v in values if "booting a runner" in v]
    assert any("Unschedulable" in v and "Insufficient nvidia.com/gpu" in v for v in booting), (
        steps(values), values)
    final = values[-1]
    assert "flame-failed" in final and "Insufficient nvidia.com/gpu" in final
    assert "Last events" in final


def test_widget_failure_summary_of_an_image_that_cannot_be_pulled(sim: Sim,
                                                                  kernel: Kernel) -> None:
    from .widget_trace import html_values

    kernel.comm_log.clear()
    assert kernel.run("%flame pool wimg --image registry.invalid/nope:1").status == "ok"
    res = kernel.run("%%flame --pool wimg\n1\n")
    assert res.status == "error"
    final = html_values(kernel.comm_log)[-1]
    assert "flame-failed" in final and ("ErrImagePull" in final or "ImagePullBackOff" in final)
    assert "BootError" in final


def test_timeout_error_names_the_scheduler_reason(sim: Sim, kernel: Kernel) -> None:
    assert kernel.run("%flame pool wwait --gpu 8 --boot-timeout 30").status == "ok"
    res = kernel.run("%%flame --pool wwait --timeout 3\n1\n")
    assert res.status == "error"
    text = res.traceback_text()
    assert "became available within 3 s" in text and "Insufficient nvidia.com/gpu" in text


def test_runner_pod_over_its_memory_limit_says_out_of_memory(sim: Sim, kernel: Kernel) -> None:
    """The stand-in's node enforces limits.memory like a cgroup: a cell that allocates past
    --memory is OOMKilled; the cell says "out of memory" with the limit and the fix (not a
    bare exit code), nothing is bound, the pod is deleted, the next cell gets a new runner."""
    res = kernel.run("%%flame --memory 400Mi\nhog = bytearray(1 << 30)\n")
    assert res.status == "error"
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.traceback_text())
    assert "RunnerLostError" in text and "out of memory" in text, text
    assert "400Mi" in text and "--memory" in text, text
    assert kernel.value("'hog' in dir()") is False
    from jupyter_flame.backends.kubernetes._pod_parts import label_value

    selector = f"jupyter-flame/pool={label_value('memory=400Mi')}"
    runner = re.search(r"Runner (\S+) (?:\(pod \S+\) )?of pool", text)
    assert runner is not None, text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
            p.metadata.labels.get("jupyter-flame/runner") == runner.group(1)
            for p in sim.runner_pods(selector)):
        time.sleep(0.2)
    assert not any(p.metadata.labels.get("jupyter-flame/runner") == runner.group(1)
                   for p in sim.runner_pods(selector)), "the OOMKilled pod was left"
    res = kernel.run("%%flame --memory 400Mi\nsmall = len(bytearray(1 << 20))\n")
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("small") == 1 << 20


def test_runner_pod_stuck_in_c_dies_with_its_sigkilled_kernel(sim: Sim, tmp_path: Path) -> None:
    """A pod runner whose cell holds the GIL in C cannot run its own liveness checks; its
    connection sentinel sees the kernel's end of the socket close and kills the group (the
    runner and the cell's child) within the grace period."""
    from .conftest import pid_alive, wait_dead

    pids = tmp_path / "pids.txt"
    k = Kernel(cwd=tmp_path, env=sim.env)
    killed = False
    try:
        assert k.run(
            "%%flame --bg --pool pod-stuck\nimport os, re, subprocess\n"
            "child = subprocess.Popen(['sleep', '600'])\n"
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
            "re.match(r'(a+)+$', 'a' * 40 + 'b')\n").status == "ok"
        deadline = time.monotonic() + 60
        while not pids.exists() or not pids.read_text():
            assert time.monotonic() < deadline, "the cell never started"
            time.sleep(0.1)
        runner, child = map(int, pids.read_text().split())
        time.sleep(1.0)
        assert pid_alive(runner) and pid_alive(child)
        k.kill()
        killed = True
        left = wait_dead({runner, child}, 15)
        assert runner not in left, "the runner pod's process outlived its kernel"
        assert child not in left, "the cell's child outlived its kernel"
    finally:
        if not killed:
            k.shutdown()
