"""SVG drawings built as text: the sequence diagram and the ack-latency sparkline.

Pure functions of a timeline DataFrame, so they render anywhere HTML does
(a widget, a static notebook, a test) with no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from wsnb.widgets._base import esc

FONT = 'font-family="monospace" font-size="11"'
COLOURS = {
    "msg": "#2563eb",
    "resend": "#7c3aed",
    "ack": "#16a34a",
    "nack": "#dc2626",
    "ping": "#9ca3af",
    "close": "#dc2626",
    "state": "#374151",
    "chaos": "#d97706",
    "error": "#dc2626",
    "outage": "#fee2e2",
}
#: Client states that start an outage (it lasts until OPEN again); CONNECTING alone
#: (the first connect) does not.
DOWN_STATES = frozenset({"CLOSED", "CLOSING"})


def _arrow(y: float, x1: float, x2: float, colour: str, label: str, *,
           dashed: bool = False, cls: str = "") -> str:
    dash = ' stroke-dasharray="5,3"' if dashed else ""
    head = 7 if x2 > x1 else -7
    mid = (x1 + x2) / 2
    return (f'<g class="wsnb-seq-{cls}">'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" '
            f'stroke-width="1.5"{dash}/>'
            f'<polygon points="{x2},{y} {x2 - head},{y - 4} {x2 - head},{y + 4}" fill="{colour}"/>'
            f'<text x="{mid}" y="{y - 3}" text-anchor="middle" fill="{colour}" {FONT}>'
            f"{esc(label)}</text></g>")


def _note(y: float, x: float, colour: str, label: str, *, anchor: str = "start",
          cls: str = "") -> str:
    return (f'<g class="wsnb-seq-{cls}"><circle cx="{x}" cy="{y - 4}" r="3" fill="{colour}"/>'
            f'<text x="{x + (8 if anchor == "start" else -8)}" y="{y}" text-anchor="{anchor}" '
            f'fill="{colour}" {FONT}>{esc(label)}</text></g>')


def _id(value: Any) -> str:
    return "" if value is None or value is pd.NA or pd.isna(value) else f" #{int(value)}"


def _ms(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f" {float(value):.1f} ms"


def sequence_svg(events: pd.DataFrame, *, client: str = "client", server: str = "server",
                 heartbeats: bool = True, width: int = 640, row: int = 18) -> str:
    """A sequence diagram of `events` (a `Timeline` frame, oldest first) as SVG text.

    Two lanes (client, server); arrows for messages written/resent/received,
    acks/nacks, pings/pongs; notes for state changes, closes, chaos and
    errors; a shaded band with the duration for each outage (from the link
    going down until it is OPEN again).
    """
    xc, xs = 190, width - 170  # room for timestamps + state labels left, notes right
    top = 40
    parts: list[str] = []
    rows: list[tuple[str, Any]] = []
    down_since: tuple[int, Any] | None = None
    outages: list[tuple[int, int, float | None]] = []
    for ev in events.itertuples(index=False):
        kind = str(ev.type)
        if kind in ("sent",):
            continue
        if kind in ("ping", "pong") and not heartbeats:
            continue
        i = len(rows)
        rows.append((kind, ev))
        going_down = kind == "close" or (kind == "state" and str(ev.state) in DOWN_STATES)
        if going_down and down_since is None:
            down_since = (i, ev.time)
        elif kind == "state" and str(ev.state) == "OPEN" and down_since is not None:
            start, t0 = down_since
            outages.append((start, i, (ev.time - t0).total_seconds()))
            down_since = None
    if down_since is not None:
        outages.append((down_since[0], len(rows), None))
    height = top + row * max(len(rows), 1) + 20
    for start, stop, seconds in outages:
        y0 = top + row * start - row + 6
        y1 = top + row * stop - row + 6
        label = "link down" + (f" {seconds:.2f} s" if seconds is not None else " (still)")
        parts.append(
            f'<g class="wsnb-seq-outage"><rect x="{xc - 90}" y="{y0}" width="{width - xc + 86}" '
            f'height="{max(y1 - y0, 4)}" fill="{COLOURS["outage"]}" opacity="0.8"/>'
            f'<text x="{width - 6}" y="{y1 - 4}" text-anchor="end" fill="#991b1b" {FONT}>'
            f"{esc(label)}</text></g>")
    for lane_x, name in ((xc, client), (xs, server)):
        parts.append(f'<text x="{lane_x}" y="16" text-anchor="middle" font-weight="bold" '
                     f'{FONT}>{esc(name)}</text>'
                     f'<line x1="{lane_x}" y1="24" x2="{lane_x}" y2="{height - 8}" '
                     f'stroke="#9ca3af" stroke-width="1"/>')
    local = datetime.now().astimezone().tzinfo
    for i, (kind, ev) in enumerate(rows):
        y = top + row * i
        t = ev.time
        stamp = t.astimezone(local).strftime("%H:%M:%S.%f")[:-3] if hasattr(t, "strftime") else ""
        parts.append(f'<text x="4" y="{y}" fill="#9ca3af" {FONT}>{esc(stamp)}</text>')
        direction = str(ev.direction)
        out = direction == "out"
        a, b = (xc, xs) if out else (xs, xc)
        if kind == "written":
            parts.append(_arrow(y, a, b, COLOURS["msg"], f"msg{_id(ev.id)}", cls="msg"))
        elif kind == "resent":
            parts.append(_arrow(y, a, b, COLOURS["resend"], f"resend{_id(ev.id)}", dashed=True,
                                cls="msg"))
        elif kind == "received":
            parts.append(_arrow(y, a, b, COLOURS["msg"], f"msg{_id(ev.id)}", cls="msg"))
        elif kind == "acked":
            parts.append(_arrow(y, xs, xc, COLOURS["ack"], f"ack{_id(ev.id)}{_ms(ev.latency_ms)}",
                                cls="ack"))
        elif kind == "nack":
            parts.append(_arrow(y, xs, xc, COLOURS["nack"], f"nack{_id(ev.id)}", cls="ack"))
        elif kind in ("ping", "pong"):
            parts.append(_arrow(y, a, b, COLOURS["ping"], f"{kind}{_ms(ev.latency_ms)}",
                                dashed=True, cls="ping"))
        elif kind == "queued":
            parts.append(_note(y, xc, COLOURS["msg"], f"queued{_id(ev.id)}", anchor="end",
                               cls="msg"))
        elif kind == "dropped":
            parts.append(_note(y, xc if out else xs, COLOURS["error"],
                               f"dropped{_id(ev.id)} {ev.detail}"[:60],
                               anchor="end" if out else "start", cls="error"))
        elif kind == "close":
            words = str(ev.detail).split(" (")[0]  # "1006 abnormal closure (why...)" -> short
            parts.append(_note(y, xc, COLOURS["close"], f"✕ close {words}"[:48], cls="close"))
        elif kind == "state":
            parts.append(_note(y, xc, COLOURS["state"], str(ev.state), anchor="end",
                               cls="state"))
        elif kind == "chaos":
            parts.append(_note(y, (xc + xs) / 2, COLOURS["chaos"], f"⚡ {ev.detail}"[:60],
                               cls="chaos"))
        elif kind == "error":
            parts.append(_note(y, xc, COLOURS["error"], f"⚠ {ev.detail}"[:64], cls="error"))
    if not rows:
        parts.append(f'<text x="{width / 2}" y="{top}" text-anchor="middle" fill="#9ca3af" '
                     f'{FONT}>no events yet</text>')
    return (f'<svg class="wsnb-sequence" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>')


def latency_svg(latencies: Sequence[float], *, width: int = 560, height: int = 140) -> str:
    """A sparkline of ack latencies (ms, oldest first) with min / median / p95 / max."""
    values = [float(v) for v in latencies if v is not None and math.isfinite(float(v))]
    if not values:
        return (f'<svg class="wsnb-latency" xmlns="http://www.w3.org/2000/svg" width="{width}" '
                f'height="40"><text x="8" y="24" fill="#9ca3af" {FONT}>no acks yet</text></svg>')
    ordered = sorted(values)
    n = len(ordered)
    p50 = ordered[n // 2]
    p95 = ordered[min(n - 1, math.ceil(0.95 * n) - 1)]
    lo, hi = 0.0, max(ordered[-1], 1e-9)
    left, right, top, bottom = 50, width - 10, 24, height - 20
    span_x = max(len(values) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (right - left) * i / span_x
        y = bottom - (bottom - top) * (v - lo) / (hi - lo)
        return round(x, 1), round(y, 1)

    points = " ".join(f"{x},{y}" for x, y in (xy(i, v) for i, v in enumerate(values)))
    p95_y = xy(0, p95)[1]
    title = (f"{n} acks · min {ordered[0]:.1f} · median {p50:.1f} · p95 {p95:.1f} · "
             f"max {ordered[-1]:.1f} ms")
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="2" fill="#16a34a"/>'
                   for x, y in (xy(i, v) for i, v in enumerate(values))) if n <= 200 else ""
    return (f'<svg class="wsnb-latency" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">'
            f'<text x="{left}" y="14" {FONT}>{esc(title)}</text>'
            f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#9ca3af"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#9ca3af"/>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" {FONT}>{hi:.0f}</text>'
            f'<text x="{left - 4}" y="{bottom}" text-anchor="end" {FONT}>0</text>'
            f'<text x="{left - 4}" y="{height - 4}" text-anchor="end" {FONT}>ms</text>'
            f'<line x1="{left}" y1="{p95_y}" x2="{right}" y2="{p95_y}" stroke="#f59e0b" '
            f'stroke-dasharray="4,3"><title>p95 {p95:.1f} ms</title></line>'
            f'<polyline points="{points}" fill="none" stroke="#16a34a" stroke-width="1.5"/>'
            f"{dots}</svg>")
