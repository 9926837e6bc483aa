"""End to end in a real browser: Jupyter Notebook 7 + headless Chromium drive the quickstart.

Like test_lab.py (the server fixture is in conftest.py, the helpers in
browser_helpers.py): starts Notebook 7 on loopback (random port, a token, temp
runtime/config/settings dirs, autosave off so the committed notebook is never
written), opens /notebooks/notebooks/00_quickstart.ipynb, runs every cell, then
checks the dashboard renders and works in the Notebook 7 shell: CLOSED after the
last cell, Connect -> OPEN and READY, one Send acked. Skipped when
/usr/bin/chromium, playwright or notebook>=7 is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import badge, browser_session, open_notebook, poll, run_all_cells, send_acked

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture
def notebook7(jupyter_server: Callable[..., str]) -> str:
    """A Jupyter Notebook 7 server on 127.0.0.1; the notebook's URL (with the token)."""
    pytest.importorskip("notebook", minversion="7", reason="notebook>=7 is not installed")
    return jupyter_server("notebook", "JupyterNotebookApp", "notebooks")


def test_quickstart_dashboard_in_notebook7(notebook7: str, tmp_path: Path) -> None:
    with browser_session("Notebook 7", tmp_path / "notebook7.png", within=60) as page:
        drive(page, notebook7, tmp_path)


def drive(page: Any, url: str, tmp_path: Path) -> None:
    open_notebook(page, url)
    # the Notebook 7 shell (not JupyterLab's) is what serves /notebooks/
    assert page.evaluate("window.jupyterapp.name") == "Jupyter Notebook"
    run_all_cells(page)
    connect = page.locator("button.wsnb-connect")
    assert connect.is_visible()
    # the last cell closed the client: the badge shows CLOSED until Connect is clicked
    poll(lambda: badge(page)[:2] == ("CLOSED", "NOT READY"), 5, "CLOSED after the last cell")
    page.locator(".wsnb-dashboard").screenshot(path=str(tmp_path / "dashboard-closed.png"))

    connect.click()
    poll(lambda: badge(page)[:2] == ("OPEN", "READY"), 10, "OPEN and READY after Connect")
    assert connect.is_disabled()

    send_acked(page, '{"from": "notebook 7"}')
    page.locator(".wsnb-dashboard").screenshot(path=str(tmp_path / "dashboard.png"))
