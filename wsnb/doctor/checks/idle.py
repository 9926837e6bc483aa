"""The idle check: how long a connection that sends nothing survives."""

from __future__ import annotations

import time

from wsnb.client import describe_close
from wsnb.doctor.checks.liveness import _watched
from wsnb.doctor.probe import (
    _Ctx,
    _open,
    _shut,
)
from wsnb.doctor.report import (
    _secs,
)


async def _check_idle(ctx: _Ctx) -> None:
    c = "idle"
    conn = await _open(ctx)
    try:
        start = time.monotonic()
        end = start + ctx.budget_s
        while not conn.closed and time.monotonic() < end:
            left = end - time.monotonic()
            ctx.report_progress(c, (time.monotonic() - start) / ctx.budget_s,
                                f"idle for {time.monotonic() - start:.0f} s")
            await conn.wait_closed(min(left, 0.25))
        _watched(ctx, "idle connection", conn)
        beats = len(conn.app_heartbeats) + len(conn.ws.server_pings)
        data = conn.received - len(conn.app_heartbeats)
        kept = "".join([f"; {beats} server heartbeats came meanwhile" if beats else "",
                        f"; the server sent {data} messages meanwhile" if data else ""])
        if conn.closed:
            assert conn.closed_at is not None
            cut = conn.ws.close_rcvd_at  # the server's close frame, else the end of TCP
            lived = (cut if cut is not None else conn.closed_at) - start
            rcvd = conn.ws.protocol.close_rcvd
            code = rcvd.code if rcvd is not None else 1006
            ctx.facts.update(idle_timeout_s=round(lived, 3), idle_close_code=code)
            every = max(lived / 2, 0.05)
            how = (f"with {describe_close(code, rcvd.reason)}" if rcvd is not None else
                   "by dropping TCP without a close frame (1006, typical of proxies, NATs and "
                   "load balancers)")
            ctx.add(c, "idle timeout", f"an idle connection was closed after {_secs(lived)} "
                    f"{how}{kept}", round(lived, 3), "warning",
                    f"send a heartbeat more often than every {_secs(lived)}, e.g. every "
                    f"{_secs(every)}: websockets.connect(..., ping_interval={every:.3g}), an "
                    f"application ping, or the server's heartbeat_ms={int(every * 1000)}; if "
                    "the server's own idle timer counts only messages, send application "
                    "messages, not WebSocket pings")
        else:
            lived = time.monotonic() - start
            ctx.facts.update(idle_timeout_s=None, idle_survived_s=round(lived, 3))
            ctx.add(c, "idle timeout", f"an idle connection was still open after "
                    f"{_secs(lived)} (the budget){kept}", round(lived, 3), "ok",
                    "" if ctx.budget_s >= 60 else
                    "proxies often cut idle connections at 60 s: run with budget_s=90 to "
                    "look further")
    finally:
        await _shut(ctx, conn)
