"""Dashboard: every panel over one client (plus chaos controls when a server/proxy is given)."""

from __future__ import annotations

import asyncio
from typing import Any

import ipywidgets as widgets

from wsnb.client import Client
from wsnb.proxy import FaultProxy
from wsnb.server import Server
from wsnb.widgets._base import Panel, close_tree
from wsnb.widgets.chaos import ChaosPanel
from wsnb.widgets.connection import ConnectionPanel
from wsnb.widgets.send import SendPanel
from wsnb.widgets.timeline_panel import TimelinePanel


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        return False


class Dashboard(Panel):
    """ConnectionPanel and SendPanel side by side, ChaosPanel, then TimelinePanel.

    ``server`` and ``proxy`` are optional; the chaos row appears when either
    is given. `close()` stops every panel's refresher.
    """

    def __init__(self, client: Client, server: Server | None = None,
                 proxy: FaultProxy | None = None, **kwargs: Any) -> None:
        super().__init__(timeline=client.timeline, loop=client.loop, **kwargs)
        self.client = client
        self.server = server
        self.proxy = proxy
        self.connection_panel = ConnectionPanel(client)
        self.send_panel = SendPanel(client)
        self.timeline_panel = TimelinePanel(client)
        self.chaos_panel = (ChaosPanel(server, proxy, timeline=client.timeline)
                            if server is not None or proxy is not None else None)
        self.connection_panel.layout = widgets.Layout(width="50%", padding="0 12px 0 0")
        self.send_panel.layout = widgets.Layout(width="50%")
        rows: list[widgets.Widget] = [widgets.HBox([self.connection_panel, self.send_panel])]
        if self.chaos_panel is not None:
            rows.append(self.chaos_panel)
        rows.append(self.timeline_panel)
        self.children = rows
        self.add_class("wsnb-dashboard")

    @property
    def panels(self) -> list[Panel]:
        return [p for p in (self.connection_panel, self.send_panel, self.chaos_panel,
                            self.timeline_panel) if p is not None]

    def close(self) -> None:
        """Stop every panel and close all widgets (the client keeps running)."""
        for panel in self.panels:
            panel.close()
        for child in self.children:
            close_tree(child)
        super().close()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Close the panels, then the client, proxy and server (blocking, from sync code)."""
        self.close()
        for obj in (self.client, self.proxy, self.server):
            if obj is None:
                continue
            if _running_on(obj.loop):
                raise RuntimeError("shutdown() blocks: call it from a cell, not the wsnb loop")
            asyncio.run_coroutine_threadsafe(obj.close(), obj.loop).result(timeout)

    def text_summary(self) -> str:
        return "\n".join(p.text_summary() for p in self.panels)

    def static_html(self) -> str:
        return "<div>" + "".join(p.static_html() for p in self.panels) + "</div>"
