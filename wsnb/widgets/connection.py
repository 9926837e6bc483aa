"""ConnectionPanel: URL and token, Connect / Disconnect, readyState badge, READY, retries."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import ipywidgets as widgets
import traitlets

from wsnb._secret import masked_url
from wsnb.client import Client, ReadyState, check_url
from wsnb.widgets._base import Panel, esc

#: Badge colours per readyState (background, text).
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "CONNECTING": ("#f59e0b", "#1f1f1f"),
    "OPEN": ("#16a34a", "#ffffff"),
    "CLOSING": ("#ea580c", "#ffffff"),
    "CLOSED": ("#6b7280", "#ffffff"),
}


def badge_html(state: str, ready: bool) -> str:
    """The readyState badge and the READY indicator as HTML (also the static fallback)."""
    bg, fg = STATE_COLOURS.get(state, ("#6b7280", "#ffffff"))
    pill = ("display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;"
            "font-family:monospace;margin-right:6px")
    ready_bg, ready_text = ("#16a34a", "READY") if ready else ("#e5e7eb", "NOT READY")
    ready_fg = "#ffffff" if ready else "#374151"
    return (f'<span class="wsnb-badge wsnb-state-{esc(state)}" title="readyState" '
            f'style="{pill};background:{bg};color:{fg}">{esc(state)}</span>'
            f'<span class="wsnb-ready wsnb-ready-{str(ready).lower()}" '
            f'title="application handshake (handshake_ack received)" '
            f'style="{pill};background:{ready_bg};color:{ready_fg}">{ready_text}</span>')


class ConnectionPanel(Panel):
    """Drive one `Client`: URL, token (masked), Connect / Disconnect, and watch its state.

    Observes ``client.ready_state``, ``ready``, ``attempt``, ``reconnects``,
    ``next_retry_in``, ``subprotocol`` (the one the server selected),
    ``close_text`` and ``last_error``; commands are
    ``client.connect()`` and ``client.close()`` run on the client's loop.
    A token typed here is handed to the client on Connect and then cleared
    from the field (so it never lands in saved widget state); the URL field
    shows the URL without credentials or query string.
    """

    state = traitlets.Unicode("CLOSED")
    ready = traitlets.Bool(False)
    attempt = traitlets.Int(0)
    reconnects = traitlets.Int(0)
    next_retry_in = traitlets.Float(None, allow_none=True)
    subprotocol = traitlets.Unicode(None, allow_none=True)
    close_text = traitlets.Unicode("not closed")
    last_error = traitlets.Unicode("")

    def __init__(self, client: Client, *, connect_timeout: float | None = 30.0,
                 **kwargs: Any) -> None:
        super().__init__(timeline=client.timeline, loop=client.loop, **kwargs)
        self.client = client
        self.connect_timeout = connect_timeout
        self.url = widgets.Text(value=masked_url(client.url), description="URL",
                                layout=widgets.Layout(width="100%"))
        has_token = client.has_token
        self.token = widgets.Password(
            value="", description="token",
            placeholder="(set; type to replace)" if has_token else "(none)",
            layout=widgets.Layout(width="100%"))
        self.connect_button = widgets.Button(description="Connect", button_style="success",
                                             icon="plug")
        self.disconnect_button = widgets.Button(description="Disconnect", icon="times")
        self.connect_button.add_class("wsnb-connect")
        self.disconnect_button.add_class("wsnb-disconnect")
        self.badge = widgets.HTML(badge_html("CLOSED", False))
        self.badge.add_class("wsnb-badge-box")
        self.status = widgets.HTML("")
        self.status.add_class("wsnb-status")
        self.connect_button.on_click(lambda _: self.connect())
        self.disconnect_button.on_click(lambda _: self.disconnect())
        title = widgets.HTML("<b>Connection</b>")
        self.children = [
            title,
            self.url,
            self.token,
            widgets.HBox([self.connect_button, self.disconnect_button, self.badge],
                         layout=widgets.Layout(align_items="center")),
            self.status,
            self.error_label,
        ]
        self._redraw()
        self._start_refresher()

    # ----- commands -------------------------------------------------------------

    def connect(self) -> None:
        """Apply a changed URL/token (only while CLOSED), then start ``client.connect()``."""
        self.clear_error()
        client = self.client
        try:
            url = self.url.value.strip()
            if url not in (client.url, masked_url(client.url)):
                if client.ready_state != ReadyState.CLOSED:
                    raise ValueError("disconnect before changing the URL")
                client.url = check_url(url)
                self.url.value = masked_url(client.url)
            if self.token.value:
                if client.ready_state != ReadyState.CLOSED:
                    raise ValueError("disconnect before changing the token")
                client.set_token(self.token.value)
                self.token.value = ""
                self.token.placeholder = "(set; type to replace)"
        except (TypeError, ValueError) as exc:
            self.show_error(f"connect: {exc}")
            return
        self.command(client.connect(timeout=self.connect_timeout), "connect")

    def disconnect(self) -> None:
        """Close the client for good (no reconnect) with code 1000."""
        self.clear_error()
        self.command(self.client.close(), "disconnect")

    # ----- refreshing -----------------------------------------------------------

    def _key(self) -> Hashable:
        c = self.client
        retry = c.next_retry_in
        return (c.ready_state, c.ready, c.attempt, c.reconnects, c.subprotocol, c.close_code,
                c.close_reason, c.last_error, None if retry is None else round(retry, 1))

    def _redraw(self) -> None:
        c = self.client
        state, ready = c.ready_state.name, c.ready
        self.attempt = c.attempt
        self.reconnects = c.reconnects
        self.next_retry_in = c.next_retry_in
        self.subprotocol = c.subprotocol
        self.close_text = c.close_text
        self.last_error = c.last_error
        self.badge.value = badge_html(state, ready)
        self.ready = ready  # state and ready last: the rest is current when they change
        self.state = state
        self.status.value = f'<span style="font-size:90%">{esc(self.status_text())}</span>'
        self.connect_button.disabled = c.ready
        self.disconnect_button.disabled = c.ready_state == ReadyState.CLOSED and not self.ready

    def status_text(self) -> str:
        """Reconnects, attempt, subprotocol, retry countdown, last close and error in words."""
        parts = [f"reconnects {self.reconnects}", f"attempt {self.attempt}"]
        if self.subprotocol:
            parts.append(f"subprotocol {self.subprotocol}")
        if self.next_retry_in is not None:
            parts.append(f"next retry in {self.next_retry_in:.1f} s")
        parts.append(f"last close: {self.close_text}")
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        return " · ".join(parts)

    def text_summary(self) -> str:
        ready = "READY" if self.ready else "NOT READY"
        url = masked_url(self.client.url)
        return f"ConnectionPanel [{self.state}] [{ready}] {url}\n{self.status_text()}"

    def static_html(self) -> str:
        return (f"<div><b>Connection</b> <code>{esc(masked_url(self.client.url))}</code><br>"
                f"{badge_html(self.state, self.ready)}<br>"
                f"<small>{esc(self.status_text())}</small></div>")
