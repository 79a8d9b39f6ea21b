"""The FLAME sidebar panel and status-bar item in a real JupyterLab, in headless Chromium
(Debian's, driven by Playwright). The server runs "in" a notebook pod of the local Kubernetes
stand-in, so one notebook holds a local runner (``--backend local``) and a runner pod; both
appear in the panel and the status bar, and each is deleted from the panel: gone from the
API, from the process table, from the pod list. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server_harness import pid_alive
from .test_kernel_kubernetes import Sim
from .test_lab_browser import ARGS, ARTIFACTS, CHROMIUM, TOKEN, _free_port

pytestmark = [pytest.mark.browser, pytest.mark.sim, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "runners.ipynb"
CELLS = [
    "%load_ext jupyter_flame",
    "%%flame --backend local --pool laptop\nimport os\nlocal_pid = os.getpid()\n"
    "print('local runner', local_pid)",
    "%%flame --pool cluster --cpu 250m\nprint('pod runner ready')",
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    s = Sim(tmp_path_factory.mktemp("sim"))
    yield s
    s.down()


@pytest.fixture(scope="module")
def lab(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: .ci/run installs it")
    root = tmp_path_factory.mktemp("lab")
    config = root / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None} for src in CELLS],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / NOTEBOOK).write_text(json.dumps(nb))
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(root / "rt"),
               **sim.env)
    env.pop("JUPYTER_FLAME_WIDGETS", None)
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root}", "--FlameServer.poll_interval=0.5"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/flame/api/runners?token={TOKEN}", timeout=2)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError((root / "lab.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _api(lab: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{lab}/flame/api/runners?token={TOKEN}", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)
    return value


def test_panel_lists_and_deletes_local_and_pod_runners(lab: str, sim: Sim) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        try:
            page.goto(f"{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.locator(".jp-StatusBar-Item >> text=| Idle").wait_for(timeout=60_000)
            for attempt in range(3):
                page.locator(".jp-Cell").first.click()
                for _ in CELLS:
                    page.keyboard.press("Shift+Enter")
                try:
                    page.locator(".jp-InputPrompt >> text=[1]:").wait_for(timeout=10_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise
            page.locator(".jp-OutputArea-output >> text=pod runner ready").wait_for(
                timeout=90_000)

            # the status bar counts both runners; clicking it opens the panel
            status = page.locator(".jp-flame-status")
            status.locator("text=FLAME: 2 runners").wait_for(timeout=20_000)
            status.click()
            panel = page.locator("#jupyter-flame-panel")
            panel.wait_for(state="visible", timeout=10_000)
            rows = panel.locator(".jp-flame-runner")
            _wait(lambda: rows.count() == 2, 20, "two runners in the panel")
            panel.locator(".jp-flame-kernel-name >> text=runners.ipynb").wait_for()
            local = panel.locator('.jp-flame-runner[data-runner-id^="local~"]')
            pod = panel.locator('.jp-flame-runner[data-runner-id^="pod~"]')
            local.locator(".jp-flame-activity-idle").wait_for(timeout=20_000)
            pod.locator(".jp-flame-phase-running").wait_for(timeout=20_000)
            pod.locator(".jp-flame-activity-idle").wait_for(timeout=20_000)  # its annotation
            _wait(lambda: "memory–" not in pod.inner_text().replace(":", "").replace(" ", ""),
                  20, "the pod's memory use (heartbeat stats, published as an annotation)")
            assert "250m CPU" in pod.inner_text()
            assert "pool cluster" in panel.inner_text().lower()
            local.locator(".jp-flame-logs").click()
            local.locator(".jp-flame-log >> text=dialing").wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "lab-panel.png"))

            snap = _api(lab)
            local_pid = next(r["pid"] for r in snap["runners"] if r["backend"] == "local")
            pod_name = next(r["pod"] for r in snap["runners"] if r["backend"] == "kubernetes")
            assert pid_alive(local_pid)

            local.locator(".jp-flame-delete").click()
            _wait(lambda: local.count() == 0, 20, "the local runner to leave the panel")
            assert not any(r["backend"] == "local" for r in _api(lab)["runners"])
            _wait(lambda: not pid_alive(local_pid), 10, "the local runner process to end")

            pod.locator(".jp-flame-delete").click()
            _wait(lambda: not [p for p in sim.runner_pods() if p.metadata.name == pod_name],
                  30, "the runner pod to leave the pod list")
            _wait(lambda: pod.count() == 0, 20, "the pod to leave the panel")
            status.locator("text=FLAME: 0 runners").wait_for(timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "lab-panel-empty.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-panel-failed.png"))
            raise
        finally:
            browser.close()
    shutil.copy(ARTIFACTS / "lab-panel.png", ROOT / "docs" / "images" / "lab-panel.png")


def test_panel_in_notebook_7(lab: str) -> None:
    """Notebook 7 has no status bar; the panel opens from the command palette."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        try:
            page.goto(f"{lab}/notebooks/{NOTEBOOK}?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.locator("#jp-MainLogo, .jp-NotebookKernelStatus, .jp-Notebook").first.wait_for()
            _wait(lambda: _kernel_idle(lab), 60, "the notebook's kernel")
            page.locator(".jp-Cell").nth(1).click()
            page.keyboard.press("Shift+Enter")  # the local runner cell again: a new runner
            _wait(lambda: any(r["backend"] == "local" for r in _api(lab)["runners"]), 60,
                  "a local runner")
            page.keyboard.press("Control+Shift+C")
            page.keyboard.type("Show FLAME runners")
            page.keyboard.press("Enter")
            panel = page.locator("#jupyter-flame-panel")
            panel.wait_for(state="visible", timeout=20_000)
            panel.locator('.jp-flame-runner[data-runner-id^="local~"]').wait_for(timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "notebook7-panel.png"))
            panel.locator('.jp-flame-runner[data-runner-id^="local~"] .jp-flame-delete').click()
            _wait(lambda: not any(r["backend"] == "local" for r in _api(lab)["runners"]), 20,
                  "the local runner deleted")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "notebook7-panel-failed.png"))
            raise
        finally:
            browser.close()


def _kernel_idle(lab: str) -> bool:
    with urllib.request.urlopen(f"{lab}/api/sessions?token={TOKEN}", timeout=10) as r:
        sessions = json.loads(r.read())
    return any(s["kernel"]["execution_state"] == "idle" for s in sessions)
