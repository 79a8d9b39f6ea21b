"""``python -m build`` gives a wheel holding the prebuilt JupyterLab extension and the server
extension's enabling config; installed in a fresh venv with no Node.js on the PATH, both show
enabled and OK."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], **kwargs: object) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return str(done.stdout + done.stderr)


def test_wheel_carries_both_extensions_and_installs_without_node(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)])
    [wheel] = out.glob("jupyter_flame-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/"
    ext = data + "share/jupyter/labextensions/jupyter-flame/"
    for wanted in (ext + "package.json", ext + "install.json", ext + "static/style.js",
                   data + "etc/jupyter/jupyter_server_config.d/jupyter_flame.json"):
        assert wanted in names, wanted
    assert any(re.match(re.escape(ext) + r"static/remoteEntry\..*\.js$", n) for n in names)
    assert not any("node_modules" in n or n.startswith("labextension/") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bindir = venv / "bin"
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", str(wheel), "jupyterlab"])
    env = {"PATH": str(bindir), "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    assert shutil.which("node", path=env["PATH"]) is None
    labs = _run([str(bindir / "jupyter"), "labextension", "list"], env=env)
    assert re.search(r"jupyter-flame v[\d.]+\S* .*enabled.*OK", labs), labs
    assert str(venv) in labs  # the wheel's copy, not the source tree's
    servers = _run([str(bindir / "jupyter"), "server", "extension", "list"], env=env)
    assert re.search(r"jupyter_flame .*enabled", servers), servers
    assert re.search(r"jupyter_flame [\d.]+\S* .*OK", servers), servers
    assert os.environ.get("PATH")  # the test's own environment is untouched
