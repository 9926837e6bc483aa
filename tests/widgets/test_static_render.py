"""Static renders stay usable: text fallbacks for the badge, the panels and the DataFrames.

Where widgets do not render (nbconvert HTML offline or without widget state,
nbviewer, GitHub, a terminal), every panel's output must still say what it
showed: `Panel._repr_mimebundle_` adds text/plain and text/html next to the
widget view, and displaying a panel in a cell adds a second output, the static
summary alone (a default `jupyter nbconvert --execute --to html` stores the
widget state and then renders only the widget view, blank offline). The
notebook tests execute a copy of notebooks/00_quickstart.ipynb with nbclient
(widget state not stored) and a small notebook with a plain `jupyter nbconvert
--execute --to html`, and read the results; the in-process tests check each
panel's bundle directly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from widget_helpers import run, wait_for

import wsnb

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "notebooks" / "00_quickstart.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def results(cell: nbformat.NotebookNode) -> list[dict]:
    """The rich outputs (execute_result / display_data) of one code cell."""
    return [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")]


def tables(html: str) -> list[str]:
    return re.findall(r"<table\b.*?</table>", html, flags=re.S)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    """The quickstart, executed in a temp copy; the committed notebook is never touched."""
    work = tmp_path_factory.mktemp("static")
    copy = work / QUICKSTART.name
    shutil.copyfile(QUICKSTART, copy)
    nb = nbformat.read(copy, as_version=4)
    # the committed notebook carries its outputs and widget state: start from neither
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except Exception as exc:  # show the failing cell's traceback in the test output
        pytest.fail(str(exc)[-3000:])
    return nb


def code_cell(nb: nbformat.NotebookNode, startswith: str) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith(startswith):
            return cell
    raise AssertionError(f"no code cell starting with {startswith!r}")


def test_outputs_carry_text_fallbacks(executed: nbformat.NotebookNode) -> None:
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert WIDGET_STATE not in executed.metadata.get("widgets", {})

    # the dashboard: the widget view with the text summary for live frontends, then the
    # static HTML summary alone (hidden by the widget's own <style> where it renders)
    (dash, static) = results(code_cell(executed, "import wsnb"))
    assert {WIDGET_VIEW, "text/plain"} <= set(dash.data)
    assert dash.data["text/html"].startswith("<!--")  # no second copy in static views
    plain = dash.data["text/plain"]
    for panel in ("ConnectionPanel", "SendPanel", "ChaosPanel", "TimelinePanel"):
        assert panel in plain, plain
    # displayed before connecting: the badge's fallback says CLOSED / NOT READY
    assert "[CLOSED] [NOT READY]" in plain
    assert set(static.data) == {"text/html"}
    model_id = dash.data[WIDGET_VIEW]["model_id"]
    assert f'<div class="wsnb-static wsnb-static-{model_id}">' in static.data["text/html"]
    assert re.search(r'class="wsnb-badge[^"]*"[^>]*>CLOSED</span>', static.data["text/html"])
    assert ">NOT READY</span>" in static.data["text/html"]

    (client,) = results(code_cell(executed, "await dash.client.connect()"))
    assert re.search(r"<wsnb\.Client \S+ OPEN READY ", client.data["text/plain"])

    # every DataFrame cell: an HTML table and a text table
    for source in ("dash.client.timeline.messages()", "dash.client.timeline.acks()",
                   "dash.proxy.cut()"):
        (frame,) = results(code_cell(executed, source))
        assert "<table" in frame.data["text/html"], source
        assert "latency_ms" in frame.data["text/plain"], source
    (states,) = results(code_cell(executed, "dash.proxy.cut()"))
    assert re.search(r"\bREADY\b", states.data["text/plain"])


def test_html_export_without_widget_state(executed: nbformat.NotebookNode) -> None:
    body, _ = HTMLExporter().from_notebook_node(executed)
    # no widget state: nbconvert falls back to the next mimetype (text/html)
    assert WIDGET_VIEW not in body
    assert WIDGET_STATE not in body
    badge = re.search(r'<span class="wsnb-badge[^"]*"[^>]*>(\w+)</span>', body)
    assert badge is not None and badge.group(1) == "CLOSED"
    assert "<b>Connection</b>" in body and "<b>Timeline</b>" in body
    assert "<pre>SendPanel policy=" in body  # panels without rich HTML fall back to <pre>
    assert re.search(r"&lt;wsnb\.Client \S+ OPEN READY ", body)
    found = tables(body)
    assert len(found) >= 3, len(found)  # messages, acks, states
    assert any("<th>latency_ms</th>" in t and "<td>acked</td>" in t for t in found)
    assert any("<td>READY</td>" in t and "<td>CLOSED</td>" in t for t in found)


def test_every_panel_bundle_has_text_fallbacks(connected: wsnb.Dashboard) -> None:
    receipt = run(connected.client.send({"static": True}))
    run(receipt.wait(5))
    wait_for(lambda: connected.timeline_panel.counters.get("acked") == 1, what="acked counted")
    for panel in [connected, *connected.panels]:
        data = panel._repr_mimebundle_()
        assert {WIDGET_VIEW, "text/plain", "text/html"} <= set(data), type(panel).__name__
        assert data["text/plain"].startswith(type(panel).__name__) or panel is connected
        assert data["text/html"].strip()
    data = connected.connection_panel._repr_mimebundle_()
    assert "[OPEN] [READY]" in data["text/plain"]
    assert re.search(r'class="wsnb-badge[^"]*"[^>]*>OPEN</span>', data["text/html"])
    assert ">READY</span>" in data["text/html"]
    data = connected.timeline_panel._repr_mimebundle_()
    assert "acked=1" in data["text/plain"]
    assert "<table" in data["text/html"] and "<td>sent</td>" in data["text/html"]


READER = [
    "import wsnb\n\ndash = wsnb.demo()\ndash",
    "await dash.client.connect()",
    "panel = wsnb.DoctorPanel(dash.server.url, 'demo', checks='handshake,close', budget_s=1.0)\n"
    "panel",
    "report = await panel.wait(timeout=60)\nreport.worst",
    "wsnb.DoctorPanel(report)",
    "panel.close()\ndash.shutdown()",
]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plain `jupyter nbconvert --execute --to html` of a Dashboard and DoctorPanels."""
    work = tmp_path_factory.mktemp("reader")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in READER]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    path = work / "reader.ipynb"
    nbformat.write(nb, path)
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "html",
         str(path)], cwd=work, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return (work / "reader.html").read_text(encoding="utf-8")


