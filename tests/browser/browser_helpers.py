"""Helpers shared by the browser tests (the Jupyter server fixture is in conftest.py).

Plain functions and context managers, imported by name like tests/widgets'
widget_helpers (pytest advises against importing from a conftest.py). Nothing
here imports playwright at module level: the tests skip cleanly without it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from jupyter_runner import poll  # noqa: F401 - re-exported to the page tests

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/00_quickstart.ipynb"


@contextmanager
def notebook_unchanged(who: str) -> Iterator[None]:
    """Fail if `who` (the Jupyter frontend) wrote NOTEBOOK; restore it, drop new checkpoints."""
    nb_path = REPO / NOTEBOOK
    before = nb_path.read_bytes()
    checkpoints = nb_path.parent / ".ipynb_checkpoints"
    had_checkpoints = checkpoints.exists()
    try:
        yield
    finally:
        if nb_path.read_bytes() != before:  # never leave outputs in the committed notebook
            nb_path.write_bytes(before)
            pytest.fail(f"{who} wrote the notebook (autosave should be off)")
        if not had_checkpoints and checkpoints.exists():
            shutil.rmtree(checkpoints)


@contextmanager
def chromium_page(screenshot: Path) -> Iterator[Any]:
    """A page in headless Chromium; a screenshot of it is saved to `screenshot` at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            yield page
        finally:
            page.screenshot(path=str(screenshot))
            browser.close()


@contextmanager
def browser_session(frontend: str, screenshot: Path, within: float) -> Iterator[Any]:
    """`chromium_page(screenshot)` inside `notebook_unchanged(frontend)`.

    Asserts the whole session took less than `within` s, when the block succeeded.
    """
    started = time.monotonic()
    with notebook_unchanged(frontend), chromium_page(screenshot) as page:
        yield page
    elapsed = time.monotonic() - started
    assert elapsed < within, f"the {frontend} session took {elapsed:.1f} s (limit {within} s)"


def badge(page: Any) -> tuple[str, str, str]:
    """(readyState, READY text, status line) as the dashboard shows them now."""
    return tuple(page.evaluate("""() => {
        const b = document.querySelector('.wsnb-badge');
        const r = document.querySelector('.wsnb-ready');
        const s = document.querySelector('.wsnb-status');
        return [b ? b.textContent : '', r ? r.textContent : '', s ? s.textContent : ''];
    }"""))


def notebook_state(page: Any) -> dict[str, Any]:
    """App name, kernel status, and code cells run / with errors, from the exposed app."""
    return page.evaluate("""() => {
        const app = window.jupyterapp;
        const nb = app && app.shell.currentWidget;
        if (!nb || !nb.content || !nb.sessionContext) return {ready: false};
        const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
        const code = nb.content.widgets.filter(c => c.model.type === 'code');
        const errors = [];
        for (const c of code) {
            for (const o of c.model.outputs.toJSON()) {
                if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
            }
        }
        return {ready: true, app: app.name, status: kernel ? kernel.status : 'none',
                cells: code.length, run: code.filter(c => c.model.executionCount).length,
                errors};
    }""")


def ack_rows(page: Any) -> list[list[str]]:
    """Rows (cell texts) of the acks tab's table."""
    return page.evaluate("""() => Array.from(
        document.querySelectorAll('.wsnb-tab-acks tbody tr'),
        tr => Array.from(tr.querySelectorAll('td'), td => td.textContent))""")


def open_notebook(page: Any, url: str) -> None:
    """Go to the notebook's URL and wait for its kernel to be idle."""
    page.goto(url)
    poll(lambda: notebook_state(page).get("status") == "idle", 40, "kernel idle")


def run_all_cells(page: Any) -> None:
    """Run every cell (failing on a cell error), then wait for the dashboard to render."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def all_run() -> bool:
        state = notebook_state(page)
        if state.get("errors"):
            pytest.fail(f"notebook cell failed: {state['errors']}")
        return state["run"] == state["cells"] and state["status"] == "idle"

    poll(all_run, 40, "every cell run")
    page.wait_for_selector(".wsnb-dashboard", timeout=10_000)


def send_acked(page: Any, text: str) -> str:
    """Send `text` from the dashboard's editor; wait for the ack and its row in the acks tab.

    Returns the message id.
    """
    page.locator(".wsnb-editor textarea").fill(text)
    poll(lambda: page.locator("button.wsnb-send").is_enabled(), 5, "Send enabled")
    page.locator("button.wsnb-send").click()
    result = poll(lambda: re.search(r"#(\d+) acked in [\d.]+ ms",
                                    page.locator(".wsnb-result").inner_text()),
                  10, "the send acked")
    msg_id = result.group(1)
    page.locator(".wsnb-tabs .lm-TabBar-tab", has_text="acks").click()
    poll(lambda: any(row[1] == "acked" and row[3] == msg_id for row in ack_rows(page)), 10,
         f"ack row for message {msg_id}")
    return msg_id
