"""In an IPython kernel with no front end (nbclient, as nbval and CI run notebooks).

Nothing renders the view, so after ``render_timeout`` the socket falls back to
headless Chromium, and says why; ``headless=False`` refuses instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from lane_helpers import REPO, ThreadEcho

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150)]

CELLS = [
    """\
import json
from wsnb.browser import BrowserSocket, BrowserUnavailable

sock = BrowserSocket("ws://127.0.0.1:{port}/from-kernel", render_timeout=1)
await sock.connect()
await sock.send("hello from a kernel with no front end")
reply = await sock.next_message()
await sock.aclose()
""",
    """\
try:
    await BrowserSocket("ws://127.0.0.1:{port}/", headless=False, render_timeout=1).connect()
    refused = ""
except BrowserUnavailable as exc:
    refused = str(exc)
print("RESULT " + json.dumps({{"mode": sock.mode, "reason": sock.mode_reason, "reply": reply,
                              "refused": refused}}))
""",
]


def test_kernel_without_front_end_falls_back_to_headless(
        echo_thread: ThreadEcho, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("anywidget", reason="anywidget is not installed (pip install anywidget)")
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("WSNB_BROWSER", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(port=echo_thread.port)) for c in CELLS]
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    line = next(x for x in text.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["mode"] == "headless", result
    assert "no front end rendered the view within 1" in result["reason"], result
    assert result["reply"] == "hello from a kernel with no front end"
    assert "headless=False" in result["refused"], result
    # the view was displayed (for a front end that might render it)
    kinds = [o.get("data", {}) for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in d for d in kinds), kinds
    assert echo_thread.headers[0]["origin"] == "null"  # headless about:blank, not a notebook
