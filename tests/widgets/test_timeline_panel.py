"""TimelinePanel: counters, tables newest first, latency plot, sequence diagram."""

from __future__ import annotations

from widget_helpers import run, wait_for

import wsnb
from wsnb.widgets.timeline_panel import TABS


def send_and_ack(dash: wsnb.Dashboard, n: int) -> None:
    async def go() -> None:
        receipts = [await dash.client.send({"i": i}) for i in range(n)]
        for r in receipts:
            await r.wait(5)

    run(go())


def select(dash: wsnb.Dashboard, tab: str) -> str:
    panel = dash.timeline_panel
    panel.tabs.selected_index = TABS.index(tab)
    view = panel.views[tab]
    wait_for(lambda: view.value, what=f"{tab} tab drawn")
    return view.value


def test_counters_follow_the_client(connected: wsnb.Dashboard) -> None:
    send_and_ack(connected, 5)
    panel = connected.timeline_panel
    wait_for(lambda: panel.counters.get("acked") == 5, what="5 acked")
    assert panel.counters["sent"] == 5 and panel.counters["pending"] == 0
    assert set(panel.counters) == {"sent", "acked", "pending", "resent", "dropped",
                                   "received", "reconnects"}
    assert 'data-counter="acked">5<' in panel.counters_label.value


def test_tables_show_newest_first(connected: wsnb.Dashboard) -> None:
    send_and_ack(connected, 3)
    panel = connected.timeline_panel
    wait_for(lambda: "<td>acked</td>" not in panel.views["messages"].value
             and "written" in panel.views["messages"].value)
    html = panel.views["messages"].value
    assert html.index("<td>3</td>") < html.index("<td>1</td>")  # newest first
    acks = select(connected, "acks")
    wait_for(lambda: panel.views["acks"].value.count("<td>acked</td>") == 3)
    assert "latency_ms" in acks
    states = select(connected, "states")
    wait_for(lambda: "READY" in panel.views["states"].value)
    assert "OPEN" in states or "OPEN" in panel.views["states"].value


def test_rows_limit(connected: wsnb.Dashboard) -> None:
    send_and_ack(connected, 10)
    panel = connected.timeline_panel
    panel.rows_input.value = 4
    wait_for(lambda: panel.views["messages"].value.count("<tr>") == 4)  # the header row has a style


def test_latency_and_sequence_views(connected: wsnb.Dashboard) -> None:
    send_and_ack(connected, 4)
    panel = connected.timeline_panel
    select(connected, "ack latency")
    wait_for(lambda: "4 acks" in panel.views["ack latency"].value, what="4 acks plotted")
    assert "<svg" in panel.views["ack latency"].value
    select(connected, "sequence")
    wait_for(lambda: "msg #4" in panel.views["sequence"].value, what="arrows drawn")
    svg = panel.views["sequence"].value
    assert "ack #4" in svg and "wsnb-seq-ack" in svg and "READY" in svg
    assert "wsnb-seq-ping" not in svg  # heartbeats hidden by default
    panel.heartbeats.value = True
    wait_for(lambda: "wsnb-seq-ping" in panel.views["sequence"].value, timeout=5,
             what="pings shown (heartbeat_ms=1000)")


def test_outage_is_drawn_after_a_cut(connected: wsnb.Dashboard) -> None:
    panel = connected.timeline_panel
    select(connected, "sequence")
    connected.proxy.cut()
    wait_for(lambda: connected.client.reconnects >= 1 and connected.client.ready)
    wait_for(lambda: "link down" in panel.views["sequence"].value, what="outage band")
    svg = panel.views["sequence"].value
    assert "⚡ cut" in svg and "close 1006" in svg


def test_static_fallback(connected: wsnb.Dashboard) -> None:
    send_and_ack(connected, 1)
    panel = connected.timeline_panel
    wait_for(lambda: panel.counters.get("acked") == 1)
    bundle = panel._repr_mimebundle_()
    assert "acked=1" in bundle["text/plain"] and "written" in bundle["text/plain"]
    assert "<table" in bundle["text/html"]
    whole = connected._repr_mimebundle_()
    assert "[OPEN] [READY]" in whole["text/plain"] and "wsnb-badge" in whole["text/html"]
