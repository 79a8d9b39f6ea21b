"""``jupyter flame sim up|down``: start and stop the local Kubernetes stand-in.

``sim up --dir DIR`` starts the API server (unless ``--apiserver URL
--kubeconfig FILE`` names an existing one) and one agent process serving all
nodes, both detached in their own sessions, then registers a notebook pod the
way a cluster would run one, and writes:

``DIR/kubeconfig``
    The notebook ServiceAccount's token (RBAC applies, as in a pod).
``DIR/admin.kubeconfig``
    The admin token (for kubectl and tests).
``DIR/notebook.env``
    ``KEY=value`` lines: ``KUBECONFIG``, ``POD_NAME``, ``POD_NAMESPACE``,
    ``POD_IP``; load with ``set -a; . DIR/notebook.env; set +a``.
``DIR/sim.json``
    Process ids and addresses for ``sim down``.
``DIR/pki/kubelet-ca.crt``, ``DIR/pki/apiserver-kubelet-client.{crt,key}``
    The kubelet API's CA and the client certificate an API server presents to
    the agent's ``/containerLogs`` (kube-apiserver's
    ``--kubelet-client-certificate``/``--kubelet-client-key``; trust
    ``kubelet-ca.crt`` with ``--kubelet-certificate-authority``). See
    :mod:`jupyter_flame.sim.agent.certs`. ``--kubelet-client-ca FILE`` makes the
    agent accept client certificates of another CA (an external API server's).
    The agent listens on the nodes' InternalIP (127.0.0.1) at a free port it
    advertises as ``daemonEndpoints.kubeletEndpoint.Port``; a kube-apiserver
    needs ``--kubelet-preferred-address-types=InternalIP`` to dial it (the nodes'
    ``Hostname`` addresses resolve nowhere).

Nodes are ``flame-sim-node-<i>``. With ``--gpus-per-node G`` the ``--nodes N``
nodes carry G ``nvidia.com/gpu`` each (label ``nvidia.com/gpu.product``, taint
``nvidia.com/gpu:NoSchedule``) and ``--cpu-nodes`` (default 1) untainted nodes
come first, as a cluster's default pool beside its GPU pool, so CPU pods still
schedule.

The notebook pod (``jupyter-flame-notebook-0``) is bound to the first node and
annotated ``sim.jupyter-flame/external: "true"``: the kubelet adopts it (an IP,
Running, Ready) and runs nothing, because its process is the user's Jupyter
server started with ``notebook.env``.

``sim down --dir DIR`` stops the agent (which stops every container), kills
anything left in the recorded process groups, then stops the API server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .agent.certs import ensure_pki
from .agent.devices import HOST_IP
from .agent.images import DEFAULT_IMAGES
from .agent.node import DEFAULT_GPU_PRODUCT
from .agent.process import kill_recorded, proc_start_time
from .agent.rest import RestError
from .kubeconfig import current_context, kubeconfig_text
from .notebook_pod import NOTEBOOK_POD, NOTEBOOK_SA, notebook_pod

__all__ = ["main", "NOTEBOOK_POD", "NOTEBOOK_SA", "RUNNER_SA", "load_rbac"]

RUNNER_SA = "jupyter-flame-runner"
NODE_PREFIX = "flame-sim-node-"
Json = dict[str, Any]


class SimError(Exception):
    """``sim up``/``down`` cannot proceed; the message says why and what to do."""


def load_rbac(namespace: str = "default") -> list[Json]:
    """The objects of ``deploy/rbac.yaml`` (shipped as package data) for ``namespace``."""
    text = resources.files("jupyter_flame.sim").joinpath("rbac.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
    return docs


def _derived_kubeconfig(admin: Path, token: str, namespace: str, user: str) -> str:
    """A kubeconfig for ``token`` on the cluster (server, CA) of ``admin``'s current context."""
    current = current_context(admin)
    return kubeconfig_text(current.server, token, namespace, cluster=current.cluster, user=user)


