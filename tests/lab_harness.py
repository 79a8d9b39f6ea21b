"""A real JupyterLab server on 127.0.0.1 and Debian's chromium driven by Playwright, for the
browser tests (its executable path: never `playwright install`, which cannot work here)."""

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "flame-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_lab(root: Path, notebook: str, cells: list[str], *, env: dict[str, str] | None = None,
                args: tuple[str, ...] = ()) -> Iterator[str]:
    """JupyterLab serving ``root`` with ``notebook`` made of ``cells``; yields its URL."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: .ci/run installs it (apt-get install "
                    "chromium)")
    config = root / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None} for src in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / notebook).write_text(json.dumps(nb))
    port = _free_port()
    lab_env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), **(env or {}))
    lab_env.pop("JUPYTER_FLAME_WIDGETS", None)
    with open(root / "lab.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False", *args],
            cwd=root, env=lab_env, stdout=log, stderr=subprocess.STDOUT)
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
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def browser_page(failure_shot: str, width: int = 1400, height: int = 850) -> Iterator[Any]:
    """A Chromium page; on failure a screenshot ``failure_shot`` in test-artifacts."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            yield page
        except Exception:
            page.screenshot(path=str(ARTIFACTS / failure_shot))
            raise
        finally:
            browser.close()


def run_all_cells(page: Any, count: int) -> None:
    """Wait for the kernel, then Shift+Enter through ``count`` cells from the first (Lab can
    show "Idle" a moment before its session executes anything: retried)."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.locator(".jp-StatusBar-Item >> text=| Idle").wait_for(timeout=60_000)
    for attempt in range(3):
        page.locator(".jp-Cell").first.click()
        for _ in range(count):
            page.keyboard.press("Shift+Enter")
        try:
            page.locator(".jp-InputPrompt >> text=[1]:").wait_for(timeout=10_000)
            return
        except Exception:
            if attempt == 2:
                raise
