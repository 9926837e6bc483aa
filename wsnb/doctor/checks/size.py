"""The size check: the largest message the server accepts and how it refuses more."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from wsnb._format import fmt_bytes
from wsnb.doctor.probe import (
    DEFAULT_CAP,
    _Conn,
    _Ctx,
    _GreetFailed,
    _open,
    _OpenFailed,
    _shut,
)
from wsnb.doctor.report import _clamp


def _probe_text(protocol: str, n: int) -> str:
    """A harmless message of exactly `n` UTF-8 bytes that the protocol ignores or answers."""
    if protocol in ("engine.io", "socket.io"):
        head, tail = "6", ""  # an Engine.IO noop packet
    elif protocol == "signalr":
        head, tail = '{"type":6,"pad":"', '"}\x1e'  # a ping with padding
    elif protocol == "graphql-transport-ws":
        head, tail = '{"type":"ping","payload":{"pad":"', '"}}'
    else:  # wsnb answers an unknown type with an error frame; plain servers get JSON
        head, tail = '{"type":"wsnb_doctor_probe","pad":"', '"}'
    return head + "x" * max(0, n - len(head) - len(tail)) + tail


def _roundest(lo: int, hi: int) -> int | None:
    """The roundest number strictly between `lo` and `hi` (1 MB before 1 MiB before 100 kB ...)."""
    for step in (10**6, 1 << 20, 10**5, 1 << 16, 10**4, 1 << 12, 1000, 1024, 100):
        x = (lo // step + 1) * step
        if lo < x < hi:
            return x
    return None


def _probe_floor(protocol: str) -> int:
    return len(_probe_text(protocol, 0))


async def _check_size(ctx: _Ctx) -> None:
    c = "size"
    cap = ctx.cap
    floor = _probe_floor(ctx.protocol)
    started = time.monotonic()
    time_cap = _clamp(ctx.budget_s, 10.0, 30.0)
    byte_budget = 8 * cap + (1 << 20)
    state: dict[str, Any] = {"conn": None, "sent": 0, "probes": 0, "code": None,
                             "close": "", "stop": "", "confirmed": 0, "last": None,
                             "late": 0}

    async def probe(n: int) -> bool | None:
        """True accepted, False refused (connection closed), None inconclusive."""
        conn: _Conn | None = state["conn"]
        if conn is not None and conn.closing and state["last"] is conn:
            state["late"] += 1  # closed after a message was accepted: maybe that message
        if conn is None or conn.closing:
            if conn is not None:
                await _shut(ctx, conn)
            try:
                conn = state["conn"] = await _open(ctx)
            except (_OpenFailed, _GreetFailed) as exc:
                state["stop"] = f"could not reconnect: {exc}"
                return None
        state["sent"] += n
        state["probes"] += 1
        text = _probe_text(ctx.protocol, n)
        confirm = ctx.patient + n / (1 << 20)  # slow links need time to carry the bytes
        conn.inbox.clear()  # a reply now must be to this probe
        try:
            await conn.ws.send(text)
            if ctx.pings_answered is not False:
                waiter = await conn.ws.ping()
                closing = asyncio.ensure_future(conn.wait_close(confirm))
                done, _ = await asyncio.wait([waiter, closing], timeout=confirm,
                                             return_when=asyncio.FIRST_COMPLETED)
                closing.cancel()
                # the pong says the WebSocket layer read the message; an application that
                # refuses it closes just after: give it a moment (50 ms + 2 RTT)
                pong = waiter in done and not waiter.exception()
                if pong and not await conn.wait_close(min(0.5, 0.05 + 2 * waiter.result())):
                    state["confirmed"], state["last"] = n, conn
                    return True
                if not conn.closing and not await conn.wait_close(0.05):
                    if ctx.pings_answered is None:  # liveness did not run: it ignores pings
                        ctx.pings_answered = False
                        state["last"] = conn
                        return True  # and it did not close within `confirm` either
                    state["stop"] = f"no pong and no close within {confirm:.1f} s"
                    return None
            else:  # no pongs: a reply (echo, error frame) or a quiet while counts as accepted
                if await conn.recv(ctx.quick) is not None:
                    await conn.wait_close(0.05)  # some servers answer, then close
                    state["confirmed"] = n
                if not conn.closing:
                    state["last"] = conn
                    return True
        except ConnectionClosed:
            pass
        # the close frame (or the end of the connection), not a race between the two: a
        # reset that follows a close frame still reports the close frame's code
        await conn.wait_close(ctx.patient)
        state["code"] = conn.close_code
        state["close"] = conn.close_words()
        state["last"] = None  # this close is this probe's
        return False

    def budget_left() -> bool:
        if state["probes"] >= 48 or state["sent"] > byte_budget:
            state["stop"] = state["stop"] or "probe budget used up"
        elif time.monotonic() - started > time_cap:
            state["stop"] = state["stop"] or f"time cap ({time_cap:.0f} s) reached"
        return not state["stop"]

    accepted, refused = 0, None
    n = min(max(256, floor), cap)
    try:
        while budget_left():  # ramp: double until refused or the cap
            ctx.report_progress(c, 0.6 * math.log2(max(n, 2)) / math.log2(max(cap, 4)),
                                f"sending {fmt_bytes(n)}")
            ok = await probe(n)
            if ok is None:
                break
            if not ok:
                refused = n
                break
            accepted = n
            if n >= cap:
                break
            n = min(2 * n, cap)
        if refused is not None:  # bisect; a round limit is usually exact, so try it first
            lo, hi = accepted, refused
            if accepted and budget_left():
                ok = await probe(accepted + 1)
                if ok is False:
                    hi = accepted + 1
                elif ok:
                    lo = accepted + 1
            while hi - lo > max(1, lo // 512) and budget_left():
                mid = max((lo + hi) // 2, floor)
                if mid >= hi:
                    break  # the limit is below the smallest message we can send
                ctx.report_progress(c, 0.6 + 0.4 * (1 - (hi - lo) / max(refused, 1)),
                                    f"bisecting at {fmt_bytes(mid)}")
                ok = await probe(mid)
                if ok is None:
                    break
                if ok:
                    lo = mid
                else:
                    hi = mid
            # limits are usually round numbers: try the roundest one left, and the advertised one
            advertised = ctx.facts.get("wsnb_max_size") or ctx.facts.get("engineio_max_payload")
            for x in (advertised, _roundest(lo, hi)):
                if not (isinstance(x, int) and lo < x < hi) or not budget_left():
                    continue
                ok = await probe(x)
                if ok is False:
                    hi = x
                elif ok:
                    lo = x
                    if x + 1 < hi and budget_left():
                        ok = await probe(x + 1)
                        if ok is False:
                            hi = x + 1
                        elif ok:
                            lo = x + 1
            # "at most N" limits refuse a round N itself (aiohttp's max_msg_size): try N - 1
            if hi - 1 > lo and (hi % 1024 == 0 or hi % 1000 == 0) and budget_left():
                ok = await probe(hi - 1)
                if ok is False:
                    hi -= 1
                elif ok:
                    lo = hi - 1
            accepted, refused = lo, hi
    finally:
        if state["conn"] is not None:
            await _shut(ctx, state["conn"])

    ctx.facts.update(size_probes=state["probes"], size_bytes_sent=state["sent"],
                     size_late_closes=state["late"])
    if state["late"]:
        ctx.add(c, "late closes", f"{state['late']} connection(s) closed soon after an accepted "
                "message", state["late"], "warning",
                "the application may refuse messages the WebSocket layer accepted, or close "
                "connections for other reasons: check the server's logs")
    if refused is None and accepted >= cap and state["confirmed"] < accepted:
        ctx.facts.update(max_message_bytes=None, max_message_accepted_bytes=None)
        ctx.add(c, "max text message", f"no refusal up to the cap ({fmt_bytes(cap)}), but "
                f"unconfirmed: the server neither answered pings nor replied", None, "info",
                "the server may not be reading at all")
    elif refused is None and accepted >= cap:
        ctx.facts.update(max_message_bytes=None, max_message_accepted_bytes=accepted)
        ctx.add(c, "max text message", f"every size up to the cap ({fmt_bytes(cap)}) was "
                f"accepted", accepted, "ok",
                "" if cap >= DEFAULT_CAP else "raise max_size_cap to look for a larger limit")
    elif refused is None:
        ctx.facts.update(max_message_bytes=None, max_message_accepted_bytes=accepted)
        ctx.add(c, "max text message", f"inconclusive after {fmt_bytes(accepted)} accepted: "
                f"{state['stop']}", accepted or None, "skipped")
    else:
        code = state["code"]
        ctx.facts.update(max_message_bytes=accepted, max_message_refused_bytes=refused,
                         size_close_code=code)
        exact = refused - accepted <= 1
        found = (f"largest accepted {fmt_bytes(accepted)}"
                 + ("" if exact else f" (the limit is below {fmt_bytes(refused)})")
                 + f"; {fmt_bytes(refused)} was refused: {state['close']}")
        problems = []
        if code != 1009:
            problems.append(f"it refuses an oversized message with {state['close']}, not 1009"
                            " (message too big): clients cannot tell why they were cut off")
        if accepted < 64 * 1024:
            problems.append("a small limit: a few hundred table rows of JSON exceed it")
        said = "; ".join(problems)
        advice = (said[:1].upper() + said[1:] + ". " if problems else "") + (
            f"Keep messages under {fmt_bytes(accepted)}: split large payloads (wsnb.Client "
            f"chunks them: chunk_size=) or raise the server's limit (websockets max_size, "
            f"ws maxPayload, Socket.IO maxHttpBufferSize)")
        ctx.add(c, "max text message", found, accepted,
                "warning" if problems else "info", advice)
        advertised = ctx.facts.get("wsnb_max_size")
        if isinstance(advertised, int) and abs(advertised - accepted) > max(1, accepted // 256):
            ctx.add(c, "advertised max_size", f"handshake_ack says {fmt_bytes(advertised)}, "
                    f"measured {fmt_bytes(accepted)}", advertised, "warning",
                    "the advertised max_size is wrong: a proxy in front may enforce its own")
