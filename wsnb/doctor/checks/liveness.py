"""The liveness check: WebSocket pings, application pings and server heartbeats."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence

from websockets.exceptions import ConnectionClosed

from wsnb._format import percentile
from wsnb.doctor.probe import (
    PINGS,
    _Conn,
    _Ctx,
    _expect,
    _GreetFailed,
    _json,
    _open,
    _shut,
)
from wsnb.doctor.report import (
    _clamp,
    _ms,
    _secs,
)


async def _check_liveness(ctx: _Ctx) -> None:
    c = "liveness"
    conn = await _open(ctx)
    try:
        rtts: list[float] = []
        failure = ""
        for i in range(PINGS):
            ctx.report_progress(c, 0.6 * i / PINGS, f"ping {i + 1}/{PINGS}")
            try:
                waiter = await conn.ws.ping()
                rtts.append(await asyncio.wait_for(waiter, ctx.patient) * 1000)
            except TimeoutError:
                failure = f"no pong within {ctx.patient:.1f} s"
                break
            except ConnectionClosed:
                failure = f"the connection closed ({conn.close_words()})"
                break
        ctx.pings_answered = bool(rtts)
        ctx.facts["pings_answered"] = len(rtts)
        if rtts:
            p50, p99 = statistics.median(rtts), percentile(rtts, 99)
            ctx.facts.update(ping_p50_ms=round(p50, 3), ping_p99_ms=round(p99, 3))
            slow = p99 > 500
            text = (f"{len(rtts)}/{PINGS} answered, p50 {_ms(p50 / 1000)}, "
                    f"p99 {_ms(p99 / 1000)}")
            if failure:
                ctx.add(c, "WebSocket pings", f"{text}; then {failure}", round(p50, 3),
                        "warning", "pongs stopped coming: the server or a proxy stalls")
            else:
                ctx.add(c, "WebSocket pings", text, round(p50, 3),
                        "warning" if slow else "ok",
                        "slow pongs: the server's event loop or a proxy is congested"
                        if slow else "")
        else:
            ctx.add(c, "WebSocket pings", f"not answered: {failure}", None, "error",
                    "RFC 6455 requires a pong for every ping: clients with keepalive "
                    "(websockets' ping_interval=20, ping_timeout=20) will drop this server "
                    "every ~40 s; fix the server or proxy, or rely on application "
                    "heartbeats and switch the client keepalive off (ping_interval=None)")
        await _app_ping(ctx, conn)
        watch = _clamp(ctx.budget_s / 10, 0.5, 5.0)
        ctx.report_progress(c, 0.7, f"watching {watch:.1f} s for server heartbeats")
        await conn.wait_closed(watch - (time.monotonic() - conn.opened))
        _watched(ctx, "liveness connection", conn)
    finally:
        await _shut(ctx, conn)


async def _app_ping(ctx: _Ctx, conn: _Conn) -> None:
    """The protocol's own ping, where the client may send one."""
    if conn.protocol == "wsnb":
        ping, kind, name = json.dumps({"type": "ping", "ts": int(time.time() * 1000)}), \
            "pong", "wsnb ping"
    elif conn.protocol == "graphql-transport-ws":
        ping, kind, name = '{"type":"ping"}', "pong", "graphql-ws ping"
    else:
        return
    started = time.monotonic()
    try:
        await conn.ws.send(ping)
        await _expect(conn, ctx.patient, kind,
                      lambda m: isinstance(_json(m), dict) and _json(m).get("type") == kind)
    except (_GreetFailed, ConnectionClosed) as exc:
        ctx.add("liveness", name, f"not answered ({exc})", None, "warning",
                "clients measure round-trip time and detect dead links with these pongs")
        return
    rtt = (time.monotonic() - started) * 1000
    ctx.facts["app_ping_ms"] = round(rtt, 3)
    ctx.add("liveness", name, f"answered in {_ms(rtt / 1000)}", round(rtt, 3), "ok")


def _watched(ctx: _Ctx, where: str, conn: _Conn) -> None:
    end = conn.closed_at if conn.closed_at is not None else time.monotonic()
    ctx.watched.append((where, end - conn.opened,
                        [t - conn.opened for t in conn.ws.server_pings],
                        [t - conn.opened for t in conn.app_heartbeats]))


def _interval(offsets: Sequence[float]) -> float:
    if len(offsets) >= 2:
        return statistics.median(b - a for a, b in zip(offsets, offsets[1:], strict=False))
    return offsets[0]


def _heartbeat_rows(ctx: _Ctx) -> None:
    """Server pings and heartbeats seen on the connections watched longest."""
    c = "liveness"
    if not ctx.watched:
        return
    longest = max(w[1] for w in ctx.watched)
    idle_timeout = ctx.facts.get("idle_timeout_s")
    seen = False
    for kind, index, words in (("WebSocket pings", 2, "sends WebSocket pings"),
                               ("application heartbeats", 3, "sends application heartbeats")):
        runs = [w for w in ctx.watched if w[index]]
        if not runs:
            continue
        seen = True
        longest_run = max(runs, key=lambda w: w[1])
        window, offsets = longest_run[1], longest_run[index]
        every = _interval(offsets)
        key = "server_ping_interval_s" if index == 2 else "app_heartbeat_interval_s"
        ctx.facts[key] = round(every, 3)
        approx = "every ~" if len(offsets) >= 2 else "first after "
        text = f"server {words} {approx}{_secs(every)} ({len(offsets)} in {_secs(window)})"
        if idle_timeout is not None and every >= idle_timeout:
            ctx.add(c, f"server {kind}", text, round(every, 3), "warning",
                    f"slower than the idle timeout ({_secs(idle_timeout)}): they cannot keep "
                    f"idle connections alive; ping more often than every {_secs(idle_timeout)}")
        else:
            ctx.add(c, f"server {kind}", text, round(every, 3), "ok")
    if not seen:
        ctx.add(c, "server heartbeats", f"none seen in {_secs(longest)}", None, "info",
                "without its own pings a server notices dead clients only when TCP gives up "
                "(minutes to hours); clients should send heartbeats (wsnb.Client does). A "
                "larger budget looks for slower ones")
