"""The agents' kubelet API: ``GET /containerLogs/<ns>/<pod>/<container>`` over HTTPS.

What a kube-apiserver does for ``kubectl logs``: read the pod's Node for its
InternalIP and ``daemonEndpoints.kubeletEndpoint.Port``, then fetch the log from
that kubelet, presenting its kubelet client certificate (``DIR/pki``).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:  # tests/sim may or may not become a package
    from .agent_fixtures import kubelet_endpoint, kubelet_get, python_pod
except ImportError:
    from agent_fixtures import kubelet_endpoint, kubelet_get, python_pod  # type: ignore[no-redef]

pytestmark = pytest.mark.sim

NODE = "flame-sim-node-0"


def sim(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_flame.sim", *args],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


class Kubelet:
    """The pieces an API server needs to reach one node's kubelet API."""

    def __init__(self, d: Path, core: Any) -> None:
        self.core = core
        self.endpoint = kubelet_endpoint(core, NODE)
        self.ca = d / "pki" / "kubelet-ca.crt"
        self.cert = (d / "pki" / "apiserver-kubelet-client.crt",
                     d / "pki" / "apiserver-kubelet-client.key")  # fmt: skip

    def get(self, pod: str, query: str = "", container: str = "main", cert: bool = True) -> Any:
        path = f"/containerLogs/default/{pod}/{container}" + (f"?{query}" if query else "")
        return kubelet_get(self.endpoint, path, self.ca, self.cert if cert else None)

    def text(self, pod: str, query: str = "", **kw: Any) -> tuple[int, str]:
        resp = self.get(pod, query, **kw)
        return resp.status, resp.read().decode()


