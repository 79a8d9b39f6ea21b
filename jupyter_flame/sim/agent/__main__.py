"""``python -m jupyter_flame.sim.agent``: run node agents (kubelet + scheduler).

Example::

    python -m jupyter_flame.sim.agent --kubeconfig DIR/admin.kubeconfig \\
        --state-dir DIR --nodes 2 --gpus-per-node 4

Each agent process serves the kubelet API's ``/containerLogs`` (``.logserver``)
over HTTPS on ``--kubelet-address`` (the nodes' InternalIP) and the port it
binds (``--kubelet-port``, default any free one: several agents share the
address), and advertises that port on its Nodes. API servers authenticate with
a client certificate signed by ``--kubelet-client-ca``.

SIGTERM/SIGINT stop it: every container process is killed (SIGTERM, 2 s, SIGKILL)
and the nodes are marked ``Ready=Unknown``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .._watch import gone
from .devices import HOST_IP
from .images import DEFAULT_IMAGES, ImageStore
from .node import DEFAULT_GPU_PRODUCT, NodeConfig

if TYPE_CHECKING:
    from .logserver import LogServer

log = logging.getLogger("jupyter_flame.sim.agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the agent's command line."""
    p = argparse.ArgumentParser(
        prog="python -m jupyter_flame.sim.agent", description=__doc__.split("\n")[0]
    )
    p.add_argument("--kubeconfig", help="kubeconfig with rights on nodes, pods, secrets, events")
    p.add_argument(
        "--apiserver-info",
        type=Path,
        help="the stand-in API server's apiserver.json: wait for it, then use its admin token",
    )
    p.add_argument("--state-dir", required=True, type=Path, help="logs and process records")
    p.add_argument("--nodes", type=int, default=1, help="nodes (with --gpus-per-node GPUs each)")
    p.add_argument(
        "--cpu-nodes",
        type=int,
        default=0,
        help="extra nodes without GPUs, numbered first (default 0)",
    )
    p.add_argument("--node-index-base", type=int, default=0, help="index of the first node")
    p.add_argument("--node-name-prefix", default="flame-sim-node-", help="node names are PREFIX<i>")
    p.add_argument("--gpus-per-node", type=int, default=0, help="nvidia.com/gpu per node")
    p.add_argument(
        "--gpu-product", default=DEFAULT_GPU_PRODUCT, help="nvidia.com/gpu.product label"
    )
    p.add_argument("--cpu", default="8", help="cpu capacity per node (default 8)")
    p.add_argument("--memory", default="32Gi", help="memory capacity per node (default 32Gi)")
    p.add_argument("--max-pods", type=int, default=110, help="pods per node (default 110)")
    p.add_argument(
        "--images",
        default="",
        help=f"comma-separated images the fake registry serves, besides {', '.join(DEFAULT_IMAGES)}",
    )
    p.add_argument("--no-scheduler", action="store_true", help="do not act as default-scheduler")
    p.add_argument("--ready-file", type=Path, help="write this file once nodes are registered")
    p.add_argument("--exit-with", type=int, metavar="PID",
                   help="stop when process PID exits (e.g. the test session that started it)")
    p.add_argument(
        "--kubelet-address", default=HOST_IP, help=f"kubelet API address (default {HOST_IP})"
    )
    p.add_argument(
        "--kubelet-port",
        type=int,
        default=0,
        help="kubelet API port, advertised on the Nodes (default 0: any free port)",
    )
    p.add_argument(
        "--kubelet-client-ca",
        type=Path,
        help="CA of the client certificates API servers present (a kubelet's --client-ca-file); "
        "without it every kubelet API request is refused (401)",
    )
    p.add_argument("--kubelet-tls-cert", type=Path, help="kubelet API serving certificate")
    p.add_argument(
        "--kubelet-tls-key",
        type=Path,
        help="its key (without both: a self-signed one in STATE_DIR/pki, as a kubelet makes)",
    )
    return p.parse_args(argv)


def start_logserver(args: argparse.Namespace, first_node: str) -> LogServer:
    """Bind the kubelet API listener, or exit saying what it needs."""
    from .certs import self_signed
    from .logserver import LogServer

    cert, key = args.kubelet_tls_cert, args.kubelet_tls_key
    if bool(cert) != bool(key):
        raise SystemExit("error: --kubelet-tls-cert and --kubelet-tls-key go together")
    if cert is None:
        cert = args.state_dir / "pki" / f"kubelet-{first_node}.crt"
        key = cert.with_suffix(".key")
        self_signed(cert, key, args.kubelet_address, first_node)
    try:
        server = LogServer(args.state_dir, args.kubelet_address, args.kubelet_port, cert, key,
                           args.kubelet_client_ca)  # fmt: skip
    except (ssl.SSLError, FileNotFoundError) as exc:
        raise SystemExit(
            f"error: cannot load the kubelet API's certificates ({cert}, {key}, "
            f"client CA {args.kubelet_client_ca}): {exc}"
        ) from exc
    except OSError as exc:
        raise SystemExit(
            f"error: cannot serve the kubelet API (kubectl logs) on "
            f"{args.kubelet_address}:{args.kubelet_port}: {exc}. Pass a free --kubelet-port "
            f"(0 picks one) and an address of this machine as --kubelet-address."
        ) from exc
    ca = args.kubelet_client_ca
    log.info(
        "kubelet API on https://%s:%d/containerLogs; %s",
        args.kubelet_address,
        server.port,
        f"API servers must present a client certificate signed by {ca} "
        f"(kube-apiserver --kubelet-client-certificate/--kubelet-client-key) and may trust "
        f"{cert}'s issuer (--kubelet-certificate-authority)"
        if ca
        else "no --kubelet-client-ca: every request is refused (401 Unauthorized)",
    )
    return server


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .agent import Agent, RegistrationRefused
    from .api import load_api, load_api_from_info

    if args.apiserver_info is not None:
        deadline = time.monotonic() + 30
        while True:
            try:
                api = load_api_from_info(json.loads(args.apiserver_info.read_text()))
                break
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{args.apiserver_info} did not appear within 30 s") from None
                time.sleep(0.01)
    else:
        api = load_api(args.kubeconfig)

    first = f"{args.node_name_prefix}{args.node_index_base}"
    args.state_dir.mkdir(parents=True, exist_ok=True)
    logserver = start_logserver(args, first)
    nodes = [
        NodeConfig(
            name=f"{args.node_name_prefix}{args.node_index_base + i}",
            cpu=args.cpu,
            memory=args.memory,
            pods=args.max_pods,
            gpus=args.gpus_per_node if i >= args.cpu_nodes else 0,
            gpu_product=args.gpu_product,
            kubelet_port=logserver.port,
        )
        for i in range(args.cpu_nodes + args.nodes)
    ]
    images = ImageStore([*DEFAULT_IMAGES, *[i for i in args.images.split(",") if i.strip()]])
    ready_file: Path | None = args.ready_file

    def registered() -> None:
        if ready_file is not None:
            ready_file.write_text(str(os.getpid()))

    agent = Agent(
        api,
        nodes,
        args.state_dir,
        images,
        scheduler=not args.no_scheduler,
        on_registered=registered,
        logserver=logserver,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.exit_with:
        def watch(pid: int = args.exit_with) -> None:
            while not agent.stopping.wait(0.5):
                if gone(pid):
                    agent.stop()

        threading.Thread(target=watch, name="exit-with", daemon=True).start()
    logserver.start()
    try:
        agent.run()
    except RegistrationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
