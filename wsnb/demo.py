"""`demo()`: an embedded Server, a FaultProxy in front of it and a Client, with a Dashboard.

Everything lives on wsnb's event-loop thread, so `demo()` is plain sync code
that works in a script and inside a running notebook cell alike.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from wsnb.client import Client
from wsnb.loop import background_loop
from wsnb.protocol.backoff import Backoff
from wsnb.proxy import FaultProxy
from wsnb.server import Server
from wsnb.timeline import Timeline

if TYPE_CHECKING:
    from wsnb.widgets.dashboard import Dashboard

#: The demo's reconnect timing: 0.5 s, 1 s, 2 s, ... up to 5 s, no jitter, so the
#: CLOSED/CONNECTING phase after a cut is long enough to watch.
DEMO_BACKOFF = Backoff(base=0.5, cap=5.0, jitter=False)


def demo(connect: bool = False, *, token: str = "demo", heartbeat_ms: int = 1000,
         backoff: Backoff = DEMO_BACKOFF, timeout: float = 10.0) -> Dashboard:
    """Start a loopback Server(token, heartbeat_ms), a FaultProxy and a Client; return a Dashboard.

    The client goes through the proxy (so the chaos buttons can break the
    link) and is not connected unless ``connect=True``: click Connect, or
    ``await dash.client.connect()``. The dashboard has ``.client``,
    ``.server`` and ``.proxy``; ``dash.shutdown()`` stops all three.
    """
    from wsnb.widgets.dashboard import Dashboard  # ipywidgets only when a dashboard is made

    loop = background_loop()
    try:
        on_loop = asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        on_loop = False
    if on_loop:
        raise RuntimeError("demo() blocks: call it from sync code or a cell, not the wsnb loop")

    def wait(coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)  # type: ignore[arg-type]

    timeline = Timeline()
    server = Server(token=token, heartbeat_ms=heartbeat_ms, loop=loop)
    wait(server.start())
    proxy = FaultProxy(server.url, loop=loop, timeline=timeline)
    wait(proxy.start())
    client = Client(proxy.url, token=token, backoff=backoff, timeline=timeline, loop=loop,
                    name="client")
    dash = Dashboard(client, server=server, proxy=proxy)
    if connect:
        wait(client.connect(timeout=timeout))
    return dash
