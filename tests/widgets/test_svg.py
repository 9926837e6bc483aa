"""The SVG drawings from synthetic timelines."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import wsnb
from wsnb.widgets.svg import latency_svg, sequence_svg


def test_sequence_has_lanes_arrows_notes_and_outage() -> None:
    tl = wsnb.Timeline()
    tl.record("state", state="CONNECTING")
    tl.record("state", state="OPEN")
    tl.record("state", state="READY")
    tl.record("sent", direction="out", id=1)
    tl.record("written", direction="out", id=1)
    tl.record("acked", direction="in", id=1, latency_ms=1.5)
    tl.record("ping", direction="in")
    tl.record("chaos", detail="cut")
    tl.record("close", detail="1006 abnormal closure")
    tl.record("state", state="CLOSED", detail="reconnect in 0.5 s")
    tl.record("state", state="CONNECTING")
    tl.record("state", state="OPEN")
    tl.record("resent", direction="out", id=2)
    tl.record("received", direction="in", id=1)
    tl.record("nack", direction="in", id=3)
    svg = sequence_svg(tl.events(), client="me", server="srv")
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    for needle in ("me", "srv", "msg #1", "ack #1 1.5 ms", "ping", "⚡ cut",
                   "✕ close 1006", "resend #2", "nack #3", "READY", "link down"):
        assert needle in text, needle
    assert svg.count('class="wsnb-seq-outage"') == 1
    assert "sent" not in text  # "written" is the arrow; "sent" would double it
    assert "wsnb-seq-ping" not in sequence_svg(tl.events(), heartbeats=False)


def test_outage_still_open_and_empty() -> None:
    tl = wsnb.Timeline()
    tl.record("close", detail="1006")
    assert "link down (still)" in sequence_svg(tl.events())
    assert "no events yet" in sequence_svg(wsnb.Timeline().events())
    ET.fromstring(sequence_svg(wsnb.Timeline().events()))


def test_text_is_escaped() -> None:
    tl = wsnb.Timeline()
    tl.record("error", detail="<script>alert(1)</script>")
    svg = sequence_svg(tl.events())
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_latency_sparkline() -> None:
    svg = latency_svg([1.0, 2.0, 3.0, 4.0, 100.0])
    root = ET.fromstring(svg)
    text = "".join(root.itertext())
    assert "5 acks" in text and "median 3.0" in text and "max 100.0 ms" in text
    assert "no acks yet" in latency_svg([])
    assert "1 acks" in latency_svg([float("nan"), 2.0])
