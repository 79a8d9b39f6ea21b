"""A %%flame cell in a real JupyterLab, in headless Chromium (Debian's, driven by Playwright):
the rendered lifecycle widget (not its text fallback) reaches "done". Screenshots are kept in
``test-artifacts/``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "flame-browser-test"

CELLS = [
    "%load_ext jupyter_flame",
    "%%flame\nimport time\ntime.sleep(3)\nanswer = 6 * 7\nprint('hello from the runner', answer)",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: .ci/run installs it (apt-get install "
                    "chromium)")
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
    (root / "flame.ipynb").write_text(json.dumps(nb))
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config))
    env.pop("JUPYTER_FLAME_WIDGETS", None)
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
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


def test_flame_cell_shows_the_rendered_widget_reaching_done(lab: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.goto(f"{lab}/lab/tree/flame.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            # wait for the kernel, then run both cells (Lab can show "idle" a moment before
            # its session executes anything: retry once if the first cell did not start)
            page.locator(".jp-StatusBar-Item >> text=| Idle").wait_for(timeout=60_000)
            for attempt in range(3):
                page.locator(".jp-Cell").first.click()
                page.keyboard.press("Shift+Enter")
                page.keyboard.press("Shift+Enter")
                try:
                    page.locator(".jp-InputPrompt >> text=[1]:").wait_for(timeout=10_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise
            view = page.locator(".flame-cell-view")  # the ipywidgets VBox, rendered
            try:
                view.wait_for(timeout=60_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "widget-failed.png"))
                raise
            page.locator(".flame-cell-view >> text=running on").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "widget-running.png"))
            page.locator(".flame-cell-view >> text=done in").wait_for(timeout=60_000)
            text = view.inner_text()
            assert "done in" in text and "boot" in text and "process" in text
            assert view.locator(".flame-cancel").count() == 0  # collapsed: no Cancel left
            out = page.locator(".jp-OutputArea-output >> text=hello from the runner 42")
            out.wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "widget-done.png"))
        finally:
            browser.close()