def admin_client(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def create(core: Any, pod: dict[str, Any]) -> str:
    core.create_namespaced_pod("default", pod, _preload_content=False)
    return str(pod["metadata"]["name"])


def wait_status(core: Any, name: str, done: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = json.loads(core.read_namespaced_pod(name, "default", _preload_content=False).data)
        if done(pod["status"]):
            return dict(pod)
        assert time.monotonic() < deadline, pod["status"]
        time.sleep(0.05)


def finished(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def printer(name: str, lines: int, pause: float, **spec: Any) -> dict[str, Any]:
    code = f"import time\nfor i in range({lines}):\n  print('line', i, flush=True)\n  time.sleep({pause})"
    return python_pod(name, code, **spec)


@pytest.fixture(scope="module")
def kubelet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubelet]:
    d = tmp_path_factory.mktemp("sim")
    sim("up", "--dir", str(d))
    try:
        yield Kubelet(d, admin_client(d / "admin.kubeconfig"))
    finally:
        sim("down", "--dir", str(d))


def test_the_node_advertises_the_port_the_agent_serves(kubelet: Kubelet) -> None:
    ip, port = kubelet.endpoint
    assert ip == "127.0.0.1" and port not in (0, 10250)
    name = create(kubelet.core, printer("advertised", 1, 0))
    wait_status(kubelet.core, name, finished)
    assert kubelet.text(name) == (200, "line 0\n")


def test_tail_lines_limit_bytes_and_timestamps(kubelet: Kubelet) -> None:
    name = create(kubelet.core, printer("printer", 5, 0.2))
    t0 = time.time()
    pod = wait_status(kubelet.core, name, finished)
    t1 = time.time()
    assert pod["status"]["phase"] == "Succeeded"
    full = "".join(f"line {i}\n" for i in range(5))
    assert kubelet.text(name) == (200, full)
    assert kubelet.text(name, "tailLines=2") == (200, "line 3\nline 4\n")
    assert kubelet.text(name, "tailLines=0") == (200, "")
    assert kubelet.text(name, "limitBytes=9") == (200, "line 0\nli")
    assert kubelet.text(name, "tailLines=1&limitBytes=100") == (200, "line 4\n")
    assert kubelet.text(name, "tailLines=-1")[0] == 422
    assert kubelet.text(name, "limitBytes=0")[0] == 422

    status, body = kubelet.text(name, "timestamps=true")
    assert status == 200
    stamps, texts = zip(*(line.split(" ", 1) for line in body.splitlines()), strict=True)
    assert list(texts) == [f"line {i}" for i in range(5)]
    times = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
    assert all(len(s) == len("2006-01-02T15:04:05.000000000Z") for s in stamps)
    assert times == sorted(times) and t0 - 1 < times[0] and times[-1] < t1
    # printed 0.2 s apart, stamped within the stamper's 0.1 s
    assert times[-1] - times[0] > 0.5
    status, recent = kubelet.text(name, "sinceSeconds=3600&tailLines=1&timestamps=true")
    assert recent.endswith(" line 4\n")


def test_follow_streams_lines_as_printed_until_the_container_exits(kubelet: Kubelet) -> None:
    name = create(kubelet.core, printer("follower", 4, 0.5))
    wait_status(kubelet.core, name, lambda s: s.get("phase") == "Running")
    resp = kubelet.get(name, "follow=true")
    assert resp.status == 200
    arrivals = []
    for line in resp:
        arrivals.append((time.monotonic(), line.decode()))
    ended = time.monotonic()
    assert [text for _, text in arrivals] == [f"line {i}\n" for i in range(4)]
    # lines come as printed, not all at the end
    assert arrivals[-1][0] - arrivals[0][0] > 1.0
    # the stream ends with the container (it sleeps 0.5 s after its last line)
    assert ended - arrivals[-1][0] < 3.0
    assert finished(wait_status(kubelet.core, name, finished, timeout=5)["status"])


def test_previous_is_the_restarted_containers_last_instance(kubelet: Kubelet) -> None:
    marker = f"/tmp/jupyter-flame-test-{uuid.uuid4().hex}"
    code = (
        f"import os\nfirst = not os.path.exists({marker!r})\nopen({marker!r}, 'w').close()\n"
        "print('first run' if first else 'second run')\nraise SystemExit(1 if first else 0)"
    )
    name = create(kubelet.core, python_pod("restarter", code, restartPolicy="OnFailure"))
    pod = wait_status(kubelet.core, name, lambda s: s.get("phase") == "Succeeded")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1
    assert kubelet.text(name) == (200, "second run\n")
    assert kubelet.text(name, "previous=true") == (200, "first run\n")
    Path(marker).unlink()


def test_refusals_say_what_is_wrong(kubelet: Kubelet) -> None:
    name = create(kubelet.core, printer("once", 1, 0))
    wait_status(kubelet.core, name, finished)
    assert kubelet.text("no-such-pod") == (404, 'pod "no-such-pod" does not exist\n')
    assert kubelet.text(name, container="nope") == (
        404,
        'container "nope" not found in pod "once"\n',
    )
    assert kubelet.text(name, "previous=true") == (
        400,
        'previous terminated container "main" in pod "once" not found\n',
    )
    bad = python_pod("bad-image", "pass", container={"image": "nowhere.example/none:1"})
    create(kubelet.core, bad)
    wait_status(kubelet.core, "bad-image",
                lambda s: "waiting" in ((s.get("containerStatuses") or [{}])[0].get("state") or {}))  # fmt: skip
    status, body = kubelet.text("bad-image")
    assert status == 400 and 'container "main" in pod "bad-image" is waiting to start' in body


def test_no_client_certificate_is_401(kubelet: Kubelet, tmp_path: Path) -> None:
    name = create(kubelet.core, printer("secret", 1, 0))
    wait_status(kubelet.core, name, finished)
    assert kubelet.text(name, cert=False) == (401, "Unauthorized\n")
    # a certificate of another CA does not get through the handshake
    from jupyter_flame.sim.agent.certs import ensure_pki

    other = ensure_pki(tmp_path / "other", "127.0.0.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        kubelet_get(kubelet.endpoint, f"/containerLogs/default/{name}/main", kubelet.ca,
                    (other.client_cert, other.client_key)).read()  # fmt: skip


def test_agents_of_an_external_apiserver_serve_their_pods_logs(tmp_path: Path) -> None:
    """``sim up --apiserver URL --kubeconfig FILE``: the API server (ours, started apart,
    with its own state dir, so it cannot read the agent's files) finds the logs only
    through the Node's advertised kubelet endpoint."""
    from jupyter_flame.sim.apiserver.launch import start_apiserver

    d = tmp_path / "sim"
    with start_apiserver(tmp_path / "external") as server:
        admin = server.write_kubeconfig(tmp_path / "admin.kubeconfig")
        out = sim("up", "--dir", str(d), "--apiserver", server.url, "--kubeconfig", str(admin))
        try:
            assert "apiserver-kubelet-client.crt" in out
            assert "--kubelet-preferred-address-types=InternalIP" in out
            kubelet = Kubelet(d, admin_client(admin))
            name = create(kubelet.core, printer("external", 3, 0))
            wait_status(kubelet.core, name, finished)
            assert kubelet.text(name, "tailLines=2") == (200, "line 1\nline 2\n")
            assert not (tmp_path / "external" / "logs" / "default" / name).exists()
        finally:
            sim("down", "--dir", str(d))


def agent(tmp_path: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_flame.sim.agent", "--kubeconfig", str(kubeconfig),
         "--state-dir", str(tmp_path), "--node-name-prefix", "refused-", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_agent_that_cannot_bind_says_which_flag_to_change(
    kubelet: Kubelet, tmp_path: Path
) -> None:
    d = kubelet.ca.parent.parent
    taken = str(kubelet.endpoint[1])
    done = agent(tmp_path, d / "admin.kubeconfig", "--kubelet-port", taken)
    assert done.returncode != 0
    assert f"cannot serve the kubelet API (kubectl logs) on 127.0.0.1:{taken}" in done.stderr
    assert "--kubelet-port" in done.stderr


def test_an_agent_without_node_rights_says_what_it_needs(kubelet: Kubelet, tmp_path: Path) -> None:
    d = kubelet.ca.parent.parent
    done = agent(tmp_path, d / "kubeconfig")  # the notebook's token: no rights on nodes
    assert done.returncode == 1
    assert "the API server refused to register node refused-0: 403" in done.stderr
    assert "nodes: create, get, list, watch, patch; nodes/status: patch" in done.stderr
