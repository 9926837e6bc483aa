"""SendPanel: a JSON editor with inline validation, the send policy, bursts, the last result."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import ipywidgets as widgets
import traitlets

from wsnb._receipt import Receipt
from wsnb.client import Client
from wsnb.protocol.envelope import payload_text
from wsnb.widgets._base import Panel, esc

DEFAULT_PAYLOAD = '{"hello": "world"}'
MAX_BURST = 100_000


def validate_json(text: str) -> tuple[Any, str]:
    """``(payload, "")`` if `text` is a sendable JSON document, else ``(None, why)``.

    Syntax errors name the line and column; values JSON cannot carry (NaN,
    Infinity) name their path, e.g. ``payload['a'][2]``.
    """
    if not text.strip():
        return None, "empty: type a JSON value, e.g. {\"hello\": \"world\"}"
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    try:
        payload_text(payload)
    except (TypeError, ValueError) as exc:
        return None, str(exc)
    return payload, ""


def describe_receipts(receipts: list[Receipt]) -> str:
    """The last send's result: queued / written / acked in X ms / refused: code."""
    if not receipts:
        return ""
    if len(receipts) == 1:
        return describe_receipt(receipts[0])
    states: dict[str, int] = {}
    for r in receipts:
        states[r.state] = states.get(r.state, 0) + 1
    parts = [f"{n} {state}" for state, n in states.items()]
    latencies = [r.latency_ms for r in receipts if r.latency_ms is not None]
    if latencies:
        parts.append(f"acked in {min(latencies):.1f}–{max(latencies):.1f} ms")
    refused = next((r for r in receipts if r.state == "refused"), None)
    if refused is not None:
        parts.append(f"first refusal: {_refusal(refused)}")
    return f"{len(receipts)} sent: " + ", ".join(parts)


def describe_receipt(r: Receipt) -> str:
    if r.state == "acked":
        return f"#{r.id} acked in {r.latency_ms or 0:.1f} ms"
    if r.state == "refused":
        return f"#{r.id} refused: {_refusal(r)}"
    if r.state == "dropped":
        reason = getattr(r.error, "reason", "") or str(r.error or "")
        return f"#{r.id} dropped" + (f": {reason}" if reason else "")
    if r.state == "written":
        return f"#{r.id} written, waiting for the ack"
    return f"#{r.id} queued (held in the outbox until READY)"


def _refusal(r: Receipt) -> str:
    code = getattr(r.error, "code", None)
    reason = getattr(r.error, "reason", "")
    return f"{code}" + (f" ({reason})" if reason else "") if code else str(r.error)


async def send_burst(client: Client, payload: Any, times: int) -> list[Receipt]:
    """``client.send(payload)`` `times` times, in order; the receipts."""
    return [await client.send(payload) for _ in range(times)]


class SendPanel(Panel):
    """Compose a JSON payload and send it (N times) through a `Client`.

    ``Send`` is disabled while the text is not a valid JSON payload; the
    validation line names the line/column or the bad value's path. The
    policy dropdown sets ``client.when_closed`` (what `send` does while not
    READY). The result line follows the receipts of the last send.
    """

    valid = traitlets.Bool(True)
    validation = traitlets.Unicode("")
    result = traitlets.Unicode("")
    sending = traitlets.Bool(False)

    def __init__(self, client: Client, *, payload: str = DEFAULT_PAYLOAD, **kwargs: Any) -> None:
        super().__init__(timeline=client.timeline, loop=client.loop, **kwargs)
        self.client = client
        self.receipts: list[Receipt] = []
        self.editor = widgets.Textarea(value=payload, placeholder='{"hello": "world"}',
                                       layout=widgets.Layout(width="100%", height="90px"))
        self.editor.add_class("wsnb-editor")
        self.validation_label = widgets.HTML("")
        self.validation_label.add_class("wsnb-validation")
        self.policy = widgets.Dropdown(
            options=[("queue while closed", "queue"), ("raise while closed", "raise"),
                     ("drop while closed", "drop")],
            value=client.when_closed, description="policy",
            layout=widgets.Layout(width="260px"))
        self.times = widgets.BoundedIntText(value=1, min=1, max=MAX_BURST, description="times",
                                            layout=widgets.Layout(width="160px"))
        self.send_button = widgets.Button(description="Send", button_style="primary",
                                          icon="paper-plane")
        self.send_button.add_class("wsnb-send")
        self.result_label = widgets.HTML("")
        self.result_label.add_class("wsnb-result")
        self.editor.observe(lambda _: self._validate(), "value")
        self.policy.observe(self._set_policy, "value")
        self.send_button.on_click(lambda _: self.send())
        self.children = [
            widgets.HTML("<b>Send</b>"),
            self.editor,
            self.validation_label,
            widgets.HBox([self.policy, self.times, self.send_button]),
            self.result_label,
            self.error_label,
        ]
        self._validate()
        self._start_refresher()

    def _validate(self) -> None:
        _, why = validate_json(self.editor.value)
        self.valid = not why
        self.validation = why
        self.send_button.disabled = bool(why)
        self.validation_label.value = (
            f'<span style="color:#b91c1c">✗ {esc(why)}</span>' if why
            else '<span style="color:#16a34a">✓ valid JSON</span>')

    def _set_policy(self, change: dict[str, Any]) -> None:
        self.client.when_closed = change["new"]

    def send(self) -> None:
        """Send the editor's payload ``times`` times (does nothing while invalid)."""
        payload, why = validate_json(self.editor.value)
        if why:
            self._validate()
            return
        self.clear_error()
        times = int(self.times.value)
        self.sending = True
        self.result = self.result_label.value = f"sending {times}…" if times > 1 else "sending…"

        def sent(receipts: list[Receipt]) -> None:
            self.receipts = receipts
            self.sending = False
            if self._refresher is not None:
                self._refresher.poke()

        future = self.command(send_burst(self.client, payload, times), "send", done=sent)

        def failed(fut: Any) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.sending = False
                self.result = f"not sent: {self.error}"
                self.result_label.value = f"<span>{esc(self.result)}</span>"

        future.add_done_callback(failed)

    def _key(self) -> Hashable:
        return (self.client.timeline.version, len(self.receipts), self.sending)

    def _redraw(self) -> None:
        if self.sending or not self.receipts:
            return
        self.result = describe_receipts(self.receipts)
        self.result_label.value = f"<span>{esc(self.result)}</span>"

    def text_summary(self) -> str:
        lines = [f"SendPanel policy={self.client.when_closed} times={self.times.value}",
                 f"payload: {self.editor.value[:200]}"]
        if self.validation:
            lines.append(f"invalid: {self.validation}")
        if self.result:
            lines.append(f"last send: {self.result}")
        return "\n".join(lines)