def _spawn(argv: list[str], log: Path) -> int:
    """Start ``argv`` detached (own session), output to ``log``; return its pid.

    ``posix_spawn`` rather than ``Popen``: nothing to wait for or to warn about
    when ``sim up`` returns and leaves the process running.
    """
    return os.posix_spawn(
        argv[0],
        argv,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _exit_status(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


def _wait_file(path: Path, pid: int | None, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        code = _exit_status(pid) if pid is not None else None
        if code is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SimError(f"the {log.stem} process exited with {code} during start:\n{tail}")
        if time.monotonic() > deadline:
            raise SimError(f"{path} did not appear within {timeout:.0f} s; see {log}")
        time.sleep(0.01)


def _record(pid: int) -> Json:
    return {"pid": pid, "start": proc_start_time(pid)}


def _alive(record: Json | None) -> bool:
    if not record:
        return False
    return proc_start_time(int(record["pid"])) == record.get("start")


def _setup_cluster(
    admin_kubeconfig: Path, namespace: str, node: str, image: str
) -> tuple[str, str]:
    """Namespace, RBAC, notebook token and pod; returns (token, pod IP)."""
    from .agent.rest import Rest

    rest = Rest(admin_kubeconfig)
    try:
        rest.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        paths = {
            "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts",
            "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        }
        for doc in load_rbac(namespace):
            rest.create(paths[doc["kind"]], doc)
        token_req = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 365 * 24 * 3600},
        }
        resp = rest.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{NOTEBOOK_SA}/token", token_req
        )
        token = str(resp["status"]["token"])
        pods = f"/api/v1/namespaces/{namespace}/pods"
        pod = rest.create(pods, notebook_pod(namespace, node, image)) or rest.request(
            "GET", f"{pods}/{NOTEBOOK_POD}"
        )
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            query = urllib.parse.urlencode({"fieldSelector": f"metadata.name={NOTEBOOK_POD}"})
            for event in rest.watch(f"{pods}?{query}", pod["metadata"]["resourceVersion"], 20):
                ip = ((event.get("object") or {}).get("status") or {}).get("podIP")
                if ip:
                    break
        if not ip:
            raise SimError(
                "the notebook pod got no IP within 20 s: is the agent running? see agent.log"
            )
        return token, str(ip)
    finally:
        rest.close()


def up(args: argparse.Namespace) -> int:
    """``sim up``: see the module docstring."""
    t0 = time.monotonic()
    d: Path = args.dir.resolve()
    d.mkdir(parents=True, exist_ok=True)
    state_file = d / "sim.json"
    if state_file.exists():
        old = json.loads(state_file.read_text())
        if _alive(old.get("agent")) or _alive(old.get("apiserver")):
            raise SimError(
                f"a stand-in is already up in {d}; run `jupyter flame sim down --dir {d}` first"
            )
    if bool(args.apiserver) != bool(args.kubeconfig):
        raise SimError("--apiserver URL and --kubeconfig FILE go together")
    for stale in ("agent.ready", "apiserver.json"):
        (d / stale).unlink(missing_ok=True)
    state: Json = {"dir": str(d), "namespace": args.namespace}
    images = ",".join([*DEFAULT_IMAGES, *[i for i in args.images.split(",") if i.strip()]])
    cpu_nodes = args.cpu_nodes if args.cpu_nodes is not None else (1 if args.gpus_per_node else 0)
    agent_args = [
        "--state-dir", str(d), "--nodes", str(args.nodes),
        "--gpus-per-node", str(args.gpus_per_node), "--cpu-nodes", str(cpu_nodes),
        "--gpu-product", args.gpu_product, "--images", images,
        "--node-name-prefix", NODE_PREFIX, "--ready-file", str(d / "agent.ready"),
        "--cpu", args.node_cpu, "--memory", args.node_memory,
    ]  # fmt: skip
    names = tuple(f"{NODE_PREFIX}{i}" for i in range(cpu_nodes + args.nodes))
    pki = ensure_pki(d / "pki", HOST_IP, names)
    client_ca = Path(args.kubelet_client_ca).resolve() if args.kubelet_client_ca else pki.ca_cert
    agent_args += [
        "--kubelet-client-ca", str(client_ca), "--kubelet-port", str(args.kubelet_port),
        "--kubelet-tls-cert", str(pki.serving_cert), "--kubelet-tls-key", str(pki.serving_key),
    ]  # fmt: skip
    state["kubelet_client_ca"] = str(client_ca)
    watch = ["--exit-with", str(args.exit_with)] if args.exit_with else []
    agent_args += watch
    agent_log = d / "agent.log"
    if args.apiserver:
        admin = Path(args.kubeconfig).resolve()
        state["apiserver"] = None
        state["url"] = args.apiserver
        agent_args += ["--kubeconfig", str(admin)]
    else:
        # Start both at once: the agent imports the client while the server starts,
        # then takes the admin token from apiserver.json.
        agent_args += ["--apiserver-info", str(d / "apiserver.json")]
        log = d / "apiserver.log"
        apiserver = _spawn(
            [sys.executable, "-m", "jupyter_flame.sim.apiserver", "--port", str(args.port), "--state-dir", str(d),
             *watch],
            log,
        )  # fmt: skip
        state["apiserver"] = _record(apiserver)
    agent = _spawn([sys.executable, "-m", "jupyter_flame.sim.agent", *agent_args], agent_log)
    state["agent"] = _record(agent)
    state_file.write_text(json.dumps(state))
    try:
        if not args.apiserver:
            _wait_file(d / "apiserver.json", apiserver, log, 30)
            info = json.loads((d / "apiserver.json").read_text())
            admin = d / "admin.kubeconfig"
            # The API server writes an admin DIR/kubeconfig; it moves aside for the notebook's.
            admin.write_text(Path(info.get("kubeconfig") or d / "kubeconfig").read_text())
            admin.chmod(0o600)
            state["url"] = info["url"]
            state_file.write_text(json.dumps(state))
        token, ip = _setup_cluster(admin, args.namespace, f"{NODE_PREFIX}0", DEFAULT_IMAGES[0])
        _wait_file(d / "agent.ready", agent, agent_log, 20)
    except Exception:
        down_dir(d, quiet=True)
        raise
    kubeconfig = d / "kubeconfig"
    kubeconfig.write_text(_derived_kubeconfig(admin, token, args.namespace, NOTEBOOK_SA))
    kubeconfig.chmod(0o600)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "POD_NAME": NOTEBOOK_POD,
        "POD_NAMESPACE": args.namespace,
        "POD_IP": ip,
    }
    (d / "notebook.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    state.update(
        notebook_pod=NOTEBOOK_POD, pod_ip=ip, nodes=args.nodes, up_seconds=time.monotonic() - t0
    )
    state_file.write_text(json.dumps(state, indent=1))
    if args.gpus_per_node:
        nodes = (
            f"{args.nodes + cpu_nodes} node(s): {args.nodes} with {args.gpus_per_node} x "
            f"{args.gpu_product} (taint nvidia.com/gpu:NoSchedule), {cpu_nodes} without GPUs"
        )
    else:
        nodes = f"{args.nodes} node(s)"
    hint = ""
    if args.apiserver:
        client = (
            f"its kubelet client certificate (signed by {client_ca})"
            if args.kubelet_client_ca
            else f"--kubelet-client-certificate {pki.client_cert} --kubelet-client-key "
            f"{pki.client_key}"
        )
        hint = (
            f"  for kubectl logs, run the API server with {client} --kubelet-certificate-authority "
            f"{pki.ca_cert} --kubelet-preferred-address-types=InternalIP\n"
        )
    print(
        f"jupyter-flame sim is up in {time.monotonic() - t0:.2f} s: API server {state['url']}, "
        f"{nodes}.\n"
        f"  notebook pod  {args.namespace}/{NOTEBOOK_POD} ({ip}), ServiceAccount {NOTEBOOK_SA}\n"
        f"  kubeconfig    {kubeconfig}  (notebook token: RBAC applies)\n"
        f"  admin         {admin}\n"
        f"  logs          {d}/logs/<namespace>/<pod>/<container>.log, {agent_log}\n"
        f"  kubelet API   client cert {pki.client_cert} (key beside it), accepted CA "
        f"{client_ca}, serving CA {pki.ca_cert}\n"
        + hint
        + f"Use it:\n"
        f"  set -a; . {d}/notebook.env; set +a; jupyter lab   # kernels believe they run in the pod\n"
        f"  kubectl --kubeconfig {admin} get nodes,pods -A\n"
        f"Stop it:  jupyter flame sim down --dir {d}"
    )
    return 0


