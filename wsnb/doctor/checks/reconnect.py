"""The reconnect check: quick reconnects accepted, throttled or refused."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

from websockets.exceptions import ConnectionClosed

from wsnb.doctor.probe import (
    RECONNECTS,
    THROTTLE_CODES,
    _Ctx,
    _GreetFailed,
    _open,
    _OpenFailed,
    _shut,
)
from wsnb.doctor.report import (
    _ms,
    _secs,
)


async def _check_reconnect(ctx: _Ctx) -> None:
    c = "reconnect"
    times: list[float] = []
    outcome, detail, advice, value = "accepted", "", "", None
    for i in range(RECONNECTS):
        ctx.report_progress(c, i / RECONNECTS, f"reconnect {i + 1}/{RECONNECTS}")
        started = time.monotonic()
        try:
            conn = await _open(ctx)
        except _OpenFailed as fail:
            outcome = "throttled" if fail.throttled else "refused"
            detail = fail.text + (f" (Retry-After: {fail.retry_after})"
                                  if fail.retry_after else "")
            value, advice = fail.status, fail.advice
            break
        except _GreetFailed as fail:
            outcome = "throttled" if fail.code in THROTTLE_CODES else "refused"
            detail, value = fail.text, fail.code
            break
        ready = time.monotonic() - started  # to READY: open and greeting, nothing after
        try:
            if ctx.protocol == "plain":  # a server may accept, then close 1013 / 4429 at once
                if ctx.pings_answered is not False:
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        await asyncio.wait_for(await conn.ws.ping(), ctx.patient)
                else:  # the doctor's own wait: not part of the reconnect time
                    await conn.wait_close(min(ctx.quick, 0.3))
            if conn.closing:
                await conn.wait_close(ctx.patient)
                code = conn.close_code
                outcome = "throttled" if code in THROTTLE_CODES else "refused"
                detail, value = f"accepted, then closed: {conn.close_words()}", code
                break
            times.append(ready)
        finally:
            await _shut(ctx, conn)
    window = time.monotonic() - ctx.connects[0] if ctx.connects else 0.0
    ctx.facts.update(reconnects_accepted=len(times), reconnect_outcome=outcome)
    if outcome == "accepted":
        p50 = statistics.median(times)
        ctx.facts["reconnect_p50_ms"] = round(p50 * 1000, 2)
        ctx.add(c, "quick reconnects", f"{RECONNECTS}/{RECONNECTS} accepted back to back "
                f"(p50 {_ms(p50)} to READY)", len(times), "ok",
                "clients should still back off with jitter after a drop (wsnb.Backoff)")
        return
    where = (f"after {len(times)} quick reconnect{'s' if len(times) != 1 else ''} "
             f"({len(ctx.connects) - 1} earlier connections from the doctor within "
             f"{_secs(window)})")
    if outcome == "throttled":
        ctx.add(c, "quick reconnects", f"throttled {where}: {detail}", value, "warning",
                "clients reconnecting in a tight loop get locked out: reconnect with "
                "exponential backoff and full jitter (wsnb.Backoff(base=0.5, cap=30)) and "
                "honour Retry-After / the 4429 hint")
    else:
        ctx.add(c, "quick reconnects", f"refused {where}: {detail}", value, "error",
                advice or "the server refuses repeated connections: check its connection "
                "limits and logs")
