"""The FLAME sidebar panel and status-bar item in a real JupyterLab, in headless Chromium
(Debian's, driven by Playwright). The server runs "in" a notebook pod of the local Kubernetes
stand-in, so one notebook holds a local runner (``--backend local``) and a runner pod; both
appear in the panel and the status bar, and each is deleted from the panel: gone from the
API, from the process table, from the pod list. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from .lab_harness import ARTIFACTS, ROOT, TOKEN, browser_page, run_all_cells, running_lab
from .server_harness import pid_alive
from .sim_harness import Sim

pytestmark = [pytest.mark.browser, pytest.mark.sim, pytest.mark.slow]

NOTEBOOK = "runners.ipynb"
CELLS = [
    "%load_ext jupyter_flame",
    "%%flame --backend local --pool laptop\nimport os\nlocal_pid = os.getpid()\n"
    "print('local runner', local_pid)",
    "%%flame --pool cluster --cpu 250m\nprint('pod runner ready')",
]


@pytest.fixture(scope="module")
def lab(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("lab")
    env = {"JUPYTER_RUNTIME_DIR": str(root / "rt"), **sim.env}
    with running_lab(root, NOTEBOOK, CELLS, env=env,
                     args=("--FlameServer.poll_interval=0.5",)) as url:
        yield url


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
    with browser_page("lab-panel-failed.png") as page:
        page.goto(f"{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        run_all_cells(page, len(CELLS))
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
    shutil.copy(ARTIFACTS / "lab-panel.png", ROOT / "docs" / "images" / "lab-panel.png")


def test_panel_in_notebook_7(lab: str) -> None:
    """Notebook 7 has no status bar; the panel opens from the command palette."""
    with browser_page("notebook7-panel-failed.png") as page:
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


def _kernel_idle(lab: str) -> bool:
    with urllib.request.urlopen(f"{lab}/api/sessions?token={TOKEN}", timeout=10) as r:
        sessions = json.loads(r.read())
    return any(s["kernel"]["execution_state"] == "idle" for s in sessions)