def _stop(record: Json | None, timeout: float) -> None:
    if not _alive(record):
        return
    assert record is not None
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(record):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    # Only while it still runs: once it exited, its pid may name someone else's group.
    if _alive(record):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def down_dir(d: Path, quiet: bool = False) -> int:
    """Stop the stand-in recorded in ``d/sim.json``; returns the exit status."""
    state_file = d / "sim.json"
    if not state_file.exists():
        if not quiet:
            print(f"nothing to stop: no {state_file}", file=sys.stderr)
        return 0 if quiet else 1
    state = json.loads(state_file.read_text())
    _stop(state.get("agent"), 8.0)
    kill_recorded(d / "run" / "containers")
    _stop(state.get("apiserver"), 5.0)
    state_file.unlink(missing_ok=True)
    (d / "agent.ready").unlink(missing_ok=True)
    if not quiet:
        print(f"jupyter-flame sim in {d} is down")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``sim up|down`` arguments."""
    p = argparse.ArgumentParser(prog="jupyter flame sim", description="local Kubernetes stand-in")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the stand-in and register a notebook pod")
    u.add_argument("--dir", required=True, type=Path, help="state directory")
    u.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    u.add_argument(
        "--gpus-per-node", type=int, default=0, help="nvidia.com/gpu per node (default 0)"
    )
    u.add_argument(
        "--cpu-nodes",
        type=int,
        default=None,
        help="extra nodes without GPUs, numbered first (default: 1 with --gpus-per-node, else 0)",
    )
    u.add_argument(
        "--gpu-product", default=DEFAULT_GPU_PRODUCT, help="nvidia.com/gpu.product label"
    )
    u.add_argument(
        "--images", default="", help="extra images the fake registry serves (comma-separated)"
    )
    u.add_argument("--node-cpu", default="8", help="cpu capacity of each node (default 8)")
    u.add_argument("--node-memory", default="32Gi", help="memory of each node (default 32Gi)")
    u.add_argument("--namespace", default="default", help="namespace of the notebook pod")
    u.add_argument("--port", type=int, default=0, help="API server port (default: any free)")
    u.add_argument("--apiserver", help="use this API server instead of starting one")
    u.add_argument("--kubeconfig", help="admin kubeconfig for --apiserver")
    u.add_argument(
        "--kubelet-client-ca",
        help="CA of the client certificates the agent's kubelet API accepts "
        "(default: DIR/pki/kubelet-ca.crt, which signed DIR/pki/apiserver-kubelet-client.crt)",
    )
    u.add_argument(
        "--kubelet-port", type=int, default=0, help="kubelet API port (default: any free)"
    )
    u.add_argument("--exit-with", type=int, metavar="PID",
                   help="stop the stand-in when process PID exits (tests pass their own pid)")
    dn = sub.add_parser("down", help="stop the stand-in and every process it started")
    dn.add_argument("--dir", required=True, type=Path, help="state directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jupyter flame sim`` (argv without ``sim``)."""
    args = parse_args(argv)
    try:
        if args.command == "up":
            return up(args)
        return down_dir(args.dir.resolve())
    except (SimError, RestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
