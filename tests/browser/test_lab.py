"""End to end in a real browser: JupyterLab + headless Chromium drive the quickstart dashboard.

Starts JupyterLab on loopback (random port, a token, temp runtime/config/settings
dirs, autosave off so the committed notebook is never written), runs every cell
of notebooks/00_quickstart.ipynb, then clicks through the dashboard: Connect,
Send, cut. Skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/00_quickstart.ipynb"
SETTINGS = {  # JupyterLab user settings for a deterministic, non-writing session
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Call `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(step)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1; yields the notebook's URL (with the token)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={REPO}", f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        poll(up, 30, "jupyter lab answering")
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def badge(page: Any) -> tuple[str, str, str]:
    """(readyState, READY text, status line) as the dashboard shows them now."""
    return tuple(page.evaluate("""() => {
        const b = document.querySelector('.wsnb-badge');
        const r = document.querySelector('.wsnb-ready');
        const s = document.querySelector('.wsnb-status');
        return [b ? b.textContent : '', r ? r.textContent : '', s ? s.textContent : ''];
    }"""))


def test_quickstart_dashboard_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    nb_path = REPO / NOTEBOOK
    before = nb_path.read_bytes()
    checkpoints = nb_path.parent / ".ipynb_checkpoints"
    had_checkpoints = checkpoints.exists()
    started = time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            try:
                drive(page, lab, tmp_path)
            finally:
                page.screenshot(path=str(tmp_path / "lab.png"))
                browser.close()
    finally:
        if nb_path.read_bytes() != before:  # never leave outputs in the committed notebook
            nb_path.write_bytes(before)
            pytest.fail("JupyterLab wrote the notebook (autosave should be off)")
        if not had_checkpoints and checkpoints.exists():
            shutil.rmtree(checkpoints)
    assert time.monotonic() - started < 90


def notebook_state(page: Any) -> dict[str, Any]:
    """Kernel status, and code cells run / with errors, from the exposed JupyterLab app."""
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
        return {ready: true, status: kernel ? kernel.status : 'none',
                cells: code.length, run: code.filter(c => c.model.executionCount).length,
                errors};
    }""")


def ack_rows(page: Any) -> list[list[str]]:
    """Rows (cell texts) of the acks tab's table."""
    return page.evaluate("""() => Array.from(
        document.querySelectorAll('.wsnb-tab-acks tbody tr'),
        tr => Array.from(tr.querySelectorAll('td'), td => td.textContent))""")


def drive(page: Any, url: str, tmp_path: Path) -> None:
    page.goto(url)
    poll(lambda: notebook_state(page).get("status") == "idle", 40, "kernel idle")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def all_run() -> bool:
        state = notebook_state(page)
        if state.get("errors"):
            pytest.fail(f"notebook cell failed: {state['errors']}")
        return state["run"] == state["cells"] and state["status"] == "idle"

    poll(all_run, 40, "every cell run")
    page.wait_for_selector(".wsnb-dashboard", timeout=10_000)
    # the last cell closed the client: the badge shows CLOSED until Connect is clicked
    poll(lambda: badge(page)[0] == "CLOSED", 5, "CLOSED after the last cell")

    page.locator("button.wsnb-connect").click()
    poll(lambda: badge(page)[:2] == ("OPEN", "READY"), 10, "OPEN and READY after Connect")

    editor = page.locator(".wsnb-editor textarea")
    editor.fill('{"from": "the browser", "n": [1, 2')
    poll(lambda: "line 1, column" in page.locator(".wsnb-validation").inner_text(), 5,
         "inline validation error")
    assert page.locator("button.wsnb-send").is_disabled()
    editor.fill('{"from": "the browser", "n": [1, 2, 3]}')
    poll(lambda: page.locator("button.wsnb-send").is_enabled(), 5, "Send enabled")
    page.locator("button.wsnb-send").click()
    result = poll(lambda: re.search(r"#(\d+) acked in [\d.]+ ms",
                                    page.locator(".wsnb-result").inner_text()),
                  10, "the send acked")
    msg_id = result.group(1)
    page.locator(".wsnb-tabs .lm-TabBar-tab", has_text="acks").click()
    poll(lambda: any(row[1] == "acked" and row[3] == msg_id for row in ack_rows(page)), 10,
         f"ack row for message {msg_id}")
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
