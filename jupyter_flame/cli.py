"""``jupyter flame ...``: runners by label, orphan cleanup, and the local Kubernetes stand-in.

Commands::

    jupyter flame list [--namespace NS] [-A|--all-namespaces] runners of this machine/namespace
    jupyter flame cleanup [--namespace NS] [--all]            delete orphaned runners
    jupyter flame config --reference                           every option, as Markdown
    jupyter flame sim up --dir DIR [...] / sim down --dir DIR  the local Kubernetes stand-in
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["main"]


def _kube_api(namespace: str | None) -> tuple[Any, str] | None:
    import os

    if not (os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")):
        return None
    from kubernetes import client

    from jupyter_flame.backends.kubernetes.api import load_api_client

    api_client, config_namespace = load_api_client()
    ns = namespace or os.environ.get("POD_NAMESPACE") or config_namespace or "default"
    return client.CoreV1Api(api_client), ns


def _list(args: argparse.Namespace) -> int:
    from jupyter_flame.backends.local import list_local_runner_records
    from jupyter_flame.backends.local_records import alive

    rows: list[dict[str, Any]] = []
    for rec in list_local_runner_records():
        if not alive(rec["pid"]):
            phase = "Exited (stale record: jupyter flame cleanup)"
        elif rec.get("kernel_pid") and not alive(rec["kernel_pid"]):
            phase = "Orphan (kernel gone: jupyter flame cleanup)"
        else:
            phase = "Running"
        rows.append({"backend": "local", "phase": phase, **rec})
    kube = None if args.local_only else _kube_api(args.namespace)
    if kube is not None:
        from jupyter_flame.backends.kubernetes.backend import list_runner_pods

        api, ns = kube
        for pod in list_runner_pods(api, None if args.all_namespaces else ns):
            rows.append({"backend": "kubernetes", **pod})
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("No jupyter-flame runners.")
        return 0
    print(f"{'BACKEND':<11} {'NAMESPACE':<16} {'POOL':<20} {'RUNNER':<28} {'WHERE':<30} PHASE")
    for row in rows:
        where = row.get("pod") or f"pid {row.get('pid')}"
        runner = row.get("runner_id", row.get("runner", "-"))
        namespace = row.get("namespace") or "-"
        print(f"{row['backend']:<11} {namespace:<16} {row.get('pool', '-'):<20} {runner:<28} "
              f"{where:<30} {row.get('phase', row.get('state', '-'))}")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from jupyter_flame.backends.local import cleanup_local_runners

    killed = cleanup_local_runners(dead_parent_only=not args.all)
    for rec in killed:
        if rec.get("action") == "killed":
            print(f"killed local runner {rec.get('runner_id')} (pid {rec.get('pid')})")
        else:
            print(f"removed stale record of runner {rec.get('runner_id')} (pid {rec.get('pid')})")
    kube = None if args.local_only else _kube_api(args.namespace)
    if kube is not None:
        from jupyter_flame.backends.kubernetes.backend import cleanup_runner_pods

        api, ns = kube
        for pod in cleanup_runner_pods(api, ns, orphans_only=not args.all):
            print(f"deleted runner pod {ns}/{pod['name']} ({pod.get('why', 'orphan')})")
    if not killed and kube is None:
        print("Nothing to clean up.")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        from jupyter_flame.sim.cli import main as sim_main

        return int(sim_main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="jupyter flame", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("list", "list runners"), ("cleanup", "delete orphaned runners")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--namespace", default=None)
        p.add_argument("--local-only", action="store_true", help="skip Kubernetes")
        if name == "list":
            p.add_argument("--json", action="store_true")
            p.add_argument("-A", "--all-namespaces", action="store_true",
                           help="runner pods of every namespace (needs cluster-wide list pods)")
        else:
            p.add_argument("--all", action="store_true",
                           help="also runners whose parent is still alive")
    config = sub.add_parser("config", help="the configuration reference (every option)")
    config.add_argument("--reference", action="store_true",
                        help="print docs/configuration.md (Markdown, generated from the code)")
    sub.add_parser("sim", help="the local Kubernetes stand-in: sim up/down (see sim --help)")
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(args)
    if args.command == "config":
        from jupyter_flame.notebook.reference import configuration_reference

        print(configuration_reference(), end="")
        return 0
    return _cleanup(args)


if __name__ == "__main__":
    sys.exit(main())