def static_divs(body: str) -> list[str]:
    """The static summaries left next to each displayed panel."""
    return re.findall(r'<div class="wsnb-static wsnb-static-\w+">.*?(?=<div class="jp-Cell|\Z)',
                      body, flags=re.S)


def test_default_html_export_shows_every_panel(default_export: str) -> None:
    body = default_export
    # the default export stores the widget state: the widget views are scripts that need
    # the widget manager from a CDN (blank offline), so the static summaries carry the page
    assert WIDGET_STATE in body and WIDGET_VIEW in body
    dash, running, finished = static_divs(body)
    # online, the rendered widget's hidden <style> child hides its own static summary
    for summary in (dash, running, finished):
        found = re.match(r'<div class="wsnb-static (wsnb-static-\w+)">', summary)
        assert found is not None
        assert f".{found.group(1)}{{display:none}}" in body
    assert re.search(r'class="wsnb-badge[^"]*"[^>]*>CLOSED</span>', dash)
    assert "<b>Connection</b>" in dash and "<b>Timeline</b>" in dash
    assert "<pre>SendPanel policy=" in dash
    # the panel displayed while running was redrawn by `await panel.wait()`: its findings
    for doctor in (running, finished):
        assert "Doctor report for <code>ws://127.0.0.1:" in doctor, doctor[:500]
        assert ">handshake</td>" in doctor and ">close</td>" in doctor
    assert "0%" not in running
