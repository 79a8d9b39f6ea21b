"""The local Kubernetes stand-in for tests: ``jupyter flame sim up`` in a temporary folder,
its notebook environment, and the official client with the admin view."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MANAGED = "app.kubernetes.io/managed-by=jupyter-flame"


class Sim:
    def __init__(self, root: Path) -> None:
        self.dir = root
        subprocess.run([sys.executable, "-m", "jupyter_flame.sim", "up", "--dir", str(root),
                        "--nodes", "1", "--gpus-per-node", "2",
                        "--exit-with", str(os.getpid())], check=True,  # a killed run leaves none
                       capture_output=True, timeout=60)
        self.env = dict(line.split("=", 1) for line in
                        (root / "notebook.env").read_text().splitlines() if "=" in line)
        from kubernetes import client, config

        self.admin = client.CoreV1Api(config.new_client_from_config(
            config_file=str(root / "admin.kubeconfig")))
        self.rbac = client.RbacAuthorizationV1Api(self.admin.api_client)

    def runner_pods(self, extra: str = "") -> list[Any]:
        selector = MANAGED + ("," + extra if extra else "")
        return list(self.admin.list_namespaced_pod("default", label_selector=selector).items)

    def wait_no_runner_pods_of(self, pool_prefix: str, timeout: float = 5.0) -> list[str]:
        """Names of runner pods of pools starting with ``pool_prefix`` still there after
        ``timeout`` seconds (a failed boot deletes its pod)."""
        deadline = time.monotonic() + timeout
        while True:
            names = [p.metadata.name for p in self.runner_pods()
                     if p.metadata.labels.get("jupyter-flame/pool", "").startswith(pool_prefix)]
            if not names or time.monotonic() > deadline:
                return names
            time.sleep(0.1)

    def down(self) -> None:
        subprocess.run([sys.executable, "-m", "jupyter_flame.sim", "down", "--dir",
                        str(self.dir)], check=False, capture_output=True, timeout=60)
