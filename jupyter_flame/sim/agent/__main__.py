"""``python -m jupyter_flame.sim.agent``: run node agents (kubelet + scheduler).

Example::

    python -m jupyter_flame.sim.agent --kubeconfig DIR/admin.kubeconfig \\
        --state-dir DIR --nodes 2 --gpus-per-node 4

SIGTERM/SIGINT stop it: every container process is killed (SIGTERM, 2 s, SIGKILL)
and the nodes are marked ``Ready=Unknown``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from .images import DEFAULT_IMAGES, ImageStore
from .node import DEFAULT_GPU_PRODUCT, NodeConfig


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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .agent import Agent
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

    nodes = [
        NodeConfig(
            name=f"{args.node_name_prefix}{args.node_index_base + i}",
            cpu=args.cpu,
            memory=args.memory,
            pods=args.max_pods,
            gpus=args.gpus_per_node if i >= args.cpu_nodes else 0,
            gpu_product=args.gpu_product,
        )
        for i in range(args.cpu_nodes + args.nodes)
    ]
    images = ImageStore([*DEFAULT_IMAGES, *[i for i in args.images.split(",") if i.strip()]])
    args.state_dir.mkdir(parents=True, exist_ok=True)
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
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
