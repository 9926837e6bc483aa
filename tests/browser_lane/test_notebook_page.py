"""BrowserSocket inside a real JupyterLab (and Notebook 7) page: the page opens the WebSocket.

Starts `jupyter lab` (and `jupyter notebook`) on 127.0.0.1 (empty token, temp
runtime/config/settings dirs) serving a notebook written to tmp_path, opens it in
headless Chromium, runs its cell, and checks on a plain `websockets` echo server
(in a thread) that the handshake came from that page: its Origin is the Jupyter
origin, where the headless fallback's about:blank page sends ``null``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_runner import poll, run_jupyter
from lane_helpers import CHROMIUM, REPO, ThreadEcho

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150)]

CELL = """\
import json
from wsnb.browser import BrowserSocket

sock = BrowserSocket("ws://127.0.0.1:{port}/from-the-page", name="page")
await sock.connect()
await sock.send("hello from the notebook page")
reply = await sock.next_message()
info = await sock.page_info()
await sock.close(1000, "done")
closed = await sock.wait_closed()
states = [s for t, s in zip(sock.timeline.events()["type"], sock.timeline.events()["state"])
          if t == "state"]
print("RESULT " + json.dumps({{"mode": sock.mode, "reason": sock.mode_reason, "reply": reply,
                              "origin": info["origin"], "close": str(closed),
                              "states": states}}))
"""


FRONT_ENDS = {  # app, its traitlets class, the notebook's URL path
    "jupyterlab": ("lab", "LabApp", "lab/tree"),
    "notebook7": ("notebook", "JupyterNotebookApp", "notebooks"),
}


@pytest.fixture(params=sorted(FRONT_ENDS))
def front_end(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`jupyter lab` / `jupyter notebook` (7) on 127.0.0.1 with an empty token, serving
    tmp_path / "root"; yields (base URL, the notebook's URL path)."""
    app, app_class, url_path = FRONT_ENDS[request.param]
    if app == "notebook":
        pytest.importorskip("notebook", minversion="7", reason="notebook>=7 is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("anywidget", reason="anywidget is not installed (pip install anywidget)")
    root = tmp_path / "root"
    root.mkdir()
    env = {
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "WSNB_BROWSER": "",
    }
    extra = ["--LabApp.news_url=None"] if app == "lab" else []
    with run_jupyter(app, app_class, tmp_path, root, env=env, extra_args=extra) as base:
        yield base, url_path

def notebook_state(page: Any) -> dict[str, Any]:
    """Kernel status, cells run, cell errors and text outputs, from the exposed app."""
    return page.evaluate("""() => {
        const app = window.jupyterapp;
        const nb = app && app.shell.currentWidget;
        if (!nb || !nb.content || !nb.sessionContext) return {ready: false};
        const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
        const code = nb.content.widgets.filter(c => c.model.type === 'code');
        const errors = [], text = [];
        for (const c of code) {
            for (const o of c.model.outputs.toJSON()) {
                if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
                if (o.output_type === 'stream') text.push([].concat(o.text).join(''));
            }
        }
        return {ready: true, status: kernel ? kernel.status : 'none', cells: code.length,
                run: code.filter(c => c.model.executionCount).length, errors, text};
    }""")


def test_browser_socket_lives_in_the_notebook_page(front_end: tuple[str, str],
                                                   echo_thread: ThreadEcho,
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, url_path = front_end
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL.format(port=echo_thread.port))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "root" / "lane.ipynb")

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            page.goto(f"{base}/{url_path}/lane.ipynb")
            poll(lambda: notebook_state(page).get("status") == "idle", 60, "kernel idle")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            def finished() -> str | None:
                state = notebook_state(page)
                if state.get("errors"):
                    pytest.fail(f"the cell failed: {state['errors']}")
                return next((line for chunk in state.get("text", [])
                             for line in chunk.splitlines() if line.startswith("RESULT ")), None)

            line = poll(finished, 60, "the cell's RESULT line")
            page.wait_for_selector(".wsnb-browser-socket[data-ready-state='3']", timeout=10_000)
            status = page.locator(".wsnb-browser-socket").inner_text()
        finally:
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()

    result = json.loads(line.removeprefix("RESULT "))
    assert result["mode"] == "page", result
    assert result["origin"] == base, result
    assert result["reply"] == "hello from the notebook page"
    assert result["close"].startswith("1000 wasClean=true"), result
    assert result["states"][:3] == ["PAGE", "CONNECTING", "OPEN"], result
    assert "CLOSED" in status and "in this page" in status, status
    # the server saw the notebook page itself: its origin, not the headless fallback's "null"
    assert len(echo_thread.headers) == 1
    assert echo_thread.headers[0]["origin"] == base
    assert echo_thread.received == ["hello from the notebook page"]
