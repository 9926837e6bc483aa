"""Widget tests: real Server + FaultProxy + Client on loopback, on wsnb's loop thread.

The tests are sync, like a notebook cell: they click buttons, then poll a
condition with a bounded deadline (`wait_for`), never sleep to synchronise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from widget_helpers import FAST, run, wait_for

import wsnb


@pytest.fixture
def dash() -> Iterator[wsnb.Dashboard]:
    """`wsnb.demo()` with a fast backoff; shut down afterwards."""
    d = wsnb.demo(heartbeat_ms=1000, backoff=FAST)
    try:
        yield d
    finally:
        d.shutdown()


@pytest.fixture
def connected(dash: wsnb.Dashboard) -> wsnb.Dashboard:
    """The demo dashboard, connected and READY."""
    run(dash.client.connect(timeout=5))
    wait_for(lambda: dash.connection_panel.ready, what="panel shows READY")
    return dash
