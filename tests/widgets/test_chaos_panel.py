"""ChaosPanel: every button acts on the proxy/server and lands on the client's timeline."""

from __future__ import annotations

from widget_helpers import run, wait_for

import wsnb
from wsnb.widgets import ChaosPanel


def chaos_details(dash: wsnb.Dashboard) -> list[str]:
    states = dash.client.timeline.states()
    return states.loc[states["type"] == "chaos", "detail"].tolist()


def test_cut_reconnects_and_is_recorded_once(connected: wsnb.Dashboard) -> None:
    chaos = connected.chaos_panel
    chaos.buttons["cut"].click()
    wait_for(lambda: chaos.actions == 1)
    assert chaos.last_action == "cut" and "cut" in chaos.status.value
    wait_for(lambda: connected.client.reconnects >= 1 and connected.client.ready)
    assert chaos_details(connected) == ["cut"]  # the proxy records it; the panel does not repeat


def test_latency_bandwidth_blackhole_restore(connected: wsnb.Dashboard) -> None:
    chaos = connected.chaos_panel
    chaos.latency_ms.value = 30
    chaos.buttons["latency"].click()
    wait_for(lambda: chaos.actions == 1)
    chaos.bandwidth_bps.value = 50_000
    chaos.buttons["bandwidth"].click()
    wait_for(lambda: chaos.actions == 2)
    chaos.buttons["blackhole"].click()
    wait_for(lambda: chaos.actions == 3)
    chaos.buttons["restore"].click()
    wait_for(lambda: chaos.actions == 4)
    assert chaos_details(connected) == [
        "latency 30 ms", "bandwidth 50000 B/s", "blackhole", "restore"]
    assert chaos.error == ""


def test_latency_slows_acks(connected: wsnb.Dashboard) -> None:
    connected.chaos_panel.latency(100)
    wait_for(lambda: connected.chaos_panel.actions == 1)

    async def one() -> wsnb.Receipt:
        return await (await connected.client.send({"slow": True})).wait(5)

    assert run(one()).latency_ms >= 190  # 100 ms each way


def test_server_restart_is_recorded_and_client_comes_back(connected: wsnb.Dashboard) -> None:
    chaos = connected.chaos_panel
    chaos.buttons["restart"].click()
    wait_for(lambda: chaos.actions == 1, what="restart done")
    assert chaos_details(connected) == ["server restart (keep_sessions=True)"]
    server_events = connected.server.timeline.states()
    assert (server_events["type"] == "chaos").sum() == 1
    wait_for(lambda: connected.client.reconnects >= 1 and connected.client.ready)
    assert connected.client.close_code == 1012
    assert connected.connection_panel.error == ""


def test_reorder_toggle(connected: wsnb.Dashboard) -> None:
    chaos = connected.chaos_panel
    server = connected.server
    chaos.buttons["reorder"].value = True
    wait_for(lambda: chaos.actions == 1)
    assert server.workers == 4 and server.process_delay is not None
    assert all(s.link.conn.defer_processing for s in server.sessions.values() if s.link)
    assert chaos_details(connected)[0].startswith("reorder on")
    connected.proxy.cut()  # a new connection gets the same settings
    wait_for(lambda: connected.client.reconnects >= 1 and connected.client.ready)
    connected.send_panel.times.value = 30
    connected.send_panel.send()
    wait_for(lambda: connected.send_panel.result.startswith("30 sent: 30 acked"))
    assert server.delivered == [{"hello": "world"}] * 30  # delivered once each, in order
    chaos.reorder(False)
    wait_for(lambda: chaos.actions == 2)
    assert server.workers == 0 and server.process_delay is None
    assert not any(s.link.conn.defer_processing for s in server.sessions.values() if s.link)
    assert not chaos.buttons["reorder"].value


def test_reorder_toggle_on_a_live_link_does_not_stall(connected: wsnb.Dashboard) -> None:
    """Toggling reorder acts on the live connection at once: sends are acked, in order,
    with no reconnect (it used to stall until one)."""
    chaos, client, server = connected.chaos_panel, connected.client, connected.server
    reconnects = client.reconnects

    def live_deferring() -> list[bool]:
        return [s.link.conn.defer_processing for s in server.sessions.values() if s.link]

    async def send(first: int, n: int) -> list[wsnb.Receipt]:
        return [await client.send({"n": i}) for i in range(first, first + n)]

    async def acked(receipts: list[wsnb.Receipt]) -> list[str]:
        return [(await r.wait(3)).state for r in receipts]

    chaos.buttons["reorder"].value = True
    wait_for(lambda: chaos.actions == 1, what="reorder on applied")
    assert live_deferring() == [True]  # on the live link, not from the next connection
    assert run(acked(run(send(0, 20)))) == ["acked"] * 20
    in_flight = run(send(20, 30))
    chaos.buttons["reorder"].value = False  # while messages are being processed
    wait_for(lambda: chaos.actions == 2, what="reorder off applied")
    assert live_deferring() == [False]
    assert run(acked(in_flight + run(send(50, 5)))) == ["acked"] * 35
    in_flight = run(send(55, 30))
    chaos.buttons["reorder"].value = True  # and on again mid-stream
    wait_for(lambda: chaos.actions == 3, what="reorder on again")
    assert run(acked(in_flight + run(send(85, 5)))) == ["acked"] * 35
    assert server.delivered == [{"n": i} for i in range(90)]  # once each, in order
    assert client.reconnects == reconnects and client.ready
    assert chaos.error == ""


def test_errors_show_in_the_panel(connected: wsnb.Dashboard) -> None:
    chaos = ChaosPanel(proxy=connected.proxy, timeline=connected.client.timeline)
    try:
        chaos.latency_ms.value = 0
        chaos.latency(-1)  # refused by the proxy
        wait_for(lambda: chaos.error, what="error shown")
        assert "latency -1 ms failed: ValueError" in chaos.error
        assert chaos.actions == 0
        assert "restart" not in chaos.buttons
    finally:
        chaos.close()
