"""A %%flame cell in a real JupyterLab, in headless Chromium (Debian's, driven by Playwright):
the rendered lifecycle widget (not its text fallback) reaches "done". Screenshots are kept in
``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab_harness import ARTIFACTS, TOKEN, browser_page, run_all_cells, running_lab

pytestmark = pytest.mark.browser

CELLS = [
    "%load_ext jupyter_flame",
    "%%flame\nimport time\ntime.sleep(3)\nanswer = 6 * 7\nprint('hello from the runner', answer)",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_lab(tmp_path_factory.mktemp("lab"), "flame.ipynb", CELLS) as url:
        yield url


def test_flame_cell_shows_the_rendered_widget_reaching_done(lab: str) -> None:
    with browser_page("widget-failed.png", 1300, 800) as page:
        page.goto(f"{lab}/lab/tree/flame.ipynb?token={TOKEN}")
        run_all_cells(page, len(CELLS))
        view = page.locator(".flame-cell-view")  # the ipywidgets VBox, rendered
        view.wait_for(timeout=60_000)
        page.locator(".flame-cell-view >> text=running on").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "widget-running.png"))
        page.locator(".flame-cell-view >> text=done in").wait_for(timeout=60_000)
        text = view.inner_text()
        assert "done in" in text and "boot" in text and "process" in text
        assert view.locator(".flame-cancel").count() == 0  # collapsed: no Cancel left
        out = page.locator(".jp-OutputArea-output >> text=hello from the runner 42")
        out.wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "widget-done.png"))
