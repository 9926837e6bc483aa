"""wsnb.demo(): embedded server + proxy + client behind a Dashboard."""

from __future__ import annotations

import subprocess
import sys

from widget_helpers import run, wait_for

import wsnb


def test_demo_is_wired_but_not_connected(dash: wsnb.Dashboard) -> None:
    assert isinstance(dash, wsnb.Dashboard)
    assert dash.client.url == dash.proxy.url and dash.client.ready_state.name == "CLOSED"
    assert dash.server.heartbeat_ms == 1000
    assert dash.proxy.url != dash.server.url
    assert dash.chaos_panel is not None
    assert {type(p).__name__ for p in dash.panels} == {
        "ConnectionPanel", "SendPanel", "ChaosPanel", "TimelinePanel"}


def test_demo_connect_true_and_roundtrip() -> None:
    dash = wsnb.demo(connect=True)
    try:
        assert dash.client.ready
        assert dash.client.backoff.base == 0.5 and not dash.client.backoff.jitter

        async def roundtrip() -> wsnb.Receipt:
            return await (await dash.client.send({"hi": 1})).wait(5)

        assert run(roundtrip()).state == "acked"
        wait_for(lambda: dash.server.delivered == [{"hi": 1}])
    finally:
        dash.shutdown()
    assert dash.client.ready_state.name == "CLOSED"


def test_demo_in_a_plain_script() -> None:
    code = (
        "import wsnb\n"
        "dash = wsnb.demo()\n"
        "wsnb.run(dash.client.connect(timeout=5))\n"
        "r = wsnb.run(dash.client.send({'x': 1}))\n"
        "print(wsnb.run(r.wait(5)).state)\n"
        "dash.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "acked"


def test_exports() -> None:
    for name in ("ConnectionPanel", "SendPanel", "TimelinePanel", "ChaosPanel", "Dashboard",
                 "demo"):
        assert name in wsnb.__all__ and hasattr(wsnb, name)


def test_import_wsnb_does_not_load_ipywidgets() -> None:
    code = ("import sys, wsnb\n"
            "assert 'ipywidgets' not in sys.modules\n"
            "assert wsnb.Dashboard.__name__ == 'Dashboard' and 'ipywidgets' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
