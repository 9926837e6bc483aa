"""TimelinePanel: counters, the timeline's DataFrames, ack latency, a sequence diagram."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from wsnb.client import Client
from wsnb.widgets._base import Panel
from wsnb.widgets.svg import latency_svg, sequence_svg

#: Counters shown, in order (keys of ``client.counters``).
COUNTERS = ("sent", "acked", "pending", "resent", "dropped", "received", "reconnects")
TABS = ("messages", "acks", "states", "ack latency", "sequence")
TABLE_CSS = ("<style>.wsnb-table table{border-collapse:collapse;font-family:monospace;"
             "font-size:11px}.wsnb-table td,.wsnb-table th{padding:1px 6px;"
             "border-bottom:1px solid #e5e7eb;text-align:left;white-space:nowrap}</style>")


def local_clock(times: pd.Series) -> pd.Series:
    """UTC timestamps as local wall-clock ``HH:MM:SS.mmm`` strings."""
    local = datetime.now().astimezone().tzinfo
    return times.dt.tz_convert(local).dt.strftime("%H:%M:%S.%f").str[:-3]


def table_html(frame: pd.DataFrame, rows: int) -> str:
    """The newest `rows` rows of a timeline frame, newest first, as a compact HTML table."""
    if frame.empty:
        return '<div class="wsnb-table"><i>no events yet</i></div>'
    shown = frame.iloc[::-1].head(rows).copy()
    shown["time"] = local_clock(shown["time"])
    shown["latency_ms"] = shown["latency_ms"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown["id"] = shown["id"].astype("object").where(shown["id"].notna(), "")
    body = shown.to_html(index=False, border=0, escape=True, na_rep="")
    return f'{TABLE_CSS}<div class="wsnb-table">{body}</div>'


def counters_html(counters: dict[str, int]) -> str:
    cells = "".join(
        f'<span class="wsnb-counter wsnb-counter-{name}" style="display:inline-block;'
        f'margin-right:14px"><span style="color:#6b7280">{name}</span> '
        f'<b data-counter="{name}">{counters.get(name, 0)}</b></span>'
        for name in COUNTERS)
    return f'<div class="wsnb-counters" style="font-family:monospace">{cells}</div>'


class TimelinePanel(Panel):
    """What happened to a `Client`, from ``client.timeline`` and ``client.counters``.

    Tabs: messages, acks, states (the matching DataFrames, last `rows` rows,
    newest first), ack latency (a sparkline of the last `latency_points`
    acks) and sequence (an SVG diagram of the last `sequence_events`
    events). Only the visible tab is rebuilt, at most 10 times a second and
    only when the timeline changed.
    """

    counters = traitlets.Dict()
    rows = traitlets.Int(15)
    sequence_events = traitlets.Int(40)
    latency_points = traitlets.Int(200)

    def __init__(self, client: Client, *, rows: int = 15, sequence_events: int = 40,
                 latency_points: int = 200, **kwargs: Any) -> None:
        super().__init__(timeline=client.timeline, loop=client.loop, **kwargs)
        self.client = client
        self.rows = rows
        self.sequence_events = sequence_events
        self.latency_points = latency_points
        self.counters_label = widgets.HTML(counters_html({}))
        self.views = {name: widgets.HTML("") for name in TABS}
        for name, view in self.views.items():
            view.add_class(f"wsnb-tab-{name.replace(' ', '-')}")
        self.heartbeats = widgets.Checkbox(value=False, description="show heartbeats",
                                           indent=False)
        self.rows_input = widgets.BoundedIntText(value=rows, min=1, max=1000,
                                                 description="rows",
                                                 layout=widgets.Layout(width="140px"))
        sequence_box = widgets.VBox([self.heartbeats, self.views["sequence"]])
        self.tabs = widgets.Tab(
            children=[self.views["messages"], self.views["acks"], self.views["states"],
                      self.views["ack latency"], sequence_box],
            titles=list(TABS))
        self.tabs.add_class("wsnb-tabs")
        self.rows_input.observe(lambda ch: setattr(self, "rows", int(ch["new"])), "value")
        self.children = [
            widgets.HBox([widgets.HTML("<b>Timeline</b>"), self.rows_input],
                         layout=widgets.Layout(justify_content="space-between")),
            self.counters_label,
            self.tabs,
            self.error_label,
        ]
        self._start_refresher()

    @property
    def visible_tab(self) -> str:
        index = self.tabs.selected_index
        return TABS[index] if index is not None else TABS[0]

    def _key(self) -> Hashable:
        return (self.client.timeline.version, self.tabs.selected_index, self.rows,
                self.heartbeats.value, self.sequence_events, self.latency_points)

    def _redraw(self) -> None:
        counters = self.client.counters
        shown = {name: int(counters.get(name, 0)) for name in COUNTERS}
        if shown != self.counters:
            self.counters = shown
            self.counters_label.value = counters_html(shown)
        tab = self.visible_tab
        self.views[tab].value = self.render(tab)

    def render(self, tab: str) -> str:
        """HTML of one tab, built now from the timeline."""
        tl = self.client.timeline
        if tab == "messages":
            return table_html(tl.messages(last=self.rows), self.rows)
        if tab == "acks":
            return table_html(tl.acks(last=self.rows), self.rows)
        if tab == "states":
            return table_html(tl.states(last=self.rows), self.rows)
        if tab == "ack latency":
            acks = tl.acks(last=self.latency_points)
            return latency_svg(acks.loc[acks["type"] == "acked", "latency_ms"].tolist())
        if tab == "sequence":
            events = tl.events(last=self.sequence_events * (1 if self.heartbeats.value else 3))
            if not self.heartbeats.value:
                events = events[~events["type"].isin(["ping", "pong"])]
            events = events[events["type"] != "sent"].tail(self.sequence_events)
            return sequence_svg(events, client=self.client.name, heartbeats=True)
        raise ValueError(f"unknown tab {tab!r}; tabs: {', '.join(TABS)}")

    def text_summary(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in self.counters.items())
        frame = self.client.timeline.messages(last=5)
        return f"TimelinePanel {counts}\n{frame.iloc[::-1].to_string(index=False)}"

    def static_html(self) -> str:
        return (f"<div><b>Timeline</b>{counters_html(self.counters)}"
                f"{table_html(self.client.timeline.messages(last=self.rows), self.rows)}</div>")
