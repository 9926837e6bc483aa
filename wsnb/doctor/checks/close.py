"""The close check: is a normal close answered with a close frame."""

from __future__ import annotations

import asyncio
import contextlib
import time

from wsnb.client import describe_close
from wsnb.doctor.probe import (
    _Ctx,
    _GreetFailed,
    _open,
    _shut,
)
from wsnb.doctor.report import (
    _ms,
    _secs,
)


async def _check_close(ctx: _Ctx) -> None:
    c = "close"
    try:
        conn = await _open(ctx)
    except _GreetFailed:
        conn = await _open(ctx, greet=False)
    try:
        ctx.report_progress(c, 0.3, "closing with 1000")
        wait = ctx.patient
        conn.ws.close_timeout = wait
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.ws.close(1000, "wsnb doctor"), wait + 1)
        rcvd = conn.ws.protocol.close_rcvd
        # the round trip to the server's close frame; without one, to the end of the connection
        end = conn.ws.close_rcvd_at if rcvd is not None else None
        took = (end if end is not None else time.monotonic()) - started
        ctx.facts.update(close_ms=round(took * 1000, 2),
                         close_code_back=rcvd.code if rcvd is not None else None)
        if rcvd is not None and rcvd.code == 1000:
            ctx.add(c, "close handshake", f"close frame 1000 echoed in {_ms(took)}", 1000, "ok")
        elif rcvd is not None:
            ctx.add(c, "close handshake", f"answered 1000 with "
                    f"{describe_close(rcvd.code, rcvd.reason)} in {_ms(took)}", rcvd.code,
                    "warning",
                    "RFC 6455: echo the close code received (1000 for a normal closure)")
        elif took < wait * 0.9:
            ctx.add(c, "close handshake", f"no close frame: the server dropped TCP after "
                    f"{_ms(took)}", 1006, "warning",
                    "clients see 1006 (abnormal closure) and cannot tell a clean close from a "
                    "crash, so they reconnect: answer the close frame before closing TCP (a "
                    "proxy that kills upgraded connections causes this too)")
        else:
            ctx.add(c, "close handshake", f"no answer to the close frame within {_secs(wait)}",
                    None, "warning",
                    "the server ignores close frames: clients hang in CLOSING until their "
                    "close timeout")
    finally:
        await _shut(ctx, conn)
