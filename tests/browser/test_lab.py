"""End to end in a real browser: JupyterLab + headless Chromium drive the quickstart dashboard.

Starts JupyterLab on loopback (random port, a token, temp runtime/config/settings
dirs, autosave off so the committed notebook is never written), runs every cell
of notebooks/00_quickstart.ipynb, then clicks through the dashboard: Connect,
Send, cut. Skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import badge, browser_session, open_notebook, poll, run_all_cells, send_acked

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def lab(jupyter_server: Callable[..., str]) -> str:
    """A JupyterLab server on 127.0.0.1; the notebook's URL (with the token)."""
    return jupyter_server("lab", "LabApp", "lab/tree", "--LabApp.news_url=None")


def test_quickstart_dashboard_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    with browser_session("JupyterLab", tmp_path / "lab.png", within=90) as page:
        drive(page, lab, tmp_path)


def drive(page: Any, url: str, tmp_path: Path) -> None:
    open_notebook(page, url)
    run_all_cells(page)
    # the last cell closed the client: the badge shows CLOSED until Connect is clicked
    poll(lambda: badge(page)[0] == "CLOSED", 5, "CLOSED after the last cell")

    page.locator("button.wsnb-connect").click()
    poll(lambda: badge(page)[:2] == ("OPEN", "READY"), 10, "OPEN and READY after Connect")

    page.locator(".wsnb-editor textarea").fill('{"from": "the browser", "n": [1, 2')
    poll(lambda: "line 1, column" in page.locator(".wsnb-validation").inner_text(), 5,
         "inline validation error")
    assert page.locator("button.wsnb-send").is_disabled()
    send_acked(page, '{"from": "the browser", "n": [1, 2, 3]}')
    page.locator(".wsnb-dashboard").screenshot(path=str(tmp_path / "dashboard-sent.png"))

    reconnects = int(re.search(r"reconnects (\d+)", badge(page)[2]).group(1))
    page.locator("button.wsnb-chaos-cut").click()
    seen: list[str] = []

    def back_open() -> bool:
        state, ready, status = badge(page)
        if not seen or seen[-1] != state:
            seen.append(state)
        count = int(re.search(r"reconnects (\d+)", status).group(1))
        return state == "OPEN" and ready == "READY" and count > reconnects and len(seen) > 1

    poll(back_open, 15, "reconnected after cut", step=0.03)
    assert seen[0] == "OPEN" and seen[-1] == "OPEN"
    assert set(seen[1:-1]) & {"CLOSED", "CONNECTING"}, seen
    assert "1006 abnormal closure" in badge(page)[2]
    page.locator(".wsnb-tabs .lm-TabBar-tab", has_text="sequence").click()
    page.wait_for_selector(".wsnb-tab-sequence svg", timeout=5_000)
    page.locator(".wsnb-dashboard").screenshot(path=str(tmp_path / "dashboard.png"))
