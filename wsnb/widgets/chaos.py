"""ChaosPanel: break the link on purpose (FaultProxy) and restart or reorder the Server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from wsnb.proxy import FaultProxy
from wsnb.server import Server
from wsnb.timeline import Timeline
from wsnb.widgets._base import Panel, esc

#: Server settings the reorder toggle applies: workers and per-message delay (s).
REORDER_WORKERS = 4
REORDER_DELAY = (0.0, 0.05)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a sync fault/server method on its loop (so the kernel thread never blocks on it)."""
    return fn(*args)


class ChaosPanel(Panel):
    """Buttons that inject faults: cut, blackhole, latency, bandwidth, restore (via `proxy`),
    server restart and reorder (via `server`).

    Each action is recorded on `timeline` as a ``chaos`` event (unless the
    proxy or server already records it there). Reorder gives the server
    `REORDER_WORKERS` workers with a random processing delay
    (``server.set_processing``), so messages are processed out of order and
    reordered before delivery; it takes effect on live connections at once.
    """

    last_action = traitlets.Unicode("")
    actions = traitlets.Int(0)

    def __init__(self, server: Server | None = None, proxy: FaultProxy | None = None, *,
                 timeline: Timeline | None = None, **kwargs: Any) -> None:
        owner = proxy if proxy is not None else server
        if owner is None:
            raise ValueError("ChaosPanel needs a server, a proxy, or both")
        super().__init__(timeline=timeline, loop=owner.loop, **kwargs)
        self.server = server
        self.proxy = proxy
        self.timeline = timeline
        self.status = widgets.HTML("")
        self.status.add_class("wsnb-chaos-status")
        self.latency_ms = widgets.BoundedFloatText(value=200, min=0, max=60_000,
                                                   description="ms",
                                                   layout=widgets.Layout(width="140px"))
        self.bandwidth_bps = widgets.BoundedIntText(value=10_000, min=1, max=10**10,
                                                    description="B/s",
                                                    layout=widgets.Layout(width="170px"))
        self.buttons: dict[str, widgets.Button | widgets.ToggleButton] = {}
        rows: list[widgets.Widget] = [widgets.HTML("<b>Chaos</b>")]
        if proxy is not None:
            proxy_row = [self._button("cut", "cut", "cut every connection (peers see 1006)"),
                         self._button("blackhole", "blackhole", "pass nothing, keep TCP open"),
                         self._button("restore", "restore", "clean link again")]
            rows.append(widgets.HBox(proxy_row))
            rows.append(widgets.HBox([self._button("latency", "latency", "delay each chunk"),
                                      self.latency_ms,
                                      self._button("bandwidth", "bandwidth", "throttle"),
                                      self.bandwidth_bps]))
        if server is not None:
            reorder = widgets.ToggleButton(
                value=bool(server.workers), description="reorder", icon="random",
                tooltip="server processes messages out of order (reordered before delivery)")
            reorder.add_class("wsnb-chaos-reorder")
            reorder.observe(lambda ch: self.reorder(bool(ch["new"])), "value")
            self.buttons["reorder"] = reorder
            rows.append(widgets.HBox([self._button("restart", "server restart",
                                                   "close all with 1012, listen again"),
                                      reorder]))
        rows += [self.status, self.error_label]
        self.children = rows

    def _button(self, name: str, label: str, tooltip: str) -> widgets.Button:
        button = widgets.Button(description=label, tooltip=tooltip,
                                button_style="warning" if name != "restore" else "",
                                layout=widgets.Layout(width="auto"))
        button.add_class(f"wsnb-chaos-{name}")
        button.on_click(lambda _: getattr(self, name)())
        self.buttons[name] = button
        return button

    # ----- actions ----------------------------------------------------------------

    def _record(self, detail: str, *, already_there: Timeline | None) -> None:
        self.actions += 1
        self.last_action = detail
        stamp = time.strftime("%H:%M:%S")
        self.status.value = f'<span style="color:#92400e">⚡ {stamp} {esc(detail)}</span>'
        if self.timeline is not None and self.timeline is not already_there:
            self.timeline.record("chaos", detail=detail, peer="chaos panel")

    def _proxy_action(self, detail: str, fn: Callable[..., Any], *args: Any) -> None:
        proxy = self._need("proxy")
        self.clear_error()
        self.command(_call(fn, *args), detail, loop=proxy.loop,
                     done=lambda _: self._record(detail, already_there=proxy.timeline))

    def _need(self, what: str) -> Any:
        obj = getattr(self, what)
        if obj is None:
            raise RuntimeError(f"this ChaosPanel has no {what}")
        return obj

    def cut(self) -> None:
        """Abort every proxied connection (no close frame: the client sees 1006)."""
        self._proxy_action("cut", self._need("proxy").cut)

    def blackhole(self) -> None:
        """Keep TCP open but pass nothing: the heartbeat must notice the dead link."""
        self._proxy_action("blackhole", self._need("proxy").blackhole)

    def restore(self) -> None:
        """Back to a clean link (no blackhole, latency or bandwidth limit)."""
        self._proxy_action("restore", self._need("proxy").restore)

    def latency(self, ms: float | None = None) -> None:
        """Delay every chunk by `ms` (default: the ms field) each way."""
        ms = float(self.latency_ms.value if ms is None else ms)
        self._proxy_action(f"latency {ms:g} ms", self._need("proxy").latency, ms)

    def bandwidth(self, bytes_per_s: int | None = None) -> None:
        """Throttle each direction to `bytes_per_s` (default: the B/s field)."""
        rate = int(self.bandwidth_bps.value if bytes_per_s is None else bytes_per_s)
        self._proxy_action(f"bandwidth {rate} B/s", self._need("proxy").bandwidth, rate)

    def restart(self, keep_sessions: bool = True) -> None:
        """``server.restart()``: every connection closes with 1012, the port is kept."""
        server = self._need("server")
        self.clear_error()
        detail = f"server restart (keep_sessions={keep_sessions})"
        self.status.value = "<span>restarting the server…</span>"
        self.command(server.restart(keep_sessions=keep_sessions), "server restart",
                     loop=server.loop,
                     done=lambda _: self._record(detail, already_there=server.timeline))

    def reorder(self, on: bool = True) -> None:
        """Switch out-of-order processing on the server (reordered before delivery)."""
        server = self._need("server")
        self.clear_error()
        toggle = self.buttons.get("reorder")
        if toggle is not None and toggle.value != on:
            toggle.value = on  # re-enters through the observer
            return
        workers = REORDER_WORKERS if on else 0
        delay = REORDER_DELAY if on else None
        detail = (f"reorder on: {workers} workers, {delay[0] * 1000:g}–{delay[1] * 1000:g} ms "
                  "processing delay" if delay else "reorder off")
        # On the server's loop: set_processing changes its live connections.
        self.command(_call(server.set_processing, workers, delay), "reorder", loop=server.loop,
                     done=lambda _: self._record(detail, already_there=None))

    def text_summary(self) -> str:
        last = f" last: {self.last_action}" if self.last_action else ""
        return f"ChaosPanel actions={self.actions}{last}"
