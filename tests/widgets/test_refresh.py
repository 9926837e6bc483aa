"""The refresher: at most 10 redraws a second, only on change, stops when closed."""

from __future__ import annotations

import threading
import time

from widget_helpers import wait_for

import wsnb
from wsnb.loop import background_loop
from wsnb.widgets._base import Refresher


def test_redraws_only_when_the_key_changes() -> None:
    value = [0]
    redraws: list[int] = []
    r = Refresher(background_loop(), lambda: value[0], lambda: redraws.append(value[0]))
    try:
        wait_for(lambda: r.ticks >= 3)
        assert redraws == [0]
        value[0] = 1
        wait_for(lambda: redraws == [0, 1])
        ticks = r.ticks
        wait_for(lambda: r.ticks >= ticks + 3)
        assert redraws == [0, 1]
    finally:
        r.stop()


def test_a_flood_is_coalesced_to_at_most_10_redraws_a_second() -> None:
    tl = wsnb.Timeline()
    redraws = [0]

    def redraw() -> None:
        redraws[0] += 1

    r = Refresher(background_loop(), lambda: tl.version, redraw)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            tl.record("sent", direction="out", id=1)

    t = threading.Thread(target=flood)
    start = time.monotonic()
    t.start()
    try:
        wait_for(lambda: time.monotonic() - start >= 1.0, timeout=3)
    finally:
        stop.set()
        t.join()
        r.stop()
    elapsed = time.monotonic() - start
    assert tl.version > 1000
    assert 3 <= redraws[0] <= 10 * elapsed + 2


def test_stop_is_final_and_thread_safe() -> None:
    r = Refresher(background_loop(), time.monotonic, lambda: None)
    wait_for(lambda: r.ticks >= 2)
    r.stop()
    r.stop()
    assert not r.running
    ticks = r.ticks
    time.sleep(0.35)  # not synchronisation: watch that no tick happens for 3 intervals
    assert r.ticks <= ticks + 1  # at most one already in flight


def test_closing_panels_stops_their_refreshers(dash: wsnb.Dashboard) -> None:
    refreshers = [p.refresher for p in dash.panels if p.refresher is not None]
    assert len(refreshers) == 3  # connection, send, timeline (chaos has nothing to poll)
    assert all(r.running for r in refreshers)
    dash.close()
    assert not any(r.running for r in refreshers)
    assert dash.connection_panel.comm is None and dash.timeline_panel.tabs.comm is None


def test_a_failing_redraw_shows_in_the_panel_and_on_the_timeline(dash: wsnb.Dashboard) -> None:
    panel = dash.timeline_panel

    def broken(tab: str) -> str:
        raise RuntimeError("boom")

    panel.render = broken  # type: ignore[method-assign]
    dash.client.timeline.record("chaos", detail="poke")
    wait_for(lambda: panel.error, what="error shown")
    assert panel.error == "redraw failed: RuntimeError: boom"
    assert "boom" in panel.error_label.value
    states = dash.client.timeline.states()
    assert (states["detail"] == "redraw failed: RuntimeError: boom").sum() == 1  # not per tick
