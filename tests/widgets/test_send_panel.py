"""SendPanel: inline validation, policies, bursts and the last result."""

from __future__ import annotations

import pytest
from widget_helpers import wait_for

import wsnb
from wsnb.widgets.send import validate_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1', "line 1, column 8"),
        ('{\n  "a": 1,\n  "b": }', "line 3, column 8"),
        ('{"a": [1, 2, NaN]}', "payload['a'][2]: nan is not valid JSON"),
        ('{"x": {"y": Infinity}}', "payload['x']['y']"),
        ("   ", "empty"),
    ],
)
def test_validation_names_line_column_or_path(text: str, expected: str) -> None:
    payload, why = validate_json(text)
    assert payload is None and expected in why


def test_send_is_disabled_while_invalid(dash: wsnb.Dashboard) -> None:
    panel = dash.send_panel
    assert panel.valid and not panel.send_button.disabled
    panel.editor.value = '{"a": [1, 2, NaN]}'
    assert not panel.valid and panel.send_button.disabled
    assert "payload[&#x27;a&#x27;][2]" in panel.validation_label.value
    panel.send()  # a direct call is refused too
    assert panel.result == ""
    panel.editor.value = '{"a": [1, 2, 3]}'
    assert panel.valid and not panel.send_button.disabled
    assert "valid JSON" in panel.validation_label.value


def test_send_shows_ack_latency(connected: wsnb.Dashboard) -> None:
    panel = connected.send_panel
    panel.editor.value = '{"n": 1}'
    panel.send_button.click()
    wait_for(lambda: "acked in" in panel.result, what="acked")
    assert panel.result.startswith("#1 acked in ") and panel.result.endswith(" ms")
    wait_for(lambda: {"n": 1} in connected.server.delivered)
    assert "acked in" in panel.result_label.value


def test_burst_sends_n_times(connected: wsnb.Dashboard) -> None:
    panel = connected.send_panel
    panel.editor.value = '{"burst": true}'
    panel.times.value = 50
    panel.send_button.click()
    wait_for(lambda: panel.result.startswith("50 sent: 50 acked"), what="50 acked")
    assert connected.server.delivered.count({"burst": True}) == 50


def test_queue_policy_shows_queued_then_acked(dash: wsnb.Dashboard) -> None:
    panel = dash.send_panel
    assert panel.policy.value == "queue"
    panel.send_button.click()
    wait_for(lambda: "queued" in panel.result, what="queued while closed")
    dash.connection_panel.connect_button.click()
    wait_for(lambda: "acked in" in panel.result, what="acked after connect")


def test_raise_policy_shows_not_sent(dash: wsnb.Dashboard) -> None:
    panel = dash.send_panel
    panel.policy.value = "raise"
    assert dash.client.when_closed == "raise"
    panel.send_button.click()
    wait_for(lambda: panel.result.startswith("not sent"), what="refused locally")
    assert "NotOpen" in panel.result and "NotOpen" in panel.error
    states = dash.client.timeline.states()
    assert states["detail"].str.contains("send failed: NotOpen").any()


def test_drop_policy_shows_dropped(dash: wsnb.Dashboard) -> None:
    panel = dash.send_panel
    panel.policy.value = "drop"
    panel.send_button.click()
    wait_for(lambda: "dropped" in panel.result, what="dropped")
    assert "when_closed" in panel.result or "client" in panel.result


def test_refused_receipt_names_the_code() -> None:
    from wsnb._receipt import Receipt
    from wsnb.widgets.send import describe_receipts

    r = Receipt(7, "written")
    assert describe_receipts([r]) == "#7 written, waiting for the ack"
    r._settle("refused", wsnb.Refused("too_large", "server closed with 1009", 7))
    assert describe_receipts([r]) == "#7 refused: too_large (server closed with 1009)"
    ok = Receipt(8, "written")
    ok.latency_ms = 2.0
    ok._settle("acked")
    assert describe_receipts([ok, r]) == (
        "2 sent: 1 acked, 1 refused, acked in 2.0–2.0 ms, "
        "first refusal: too_large (server closed with 1009)")
