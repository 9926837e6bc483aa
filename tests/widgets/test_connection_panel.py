"""ConnectionPanel driven in-process: clicks, badge, READY, retries, errors."""

from __future__ import annotations

from widget_helpers import FAST, run, wait_for

import wsnb
from wsnb.widgets import ConnectionPanel


def test_connect_and_disconnect_buttons(dash: wsnb.Dashboard) -> None:
    panel = dash.connection_panel
    assert panel.state == "CLOSED" and not panel.ready
    assert "wsnb-state-CLOSED" in panel.badge.value and "NOT READY" in panel.badge.value
    panel.connect_button.click()
    wait_for(lambda: panel.state == "OPEN" and panel.ready, what="OPEN and READY")
    assert dash.client.ready
    assert "wsnb-state-OPEN" in panel.badge.value and ">READY<" in panel.badge.value
    assert panel.connect_button.disabled
    panel.disconnect_button.click()
    wait_for(lambda: panel.state == "CLOSED" and not panel.ready, what="CLOSED")
    assert not dash.client.ready
    assert panel.error == ""


def test_reconnect_after_cut_shows_close_and_counter(connected: wsnb.Dashboard) -> None:
    panel = connected.connection_panel
    connected.proxy.cut()
    wait_for(lambda: panel.reconnects >= 1 and panel.ready, what="reconnected")
    assert panel.close_text.startswith("1006 abnormal closure")
    assert "reconnects 1" in panel.status.value
    assert "1006 abnormal closure" in panel.status.value


def test_retry_countdown_is_shown_while_waiting() -> None:
    server = wsnb.Server(token="demo", loop="thread")
    run(server.start())
    slow = wsnb.Backoff(base=2.0, cap=2.0, jitter=False)
    client = wsnb.Client(server.url, token="demo", backoff=slow, loop="thread")
    panel = ConnectionPanel(client)
    try:
        panel.connect()
        wait_for(lambda: panel.ready)
        client.disconnect_now()
        wait_for(lambda: panel.next_retry_in is not None, what="countdown shown")
        assert panel.state == "CLOSED" and panel.attempt == 1
        assert "next retry in" in panel.status.value
        wait_for(lambda: panel.ready, timeout=6, what="back after the countdown")
        assert panel.next_retry_in is None
    finally:
        panel.close()
        run(client.close())
        run(server.close())


def test_connect_error_shows_in_panel_and_timeline() -> None:
    server = wsnb.Server(token="demo", loop="thread")
    run(server.start())
    url = server.url
    run(server.close())  # nothing listens there now
    client = wsnb.Client(url, token="demo", backoff=FAST, loop="thread")
    panel = ConnectionPanel(client, connect_timeout=0.3)
    try:
        panel.connect_button.click()
        wait_for(lambda: panel.error, what="error shown")
        assert "connect failed: TimeoutError" in panel.error
        assert "connect failed" in panel.error_label.value
        assert "refused" in panel.last_error
        errors = client.timeline.states()
        errors = errors[errors["type"] == "error"]
        assert errors["detail"].str.contains("connect failed: TimeoutError").any()
    finally:
        panel.close()
        run(client.close())


def test_bad_url_is_refused_without_connecting(dash: wsnb.Dashboard) -> None:
    panel = dash.connection_panel
    panel.url.value = "http://127.0.0.1:1/"
    panel.connect_button.click()
    assert "use ws://127.0.0.1:1/" in panel.error
    assert dash.client.ready_state == wsnb.ReadyState.CLOSED


def test_wrong_token_from_the_field_is_an_auth_error(dash: wsnb.Dashboard) -> None:
    panel = dash.connection_panel
    panel.token.value = "wrong"
    panel.connect_button.click()
    assert panel.token.value == ""  # never kept in widget state
    wait_for(lambda: panel.error, what="auth error shown")
    assert "AuthError" in panel.error
    wait_for(lambda: panel.close_text.startswith("4401"), what="close code shown")
    assert panel.state == "CLOSED"
    panel.token.value = "demo"
    panel.connect_button.click()
    wait_for(lambda: panel.ready, what="READY with the right token")
    assert panel.error == ""


def test_static_fallback_has_text_and_html(connected: wsnb.Dashboard) -> None:
    panel = connected.connection_panel
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "[OPEN] [READY]" in bundle["text/plain"]
    assert "wsnb-state-OPEN" in bundle["text/html"]
    assert "demo" not in bundle["text/plain"]  # the token never shows


def test_negotiated_subprotocol_is_shown() -> None:
    from websockets.asyncio.server import serve as ws_serve

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    async def start():  # type: ignore[no-untyped-def]
        return await ws_serve(echo, "127.0.0.1", 0, subprotocols=["chat.v1"])

    plain = run(start())
    port = plain.sockets[0].getsockname()[1]
    # raw_ping_interval=None: this test is about the panel, not raw-mode pings.
    client = wsnb.Client(f"ws://127.0.0.1:{port}", protocol="raw", subprotocols=["chat.v1"],
                         raw_ping_interval=None, backoff=FAST)
    panel = ConnectionPanel(client)
    try:
        assert panel.subprotocol is None and "subprotocol" not in panel.status.value
        panel.connect()
        wait_for(lambda: panel.state == "OPEN", what="OPEN")
        wait_for(lambda: panel.subprotocol == "chat.v1", what="subprotocol shown")
        assert client.subprotocol == "chat.v1"
        assert "subprotocol chat.v1" in panel.status.value
        assert "subprotocol chat.v1" in panel.text_summary()
        assert client.reconnects == 0
    finally:
        panel.close()
        run(client.close())
        plain.close()
        run(plain.wait_closed())
