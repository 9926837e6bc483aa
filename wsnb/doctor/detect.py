"""Which application protocol (dialect) a server speaks; echo servers are found first."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from wsnb._format import fmt_bytes
from wsnb.doctor.probe import (
    ECHO_PROTOCOL,
    KNOWN_SUBPROTOCOLS,
    SIGNALR_HANDSHAKE,
    WSNB_ERROR_CODES,
    _Conn,
    _Ctx,
    _greet,
    _GreetFailed,
    _json,
    _open,
    _OpenFailed,
    _send,
    _shut,
)
from wsnb.doctor.report import (
    _secs,
    _short,
)

#: Where the echo test's nonce starts; the rest is random, so only an echo can send it back.
ECHO_NONCE_PREFIX = "wsnb-doctor echo probe "
#: graphql-ws servers refuse a connection_init with close codes 4400-4499 (4400 bad, 4403
#: auth, 4429 too many inits) or a connection_error message: evidence it speaks graphql.
_GRAPHQL_REPLIES = ("connection_ack", "connection_error")


async def _echoes(ctx: _Ctx, conn: _Conn) -> bool:
    """Send a unique nonce and see whether it comes back verbatim (other messages skipped)."""
    nonce = ECHO_NONCE_PREFIX + secrets.token_hex(8)
    if not await _send(conn, nonce):
        return False
    deadline = time.monotonic() + 2 * ctx.quick
    while (left := deadline - time.monotonic()) > 0:
        msg = await conn.recv(left)
        if msg is None:
            return False
        if msg == nonce:
            return True
    return False


def _graphql_words(fail: _GreetFailed) -> bool:
    """Did the server refuse connection_init the way graphql servers do?"""
    if fail.code is not None and 4400 <= fail.code < 4500:
        return True
    data = _json(fail.reply) if fail.reply is not None else None
    return isinstance(data, dict) and data.get("type") in _GRAPHQL_REPLIES


async def _try_graphql(ctx: _Ctx, conn: _Conn, sub: str, decisive: bool,
                       add: Callable[..., None]) -> bool:
    """Greet graphql on `conn` (which negotiated `sub`); True when the protocol is settled.

    A server that merely accepted a subprotocol the doctor offered is no
    evidence (Node's `ws` accepts the first one offered): unless the
    subprotocol was required or asked for, only a graphql-shaped answer counts.
    """
    conn.protocol = sub
    try:
        await _greet(ctx, conn)
    except _GreetFailed as fail:
        if not (decisive or _graphql_words(fail)):
            return False
        ctx.protocol = sub
        ctx.subprotocols = [sub]
        ctx.facts["protocol"] = sub
        add("speaks", f"graphql over WebSocket ({sub}), but {fail.text}", sub,
            "warning", "the server negotiated the subprotocol but did not ack "
            "connection_init: check the connection_init payload (auth)")
        return True
    if conn.echoed:
        return False
    ctx.protocol = sub
    ctx.subprotocols = [sub]
    ctx.facts["protocol"] = sub
    add("speaks", f"graphql over WebSocket ({sub}): connection_ack received", sub,
        "info", "use a graphql-ws client; plain frames must follow its message types")
    return True


async def _check_protocol(ctx: _Ctx, report: bool) -> None:
    """Find the application protocol; later checks greet the server accordingly.

    Order: listen (Engine.IO speaks first), then the echo test (a unique nonce
    sent back verbatim), and only for servers that do not echo: wsnb's
    handshake, graphql (when a graphql subprotocol is taken), SignalR. No
    protocol is inferred from a server that echoes what it was sent.
    """
    c = "protocol"

    def add(*args: Any, **kwargs: Any) -> None:
        if report:
            ctx.add(c, *args, **kwargs)

    ctx.report_progress(c, 0.05, "listening for a greeting")
    # 1. Listen first (Engine.IO speaks first), then see whether the server echoes.
    try:
        conn = await _open(ctx, greet=False, protocol="plain")
    except _OpenFailed as fail:
        add("probe", f"could not open a probe connection: {fail.text}", None, "skipped")
        return
    try:
        sub = conn.ws.subprotocol
        if sub in KNOWN_SUBPROTOCOLS and await _try_graphql(ctx, conn, sub, True, add):
            return  # asked for (subprotocols=) or required by the server: graphql it is
        first = await conn.recv(ctx.quick)
        if isinstance(first, str) and first.startswith("0{"):
            opened = _json(first[1:]) or {}
            ctx.facts.update(engineio_ping_interval_ms=opened.get("pingInterval"),
                             engineio_max_payload=opened.get("maxPayload"))
            await _send(conn, "40")
            reply = await conn.recv(ctx.quick)
            sio = isinstance(reply, str) and reply[:2] in ("40", "44")
            ctx.protocol = "socket.io" if sio else "engine.io"
            ctx.facts["protocol"] = ctx.protocol
            add("speaks",
                f"{'Socket.IO' if sio else 'Engine.IO'} (open packet {_short(first, 60)})",
                ctx.protocol, "info",
                "use a Socket.IO client (python-socketio, socket.io-client): raw frames are "
                "Engine.IO packets and the client must answer the server's '2' pings with '3'")
            return
        if first is not None:
            ctx.facts["greeting"] = _short(first)
            add("greeting", f"the server speaks first: {_short(first)}", _short(first), "info")
        elif conn.closed:
            lived = (conn.closed_at or conn.opened) - conn.opened
            add("greeting", f"closed a silent connection after {_secs(lived)} "
                f"({conn.close_words()})", conn.ws.close_code, "info")
        ctx.report_progress(c, 0.25, "checking for an echo")
        echo = not conn.closed and await _echoes(ctx, conn)
    finally:
        await _shut(ctx, conn)
    if echo:
        ctx.echo = True
        ctx.protocol = "plain"
        ctx.facts.update(protocol=ECHO_PROTOCOL, echo=True)
        add("speaks", "echo/raw: it sends back what it gets, verbatim (no application "
            "protocol; none was tried)", ECHO_PROTOCOL, "info",
            "wsnb.Client(url, protocol='raw') talks to it; delivery guarantees then rest on "
            "your own acks")
        return

    # 2. wsnb's handshake.
    ctx.report_progress(c, 0.4, "trying wsnb's handshake")
    hello = ctx.hello()
    try:
        conn = await _open(ctx, greet=False, protocol="plain")
    except _OpenFailed as fail:
        add("probe", f"could not open a probe connection: {fail.text}", None, "skipped")
        return
    try:
        await _send(conn, hello)
        reply = await conn.recv(ctx.quick * 2)
        data = _json(reply) if reply is not None else None
        code = conn.close_code if conn.closing else None
        if isinstance(data, dict) and data.get("type") == "handshake_ack":
            ctx.protocol = "wsnb"
            ctx.facts.update(protocol="wsnb", wsnb_heartbeat_ms=data.get("heartbeat_ms"),
                             wsnb_max_size=data.get("max_size"))
            add("speaks", f"wsnb protocol v{data.get('v')} (handshake_ack: heartbeat "
                f"{data.get('heartbeat_ms')} ms, max_size {fmt_bytes(data.get('max_size'))})",
                "wsnb", "ok")
            return
        if reply != hello and (code == 4401 or (
                isinstance(data, dict) and data.get("type") == "error"
                and data.get("code") in WSNB_ERROR_CODES)):
            ctx.protocol = "wsnb"
            ctx.facts["protocol"] = "wsnb"
            why = conn.close_words() if code else f"error frame {_short(reply or '')}"
            ctx.greet_error = f"the wsnb handshake was refused ({why})"
            add("speaks", f"wsnb protocol, but the handshake was refused: {why}", "wsnb",
                "error", "pass the right token= (a wsnb server closes with 4401 on a bad token)")
            return
    finally:
        await _shut(ctx, conn)

    # 3. graphql, if the server takes one of its subprotocols; else SignalR's handshake.
    ctx.report_progress(c, 0.7, "trying graphql and SignalR")
    offered = list(ctx.subprotocols) + [p for p in KNOWN_SUBPROTOCOLS
                                         if p not in ctx.subprotocols]
    try:
        conn = await _open(ctx, greet=False, subprotocols=offered, protocol="plain")
        sub = conn.ws.subprotocol
        if sub in KNOWN_SUBPROTOCOLS and sub not in ctx.subprotocols:
            try:
                if await _try_graphql(ctx, conn, sub, False, add):
                    return
            finally:
                await _shut(ctx, conn)
            conn = await _open(ctx, greet=False, protocol="plain")  # a fresh one for SignalR
    except _OpenFailed as fail:
        add("probe", f"could not open a probe connection: {fail.text}", None, "skipped")
        return
    try:
        await _send(conn, SIGNALR_HANDSHAKE)
        reply = await conn.recv(ctx.quick)
        if isinstance(reply, str) and reply.endswith("\x1e") and reply != SIGNALR_HANDSHAKE:
            ctx.protocol = "signalr"
            ctx.facts["protocol"] = "signalr"
            error = (_json(reply) or {}).get("error")
            if error:
                add("speaks", f"SignalR, but its handshake failed: {error}", "signalr",
                    "warning", "check the hub protocol and version the server expects")
            else:
                add("speaks", "SignalR (JSON hub protocol v1 handshake answered)",
                    "signalr", "info", "use a SignalR client; messages end with \\x1e")
            return
    finally:
        await _shut(ctx, conn)

    ctx.protocol = "plain"
    ctx.facts.update(protocol="plain", echo=False)
    add("speaks", "plain frames: no known application protocol answered", "plain", "info",
        "wsnb.Client(url, protocol='raw') talks to it; delivery guarantees then rest on your "
        "own acks")
