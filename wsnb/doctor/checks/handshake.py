"""The handshake check: the HTTP upgrade, its headers and TLS."""

from __future__ import annotations

import contextlib
import ssl as ssl_module
import time
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection

from wsnb.doctor.probe import (
    KNOWN_SUBPROTOCOLS,
    _Conn,
    _Ctx,
    _open,
    _OpenFailed,
    _shut,
)
from wsnb.doctor.report import (
    _ms,
)


async def _check_handshake(ctx: _Ctx) -> None:
    c = "handshake"
    ctx.report_progress(c, 0.1, "opening")
    conn: _Conn | None = None
    retried = False
    try:
        conn = await _open(ctx, greet=False, compression="deflate")
    except _OpenFailed as fail:
        if fail.status == 400 and not ctx.subprotocols:
            # maybe it insists on a subprotocol (websockets answers 400 when none is offered)
            with contextlib.suppress(_OpenFailed):
                conn = await _open(ctx, greet=False, compression="deflate",
                                   subprotocols=KNOWN_SUBPROTOCOLS)
                retried = True
        if conn is None:
            ctx.fatal = fail.text
            ctx.facts["status"] = fail.status
            ctx.add(c, "connect", fail.text, fail.status, "error", fail.advice)
            return
    try:
        ws = conn.ws
        response = ws.response
        assert response is not None
        ctx.open_s = conn.open_s
        headers = response.headers
        ctx.facts.update(status=response.status_code, open_ms=conn.open_s * 1000,
                         server=headers.get("Server"), subprotocol=ws.subprotocol,
                         extensions=headers.get("Sec-WebSocket-Extensions"))
        ctx.add(c, "connect", f"HTTP {response.status_code} {response.reason_phrase}",
                response.status_code, "ok")
        ctx.add(c, "upgrade headers",
                f"Upgrade: {headers.get('Upgrade')}, Connection: {headers.get('Connection')}",
                headers.get("Upgrade"), "ok")
        if retried:
            ctx.subprotocols = [ws.subprotocol] if ws.subprotocol else []
            ctx.sub_required = bool(ws.subprotocol)
            ctx.add(c, "subprotocol",
                    f"required: HTTP 400 without one, accepted {ws.subprotocol!r}",
                    ws.subprotocol, "info",
                    f"clients must offer subprotocols=[{ws.subprotocol!r}]")
        elif ws.subprotocol:
            ctx.add(c, "subprotocol", f"negotiated {ws.subprotocol!r}", ws.subprotocol, "info")
        else:
            offered = ", ".join(ctx.subprotocols) or "none offered"
            ctx.add(c, "subprotocol", f"none negotiated ({offered})", None, "info")
        ext = headers.get("Sec-WebSocket-Extensions")
        if ext:
            params = "; ".join(p.strip() for p in ext.split(";")[1:]) or "default parameters"
            ctx.add(c, "compression", f"permessage-deflate negotiated ({params})"
                    if ext.startswith("permessage-deflate") else f"extensions: {ext}", ext, "info",
                    "" if "no_context_takeover" in ext else
                    "context takeover costs the server memory per connection (up to 64 KiB"
                    " each way)")
        else:
            ctx.add(c, "compression", "no compression (permessage-deflate not negotiated)",
                    None, "info", "fine for small messages; large JSON would shrink a lot")
        server = headers.get("Server")
        ctx.add(c, "server header", server or "no Server header", server, "info")
        slow = conn.open_s > 1.0
        ctx.add(c, "time to open", f"opened in {_ms(conn.open_s)}", round(conn.open_s * 1000, 2),
                "warning" if slow else "ok",
                "slow handshake: check DNS, TLS session reuse, proxies and server load"
                if slow else "")
        if ctx.url.lower().startswith("wss:"):
            _tls_rows(ctx, ws)
    finally:
        await _shut(ctx, conn)


def _cert_from_der(der: bytes) -> dict[str, Any] | None:
    try:  # cryptography is optional: only needed when verification was switched off
        from cryptography import x509
    except ImportError:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        return {"subject": cert.subject.rfc4514_string() + " (not verified)",
                "not_after": cert.not_valid_after_utc.timestamp()}
    except Exception:  # an unparsable certificate is reported as unavailable
        return None


def _tls_rows(ctx: _Ctx, ws: ClientConnection) -> None:
    c = "handshake"
    sslobj = ws.transport.get_extra_info("ssl_object")
    if sslobj is None:
        return
    version = sslobj.version()
    ctx.facts["tls_version"] = version
    old = version in ("SSLv3", "TLSv1", "TLSv1.1")
    ctx.add(c, "TLS version", f"{version}", version, "warning" if old else "ok",
            "TLS 1.0/1.1 are deprecated: enable TLS 1.2 or 1.3" if old else "")
    info: dict[str, Any] | None = None
    peer = sslobj.getpeercert()
    if peer:
        subject = ", ".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
        names = ", ".join(v for _, v in peer.get("subjectAltName", ()))
        info = {"subject": subject + (f" (SAN {names})" if names else ""),
                "not_after": ssl_module.cert_time_to_seconds(peer["notAfter"])}
    else:
        der = sslobj.getpeercert(binary_form=True)
        info = _cert_from_der(der) if der else None
    if info is None:
        ctx.add(c, "certificate", "not verified, details unavailable", None, "info",
                "verification is off for this connection")
        return
    days = (info["not_after"] - time.time()) / 86400
    expiry = datetime.fromtimestamp(info["not_after"], UTC).strftime("%Y-%m-%d")
    ctx.facts.update(cert_subject=info["subject"], cert_not_after=expiry,
                     cert_days_left=round(days, 1))
    ctx.add(c, "certificate", info["subject"] or "(empty subject)", info["subject"], "ok")
    if days < 0:
        sev, advice = "error", "the certificate has expired: renew it"
    elif days < 14:
        sev, advice = "warning", "renew the certificate soon (automate it, e.g. ACME)"
    else:
        sev, advice = "ok", ""
    ctx.add(c, "certificate expiry", f"expires {expiry} ({days:.0f} days left)",
            round(days, 1), sev, advice)
