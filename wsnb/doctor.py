"""`wsnb.doctor`: point it at any WebSocket server and learn how it will fail your clients.

Owns the checks (handshake, protocol, liveness, idle, size, close, reconnect),
the `Report` they produce, and ``wsnb doctor URL`` (`cli_main`). The doctor
uses bare ``websockets`` connections, so it works against any server, whether
or not it speaks wsnb's protocol. Each check is bounded in time and bytes,
ramps up (one ping at a time, doubling message sizes, one reconnect at a
time) and stops at its first failure, so it never floods the server.

"Idle" means the doctor sends no data. It still behaves like a conforming
client of the protocol it found: it answers WebSocket pings (as every client
library does) and the protocol's own heartbeats (wsnb ``ping``, Engine.IO
``2``, graphql-ws ``ping``, SignalR pings), because a real client would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import math
import os
import re
import ssl as ssl_module
import statistics
import sys
import textwrap
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode

from wsnb._secret import Secret, masked_url, optional_secret
from wsnb.client import check_url, describe_close
from wsnb.loop import background_loop, call_on, in_kernel, run

#: The checks, in the order they run and are reported, with what each measures.
CHECKS: dict[str, str] = {
    "handshake": "The HTTP upgrade: status, Upgrade/Connection headers, subprotocol, "
                 "extensions (permessage-deflate), Server header and time to open; TLS "
                 "version and certificate for wss://.",
    "protocol": "Which application protocol the server speaks: wsnb (handshake_ack), "
                "Socket.IO / Engine.IO, graphql-ws, SignalR, or plain frames.",
    "liveness": "Whether the server answers WebSocket pings (p50/p99 of 20) and sends its "
                "own pings or application heartbeats, and how often.",
    "idle": "How long a connection that sends no data survives (up to the budget), and "
            "the close code it ends with.",
    "size": "The largest text message the server accepts (doubling, then bisecting, up to "
            "the cap) and how it refuses a larger one.",
    "close": "Whether a normal close (1000) gets a close frame back with the same code, or "
             "a dropped TCP connection.",
    "reconnect": "Five quick reconnects in a row: accepted, throttled (429, 4429, 1013) or "
                 "refused.",
}

#: Severities from best to worst; "skipped" means the check could not say.
SEVERITIES = ("ok", "info", "warning", "error", "skipped")
SEVERITY_COLOURS = {"ok": "#16a34a", "info": "#2563eb", "warning": "#d97706",
                    "error": "#dc2626", "skipped": "#6b7280"}
COLUMNS = ["check", "item", "result", "value", "severity", "advice"]

DEFAULT_CAP = 4 * 1024 * 1024
PINGS = 20
RECONNECTS = 5
#: Offered once more when a server refuses an upgrade without a subprotocol (HTTP 400).
KNOWN_SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")
THROTTLE_STATUSES = (429, 503)
THROTTLE_CODES = (4429, 1013)
USER_AGENT = "wsnb-doctor/0.1 (python websockets)"
SIGNALR_HANDSHAKE = '{"protocol":"json","version":1}\x1e'
#: `error` codes with which a wsnb server refuses a handshake frame (PROTOCOL.md).
WSNB_ERROR_CODES = ("bad_envelope", "bad_json", "version", "bad_signature", "too_large")
_HEARTBEAT_WORDS = {"ping", "heartbeat", "keepalive", "keep-alive", "hb", "ka"}
#: The doctor's connections log here, above DEBUG: websockets' DEBUG logs frames (tokens).
LOGGER = logging.getLogger("wsnb.doctor")
LOGGER.setLevel(logging.INFO)

Progress = Callable[[str, float, str], None]


# ----- findings and the report ------------------------------------------------------------


@dataclass
class Finding:
    """One row of the report."""

    check: str
    item: str
    result: str
    value: Any = None
    severity: str = "info"
    advice: str = ""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


#: How rows combine into one verdict: a check with "ok" rows and "info" notes is "ok".
_RANK = {"skipped": 0, "info": 1, "ok": 2, "warning": 3, "error": 4}


def _worst(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: _RANK.get(s, 0), default="skipped")


class Report:
    """What `doctor` found: ``findings`` (a DataFrame), ``summary()``, HTML, ``to_json()``.

    ``facts`` holds the measurements as plain values (``idle_timeout_s``,
    ``max_message_bytes``, ``ping_p50_ms``, ``protocol``, ...) for code that
    wants numbers rather than sentences.
    """

    def __init__(self, url: str, rows: Sequence[Finding], *, facts: Mapping[str, Any],
                 timings: Mapping[str, float], checks: Sequence[str], started: datetime,
                 duration_s: float) -> None:
        self.url = masked_url(url)
        self.rows = list(rows)
        self.facts = dict(facts)
        self.timings = dict(timings)
        self.checks = list(checks)
        self.started = started
        self.duration_s = duration_s

    @property
    def findings(self) -> pd.DataFrame:
        """One row per finding: check, item, result, value, severity, advice."""
        frame = pd.DataFrame([asdict(r) for r in self.rows], columns=COLUMNS, dtype=object)
        frame["severity"] = pd.Categorical(frame["severity"], categories=list(SEVERITIES))
        return frame

    @property
    def problems(self) -> pd.DataFrame:
        """Only the warnings and errors."""
        frame = self.findings
        return frame[frame["severity"].isin(["warning", "error"])].reset_index(drop=True)

    @property
    def ok(self) -> bool:
        """True when nothing is worse than "info"."""
        return not any(r.severity in ("warning", "error") for r in self.rows)

    @property
    def worst(self) -> str:
        return _worst(r.severity for r in self.rows)

    def severity(self, check: str) -> str:
        """The worst severity among one check's rows ("skipped" if it has none)."""
        return _worst(r.severity for r in self.rows if r.check == check)

    def get(self, check: str, item: str | None = None) -> list[Finding]:
        """The rows of one check (and item)."""
        return [r for r in self.rows if r.check == check and (item is None or r.item == item)]

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings or errors found, 3 could not connect at all."""
        if any(r.check == "handshake" and r.item == "connect" and r.severity == "error"
               for r in self.rows):
            return 3
        return 0 if self.ok else 1

    def summary(self) -> str:
        """The findings in plain words: problems with their fixes first, then what is fine."""
        problems = [r for r in self.rows if r.severity in ("error", "warning")]
        problems.sort(key=lambda r: -SEVERITIES.index(r.severity))
        errors = sum(r.severity == "error" for r in problems)
        protocol = self.facts.get("protocol")
        head = f"Doctor report for {self.url}" + (f" ({protocol})" if protocol else "")
        if problems:
            verdict = (f"{len(problems)} problem{'s' if len(problems) != 1 else ''} "
                       f"({errors} error{'s' if errors != 1 else ''}, "
                       f"{len(problems) - errors} warning"
                       f"{'s' if len(problems) - errors != 1 else ''})")
        else:
            verdict = "no problems found"
        lines = [f"{head}: {verdict}, {len(self.checks)} checks in {self.duration_s:.1f} s."]
        if problems:
            lines.append("Problems:")
            for r in problems:
                fix = f" Fix: {r.advice}" if r.advice else ""
                lines.append(f"  - [{r.severity}] {r.check} / {r.item}: {r.result}.{fix}")
        fine = [r for r in self.rows if r.severity == "ok"]
        if fine:
            lines.append("Fine:")
            lines += [f"  - {r.check} / {r.item}: {r.result}" for r in fine]
        notes = [r for r in self.rows if r.severity in ("info", "skipped")]
        if notes:
            lines.append("Notes:")
            for r in notes:
                extra = f" ({r.advice})" if r.advice else ""
                lines.append(f"  - {r.check} / {r.item}: {r.result}{extra}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "started": self.started.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "checks": self.checks,
            "ok": self.ok,
            "worst": self.worst,
            "findings": [{k: _jsonable(v) for k, v in asdict(r).items()} for r in self.rows],
            "facts": _jsonable(self.facts),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (URL without query string or credentials)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{c}</th>"
                       for c in COLUMNS)
        body = []
        for r in self.rows:
            colour = SEVERITY_COLOURS.get(r.severity, "#6b7280")
            value = "" if r.value is None else str(r.value)
            body.append(
                f"<tr class='wsnb-doctor-{esc(r.severity)}'>"
                f"<td style='padding:2px 8px' title='{esc(CHECKS.get(r.check, ''))}'>"
                f"{esc(r.check)}</td>"
                f"<td style='padding:2px 8px'>{esc(r.item)}</td>"
                f"<td style='padding:2px 8px'>{esc(r.result)}</td>"
                f"<td style='padding:2px 8px;font-family:monospace'>{esc(value[:120])}</td>"
                f"<td style='padding:2px 8px'><span style='background:{colour};color:#fff;"
                f"padding:1px 8px;border-radius:8px;font-weight:600'>{esc(r.severity)}</span>"
                f"</td><td style='padding:2px 8px'>{esc(r.advice)}</td></tr>")
        problems = sum(r.severity in ("warning", "error") for r in self.rows)
        verdict = (f"<b style='color:{SEVERITY_COLOURS['ok']}'>no problems found</b>"
                   if not problems else
                   f"<b style='color:{SEVERITY_COLOURS[self.worst]}'>{problems} "
                   f"problem{'s' if problems != 1 else ''}</b>")
        return (f"<div class='wsnb-doctor-report'><p>Doctor report for <code>{esc(self.url)}"
                f"</code>: {verdict} ({len(self.checks)} checks, {self.duration_s:.1f} s)</p>"
                f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def __repr__(self) -> str:
        return (f"<wsnb.doctor.Report {self.url} {self.worst} rows={len(self.rows)} "
                f"problems={sum(r.severity in ('warning', 'error') for r in self.rows)}>")


# ----- helpers ----------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    """``65536`` -> ``"64 KiB"``; exact byte counts when not a round number."""
    if n is None:
        return "?"
    n = int(n)
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB ({n:,} bytes)"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB ({n:,} bytes)"
    return f"{n} bytes"


def parse_bytes(text: str) -> int:
    """``"4MiB"``, ``"256k"``, ``"1048576"`` -> bytes (K/M = 1024 based)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 4MiB, 256KiB or 1048576)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 samples is the largest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _secs(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def _short(x: str | bytes, n: int = 80) -> str:
    text = x if isinstance(x, str) else f"<{len(x)} bytes binary>"
    text = text.replace("\x1e", "\\x1e")
    return text if len(text) <= n else text[: n - 1] + "…"


def _json(x: str | bytes) -> Any:
    if not isinstance(x, str):
        return None
    try:
        return json.loads(x.rstrip("\x1e"))
    except ValueError:
        return None


def _heartbeat_answer(protocol: str, msg: str | bytes) -> str | None | bool:
    """False: not a heartbeat. None: a heartbeat needing no answer. str: the answer."""
    if not isinstance(msg, str) or len(msg) > 512:
        return False
    if protocol in ("socket.io", "engine.io"):
        return "3" if msg == "2" else False
    data = _json(msg)
    if protocol == "signalr":
        if isinstance(data, dict) and data.get("type") == 6:
            return '{"type":6}\x1e'  # a SignalR client must send something every 30 s
        return False
    if isinstance(data, dict):
        kind = data.get("type", data.get("event", data.get("op")))
        if protocol == "wsnb" and kind == "ping" and type(data.get("ts")) is int:
            return json.dumps({"type": "pong", "ts": data["ts"]})
        if protocol == "graphql-transport-ws" and kind == "ping":
            return '{"type":"pong"}'
        if isinstance(kind, str) and kind.lower() in _HEARTBEAT_WORDS:
            return None
        return False
    if msg.strip().lower() in _HEARTBEAT_WORDS:
        return None
    return False


class _ProbeConnection(ClientConnection):
    """A client connection that also notes when the server sends a WebSocket ping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_pings: list[float] = []

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.server_pings.append(time.monotonic())
        super().process_event(event)


class _OpenFailed(Exception):
    """The upgrade did not happen; `kind` says why, `text` and `advice` say it in words."""

    def __init__(self, kind: str, text: str, advice: str = "", status: int | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.advice = advice
        self.status = status
        self.retry_after = retry_after


class _GreetFailed(Exception):
    """The server accepted the upgrade but not the protocol's hello."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


_HTTP_ADVICE = {
    200: "a plain HTTP page answered: the path is not a WebSocket endpoint, or a proxy in "
         "front strips the Upgrade header (nginx: proxy_http_version 1.1; proxy_set_header "
         "Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")",
    400: "the server rejected the upgrade request: check the path and query (Socket.IO "
         "needs /socket.io/?EIO=4&transport=websocket) and whether it requires a subprotocol "
         "(subprotocols=[...])",
    401: "authentication required: pass the credentials the server expects (token=, a "
         "query parameter in the URL, or headers=)",
    403: "forbidden: the server (or a proxy) refused this client: check the token, the "
         "Origin it expects (headers={'Origin': ...}) and IP allow-lists",
    404: "no WebSocket endpoint at this path: check the URL's path",
    426: "the server wants a different protocol (version): the request may have reached a "
         "plain HTTP endpoint",
    429: "the server throttles connections: wait (Retry-After) and reconnect with "
         "exponential backoff and jitter",
    502: "a proxy could not reach the WebSocket backend, or does not support upgrades",
    503: "the service is unavailable or throttling: retry later with backoff",
    504: "a proxy timed out waiting for the backend",
}


def _open_failure(exc: BaseException) -> _OpenFailed:
    if isinstance(exc, _OpenFailed):
        return exc
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        body = bytes(response.body or b"")[:160].decode("utf-8", "replace").strip()
        text = f"HTTP {status} {response.reason_phrase}".strip() + (f": {body}" if body else "")
        kind = "throttled" if status in THROTTLE_STATUSES else "http"
        advice = _HTTP_ADVICE.get(status, "the server refused the WebSocket upgrade")
        return _OpenFailed(kind, text, advice, status, response.headers.get("Retry-After"))
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return _OpenFailed(
            "tls", f"TLS certificate not trusted: {exc.verify_message}",
            "a private CA needs ssl=ssl.create_default_context(cafile=...); a public one "
            "usually means the server does not send its intermediate certificates")
    if isinstance(exc, ssl_module.SSLError):
        return _OpenFailed("tls", f"TLS handshake failed: {exc}",
                           "check that the port speaks TLS (wss://) and the TLS versions match")
    if isinstance(exc, InvalidURI):
        return _OpenFailed("url", f"invalid URL: {exc}", "use ws://host:port/path")
    if isinstance(exc, InvalidHandshake):
        return _OpenFailed(
            "handshake", f"not a valid WebSocket upgrade: {exc}",
            "the answer was not a WebSocket upgrade: a proxy in front may not forward the "
            "Upgrade/Connection headers (nginx: proxy_http_version 1.1; proxy_set_header "
            "Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")")
    if isinstance(exc, TimeoutError):
        return _OpenFailed("timeout", "no upgrade within the open timeout",
                           "the host is unreachable, filtered, or the server is overloaded")
    if isinstance(exc, ConnectionRefusedError):
        return _OpenFailed("refused", "connection refused: nothing listens on that port",
                           "check the host and port, and that the server is running")
    if isinstance(exc, OSError):
        return _OpenFailed("network", f"cannot connect: {exc}",
                           "check the host name (DNS), the network and any firewall")
    return _OpenFailed("error", f"cannot connect: {type(exc).__name__}: {exc}")


class _Conn:
    """One probe connection: a reader task that keeps the last messages and answers heartbeats."""

    def __init__(self, ws: _ProbeConnection, protocol: str, open_s: float) -> None:
        self.ws = ws
        self.protocol = protocol
        self.open_s = open_s
        self.opened = time.monotonic()
        self.inbox: deque[str | bytes] = deque(maxlen=64)
        self.app_heartbeats: list[float] = []
        self.received = 0
        self.closed_at: float | None = None
        self._arrived = asyncio.Event()
        self._closed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                self.received += 1
                answer = _heartbeat_answer(self.protocol, msg)
                if answer is not False:
                    self.app_heartbeats.append(time.monotonic())
                    if answer:
                        with contextlib.suppress(ConnectionClosed):
                            await self.ws.send(answer)
                    continue
                # keep an excerpt only: an echo server may send back megabytes
                self.inbox.append(msg if len(msg) <= 4096 else msg[:4096])
                self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self._closed.set()
            self._arrived.set()

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    async def recv(self, timeout: float) -> str | bytes | None:
        """The next message, or None when none arrives within `timeout` or it closed."""
        deadline = time.monotonic() + timeout
        while True:
            if self.inbox:
                return self.inbox.popleft()
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def wait_closed(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), max(0.0, timeout))
        return self.closed

    def close_words(self) -> str:
        code = self.ws.close_code
        if code is None:
            return "still open"
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is None:
            return "1006: TCP connection dropped without a close frame"
        return describe_close(rcvd.code, rcvd.reason)

    async def aclose(self, timeout: float = 1.0) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(1000, "wsnb doctor done"), timeout)
        if self.ws.transport is not None and not self.ws.transport.is_closing():
            self.ws.transport.abort()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class _Ctx:
    url: str
    token: Secret | None
    ssl: ssl_module.SSLContext | None
    headers: dict[str, str]
    subprotocols: list[str]
    budget_s: float
    cap: int
    progress: Progress | None
    open_timeout: float = 10.0
    open_s: float = 0.05
    protocol: str = "plain"
    greet_error: str | None = None
    fatal: str | None = None
    pings_answered: bool | None = None
    rows: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    connects: list[float] = field(default_factory=list)
    conns: set[_Conn] = field(default_factory=set)
    #: (where, window_s, WebSocket ping offsets, app heartbeat offsets) per watched connection
    watched: list[tuple[str, float, list[float], list[float]]] = field(default_factory=list)

    @property
    def quick(self) -> float:
        """How long to wait for a reply that should be immediate: 10 RTT-ish, 0.3-3 s."""
        return _clamp(10 * self.open_s, 0.3, 3.0)

    @property
    def patient(self) -> float:
        """Ping and close timeouts: 1-5 s."""
        return _clamp(10 * self.open_s, 1.0, 5.0)

    def add(self, check: str, item: str, result: str, value: Any = None,
            severity: str = "info", advice: str = "") -> Finding:
        row = Finding(check, item, result, value, severity, advice)
        self.rows.append(row)
        return row

    def report_progress(self, check: str, fraction: float, status: str) -> None:
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress(check, _clamp(fraction, 0.0, 1.0), status)

    def hello(self) -> str:
        token = self.token.reveal() if self.token is not None else None
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        return json.dumps({"type": "handshake", "v": 1, "token": token, "session": None,
                           "last_seen": 0})


async def _open(ctx: _Ctx, *, greet: bool = True, compression: str | None = None,
                subprotocols: Sequence[str] | None = None,
                protocol: str | None = None) -> _Conn:
    """Open (and greet) one probe connection; raises `_OpenFailed` or `_GreetFailed`."""
    secure = ctx.url.lower().startswith("wss:")
    offered = list(subprotocols if subprotocols is not None else ctx.subprotocols)
    ctx.connects.append(time.monotonic())
    started = time.monotonic()
    try:
        ws = await connect(
            ctx.url, additional_headers=ctx.headers or None,
            subprotocols=offered or None,  # type: ignore[arg-type]
            compression=compression, open_timeout=ctx.open_timeout, ping_interval=None,
            ping_timeout=None, close_timeout=ctx.patient, max_size=ctx.cap + 65536,
            max_queue=64, ssl=(ctx.ssl or True) if secure else None,
            user_agent_header=USER_AGENT, logger=LOGGER, create_connection=_ProbeConnection,
        )
    except Exception as exc:
        raise _open_failure(exc) from exc
    conn = _Conn(ws, protocol or ctx.protocol, time.monotonic() - started)  # type: ignore[arg-type]
    ctx.conns.add(conn)
    if greet:
        try:
            await _greet(ctx, conn)
        except BaseException:
            await _shut(ctx, conn)
            raise
    return conn


async def _shut(ctx: _Ctx, conn: _Conn) -> None:
    ctx.conns.discard(conn)
    await conn.aclose(min(1.0, ctx.quick))  # a courtesy: do not wait long for a deaf server


async def _send(conn: _Conn, text: str) -> bool:
    """Send if still open; a probe answered by a close is an answer too."""
    try:
        await conn.ws.send(text)
    except ConnectionClosed:
        return False
    return True


async def _expect(conn: _Conn, timeout: float, what: str,
                  accept: Callable[[str | bytes], bool]) -> str | bytes:
    """The first message `accept` takes, skipping others; `_GreetFailed` if none comes."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await conn.recv(deadline - time.monotonic())
        if msg is None:
            if conn.closed:
                raise _GreetFailed(f"closed before {what}: {conn.close_words()}",
                                   conn.ws.close_code)
            raise _GreetFailed(f"no {what} within {timeout:.1f} s")
        if accept(msg):
            return msg


async def _greet(ctx: _Ctx, conn: _Conn) -> None:
    """Say hello the way the server's protocol expects (nothing for plain servers)."""
    wait = 2 * ctx.quick
    proto = conn.protocol
    if proto == "wsnb":
        await conn.ws.send(ctx.hello())
        reply = await _expect(conn, wait, "handshake_ack", lambda m: True)
        data = _json(reply)
        if not (isinstance(data, dict) and data.get("type") == "handshake_ack"):
            raise _GreetFailed(f"answered the wsnb handshake with {_short(reply)}")
    elif proto in ("engine.io", "socket.io"):
        await _expect(conn, wait, "Engine.IO open packet",
                      lambda m: isinstance(m, str) and m.startswith("0{"))
        if proto == "socket.io":
            await conn.ws.send("40")
            reply = await _expect(conn, wait, "Socket.IO connect",
                                  lambda m: isinstance(m, str) and m[:2] in ("40", "44"))
            if str(reply).startswith("44"):
                raise _GreetFailed(f"Socket.IO refused the connect: {_short(reply)}")
    elif proto in ("graphql-transport-ws", "graphql-ws"):
        await conn.ws.send('{"type":"connection_init","payload":{}}')
        reply = await _expect(conn, wait, "connection_ack", lambda m: True)
        data = _json(reply)
        if not (isinstance(data, dict) and data.get("type") == "connection_ack"):
            raise _GreetFailed(f"answered connection_init with {_short(reply)}")
    elif proto == "signalr":
        await conn.ws.send(SIGNALR_HANDSHAKE)
        reply = await _expect(conn, wait, "SignalR handshake response", lambda m: True)
        if reply != "{}\x1e":
            raise _GreetFailed(f"answered the SignalR handshake with {_short(reply)}")


# ----- the checks -------------------------------------------------------------------------


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


async def _check_protocol(ctx: _Ctx, report: bool) -> None:
    """Find the application protocol; later checks greet the server accordingly."""
    c = "protocol"

    def add(*args: Any, **kwargs: Any) -> None:
        if report:
            ctx.add(c, *args, **kwargs)

    ctx.report_progress(c, 0.05, "listening for a greeting")
    # 1. Listen first (Engine.IO speaks first) while offering the graphql subprotocols.
    offered = list(ctx.subprotocols) + [p for p in KNOWN_SUBPROTOCOLS
                                         if p not in ctx.subprotocols]
    echo = False
    try:
        conn = await _open(ctx, greet=False, subprotocols=offered, protocol="plain")
    except _OpenFailed as fail:
        add("probe", f"could not open a probe connection: {fail.text}", None, "skipped")
        return
    try:
        sub = conn.ws.subprotocol
        if sub in KNOWN_SUBPROTOCOLS:
            conn.protocol = sub
            ctx.subprotocols = [sub]
            try:
                await _greet(ctx, conn)
            except _GreetFailed as fail:
                ctx.protocol = sub
                add("speaks", f"graphql over WebSocket ({sub}), but {fail.text}", sub,
                    "warning", "the server negotiated the subprotocol but did not ack "
                    "connection_init: check the connection_init payload (auth)")
                return
            ctx.protocol = sub
            ctx.facts["protocol"] = sub
            add("speaks", f"graphql over WebSocket ({sub}): connection_ack received", sub,
                "info", "use a graphql-ws client; plain frames must follow its message types")
            return
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
    finally:
        await _shut(ctx, conn)

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
        code = conn.ws.close_code if conn.closed else None
        if isinstance(data, dict) and data.get("type") == "handshake_ack":
            ctx.protocol = "wsnb"
            ctx.facts.update(protocol="wsnb", wsnb_heartbeat_ms=data.get("heartbeat_ms"),
                             wsnb_max_size=data.get("max_size"))
            add("speaks", f"wsnb protocol v{data.get('v')} (handshake_ack: heartbeat "
                f"{data.get('heartbeat_ms')} ms, max_size {fmt_bytes(data.get('max_size'))})",
                "wsnb", "ok")
            return
        if reply == hello:
            echo = True
        elif code == 4401 or (isinstance(data, dict) and data.get("type") == "error"
                              and data.get("code") in WSNB_ERROR_CODES):
            ctx.protocol = "wsnb"
            ctx.facts["protocol"] = "wsnb"
            why = conn.close_words() if code else f"error frame {_short(reply or '')}"
            ctx.greet_error = f"the wsnb handshake was refused ({why})"
            add("speaks", f"wsnb protocol, but the handshake was refused: {why}", "wsnb",
                "error", "pass the right token= (a wsnb server closes with 4401 on a bad token)")
            return
    finally:
        await _shut(ctx, conn)

    # 3. SignalR's handshake (an echo server would just echo it: skip).
    if not echo:
        ctx.report_progress(c, 0.7, "trying SignalR's handshake")
        try:
            conn = await _open(ctx, greet=False, protocol="plain")
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
            if reply == SIGNALR_HANDSHAKE:
                echo = True
        finally:
            await _shut(ctx, conn)

    ctx.protocol = "plain"
    ctx.facts.update(protocol="plain", echo=echo)
    add("speaks", "plain frames" + (": it echoes what it gets" if echo else
                                    ": no known application protocol answered"),
        "plain", "info",
        "wsnb.Client(url, protocol='raw') talks to it; delivery guarantees then rest on your "
        "own acks")


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
            p50, p99 = statistics.median(rtts), _percentile(rtts, 99)
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
            lived = conn.closed_at - start
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
        if conn is not None and conn.closed and state["last"] is conn:
            state["late"] += 1  # closed after a message was accepted: maybe that message
        if conn is None or conn.closed:
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
                closing = asyncio.ensure_future(conn.wait_closed(confirm))
                done, _ = await asyncio.wait([waiter, closing], timeout=confirm,
                                             return_when=asyncio.FIRST_COMPLETED)
                closing.cancel()
                # the pong says the WebSocket layer read the message; an application that
                # refuses it closes just after: give it a moment (50 ms + 2 RTT)
                pong = waiter in done and not waiter.exception()
                if pong and not await conn.wait_closed(min(0.5, 0.05 + 2 * waiter.result())):
                    state["confirmed"], state["last"] = n, conn
                    return True
                if not conn.closed and not await conn.wait_closed(0.05):
                    if ctx.pings_answered is None:  # liveness did not run: it ignores pings
                        ctx.pings_answered = False
                        state["last"] = conn
                        return True  # and it did not close within `confirm` either
                    state["stop"] = f"no pong and no close within {confirm:.1f} s"
                    return None
            else:  # no pongs: a reply (echo, error frame) or a quiet while counts as accepted
                if await conn.recv(ctx.quick) is not None:
                    await conn.wait_closed(0.05)  # some servers answer, then close
                    state["confirmed"] = n
                if not conn.closed:
                    state["last"] = conn
                    return True
        except ConnectionClosed:
            pass
        await conn.wait_closed(ctx.patient)
        state["code"] = conn.ws.close_code
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
        took = time.monotonic() - started
        rcvd = conn.ws.protocol.close_rcvd
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
            outcome = "throttled" if fail.kind == "throttled" else "refused"
            detail = fail.text + (f" (Retry-After: {fail.retry_after})"
                                  if fail.retry_after else "")
            value, advice = fail.status, fail.advice
            break
        except _GreetFailed as fail:
            outcome = "throttled" if fail.code in THROTTLE_CODES else "refused"
            detail, value = fail.text, fail.code
            break
        try:
            if ctx.protocol == "plain":  # a server may accept, then close 1013 / 4429 at once
                if ctx.pings_answered is not False:
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        await asyncio.wait_for(await conn.ws.ping(), ctx.patient)
                else:
                    await conn.wait_closed(min(ctx.quick, 0.3))
            if conn.closed:
                code = conn.ws.close_code
                outcome = "throttled" if code in THROTTLE_CODES else "refused"
                detail, value = f"accepted, then closed: {conn.close_words()}", code
                break
            times.append(time.monotonic() - started)
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


_RUNNERS: dict[str, Callable[[_Ctx], Awaitable[None]]] = {
    "liveness": _check_liveness,
    "idle": _check_idle,
    "size": _check_size,
    "close": _check_close,
    "reconnect": _check_reconnect,
}
_NEED_SESSION = ("liveness", "idle", "size", "reconnect")


async def _run_check(ctx: _Ctx, name: str, timings: dict[str, float]) -> None:
    started = time.monotonic()
    ctx.report_progress(name, 0.0, "running")
    before = len(ctx.rows)
    try:
        if ctx.fatal is not None:
            ctx.add(name, "not run", f"could not connect ({ctx.fatal})", None, "skipped")
        elif ctx.greet_error is not None and name in _NEED_SESSION:
            ctx.add(name, "not run", ctx.greet_error, None, "skipped")
        else:
            await _RUNNERS[name](ctx)
    except (_OpenFailed, _GreetFailed) as exc:
        ctx.add(name, "connect", f"could not run: {exc}", None, "skipped",
                getattr(exc, "advice", ""))
    except Exception as exc:  # a doctor check must never take the report down with it
        ctx.add(name, "error", f"check could not finish: {type(exc).__name__}: {exc}"[:300],
                None, "skipped")
    timings[name] = time.monotonic() - started
    ctx.report_progress(name, 1.0, _worst(r.severity for r in ctx.rows[before:]))


def _parse_checks(checks: str | Iterable[str] | None) -> list[str]:
    if checks is None:
        return list(CHECKS)
    names = [s.strip() for s in checks.split(",")] if isinstance(checks, str) else list(checks)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(CHECKS)}")
    if not names:
        raise ValueError(f"no checks chosen; choose from {', '.join(CHECKS)}")
    return [n for n in CHECKS if n in names]


async def adoctor(
    url: str,
    token: str | Secret | None = None,
    *,
    checks: str | Iterable[str] | None = None,
    budget_s: float = 60.0,
    max_size_cap: int = DEFAULT_CAP,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Check the server at `url` for the failure modes WebSocket tutorials teach.

    ``checks``: names from `CHECKS` (a list or a comma-separated string), all by
    default. ``budget_s``: how long the idle check watches a silent connection
    (it runs alongside the other checks, so a run takes about ``budget_s``);
    ``max_size_cap``: the largest message the size check sends. ``token`` goes
    into wsnb's handshake frame; other servers take credentials in the URL or
    ``headers``. ``progress(check, fraction, status)`` is called as checks
    advance (on the event loop running the doctor: wsnb's loop thread in Jupyter).
    """
    if in_kernel() and asyncio.get_running_loop() is not background_loop():
        # in Jupyter, run where the notebook's servers and clients live (wsnb's loop thread):
        # tasks started from a cell on the kernel's loop may stall (ipykernel #1510)
        return await call_on(background_loop(), adoctor(
            url, token, checks=checks, budget_s=budget_s, max_size_cap=max_size_cap, ssl=ssl,
            headers=headers, subprotocols=subprotocols, progress=progress))
    url = check_url(url)
    names = _parse_checks(checks)
    if not budget_s > 0 or not math.isfinite(budget_s):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    if max_size_cap < 1024:
        raise ValueError(f"max_size_cap must be at least 1024 bytes, got {max_size_cap}")
    if ssl is not None and not url.lower().startswith("wss:"):
        raise ValueError("ssl= is only for wss:// URLs")
    ctx = _Ctx(url=url, token=optional_secret(token), ssl=ssl, headers=dict(headers or {}),
               subprotocols=list(subprotocols or ()), budget_s=float(budget_s),
               cap=int(max_size_cap), progress=progress,
               open_timeout=_clamp(budget_s, 1.0, 10.0))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    timings: dict[str, float] = {}
    idle: asyncio.Future[None] | None = None
    try:
        t = time.monotonic()
        ctx.report_progress("handshake", 0.0, "running")
        try:
            await _check_handshake(ctx)
        except Exception as exc:  # a doctor bug must not hide what it found
            ctx.fatal = f"{type(exc).__name__}: {exc}"[:300]
            ctx.add("handshake", "error", f"check could not finish: {ctx.fatal}", None,
                    "skipped")
        timings["handshake"] = time.monotonic() - t
        ctx.report_progress("handshake", 1.0, _worst(r.severity for r in ctx.rows))
        if "handshake" not in names:
            ctx.rows = [r for r in ctx.rows if r.check != "handshake" or r.severity == "error"]
        later = [n for n in names if n not in ("handshake", "protocol")]
        if ctx.fatal is None and ("protocol" in names or later):
            t = time.monotonic()
            ctx.report_progress("protocol", 0.0, "running")
            try:
                await _check_protocol(ctx, report="protocol" in names)
            except Exception as exc:  # later checks then treat it as plain frames
                ctx.add("protocol", "error", f"check could not finish: {type(exc).__name__}: "
                        f"{exc}"[:300], None, "skipped")
            timings["protocol"] = time.monotonic() - t
            ctx.report_progress("protocol", 1.0,
                                _worst(r.severity for r in ctx.rows if r.check == "protocol"))
        elif "protocol" in names:
            await _run_check(ctx, "protocol", timings)  # adds the "skipped" row
        if "idle" in names:  # the idle wait runs alongside everything else
            idle = asyncio.ensure_future(_run_check(ctx, "idle", timings))
        for name in later:
            if name != "idle":
                await _run_check(ctx, name, timings)
        if idle is not None:
            await idle
        if "liveness" in names and ctx.fatal is None and ctx.greet_error is None:
            _heartbeat_rows(ctx)
    finally:
        if idle is not None and not idle.done():
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)
        for conn in list(ctx.conns):
            await _shut(ctx, conn)
    order = {n: i for i, n in enumerate(CHECKS)}
    rows = sorted(ctx.rows, key=lambda r: order.get(r.check, len(order)))
    return Report(url, rows, facts=ctx.facts, timings=timings, checks=names,
                  started=started_at, duration_s=time.monotonic() - started)


def doctor(
    url: str,
    token: str | Secret | None = None,
    *,
    checks: str | Iterable[str] | None = None,
    budget_s: float = 60.0,
    max_size_cap: int = DEFAULT_CAP,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Check a WebSocket server and return a `Report` (blocks; see `adoctor` for the options).

    In a script this runs its own event loop; in a Jupyter kernel it runs on
    wsnb's loop thread (where servers made in the notebook live) and blocks
    the cell; inside another running loop it uses `wsnb.run`. From async code
    prefer ``await wsnb.adoctor(...)``.
    """
    coro = adoctor(url, token, checks=checks, budget_s=budget_s, max_size_cap=max_size_cap,
                   ssl=ssl, headers=headers, subprotocols=subprotocols, progress=progress)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and in_kernel():
        loop = background_loop()
        if running is loop:
            coro.close()
            raise RuntimeError("doctor() would block wsnb's loop thread: await adoctor()")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
    return run(coro)


# ----- command line -----------------------------------------------------------------------


def cli_main(argv: list[str]) -> int:
    """``wsnb doctor URL [...]``: print the report; exit 0 healthy, 1 problems, 2 usage, 3 down."""
    parser = argparse.ArgumentParser(
        prog="wsnb doctor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check any WebSocket server for the failure modes tutorials teach.\n\n"
                    + "\n".join(textwrap.fill(v, 78, initial_indent=f"  {k:<10} ",
                                               subsequent_indent=" " * 13)
                                 for k, v in CHECKS.items()),
        epilog="Exit status: 0 no problems, 1 warnings or errors found, 2 usage error, "
               "3 could not connect.")
    parser.add_argument("url", help="ws:// or wss:// URL of the server")
    parser.add_argument("--token", default=None,
                        help="token for wsnb's handshake (default: $WSNB_TOKEN)")
    parser.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                        help="how long to watch an idle connection (default 60)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--max-size-cap", type=parse_bytes, default=DEFAULT_CAP,
                        metavar="BYTES", help="largest message to try (default 4MiB)")
    parser.add_argument("--cafile", default=None, help="trust this CA bundle for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the wss:// certificate (still reports it)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return, never exit
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    ssl_ctx = None
    if args.cafile or args.insecure:
        ssl_ctx = ssl_module.create_default_context(cafile=args.cafile)
        if args.insecure:
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl_module.CERT_NONE
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(check: str, fraction: float, status: str) -> None:
            if fraction >= 1.0:
                print(f"  {check:<10} {status}", file=sys.stderr)
    try:
        report = doctor(args.url, args.token or os.environ.get("WSNB_TOKEN"),
                        checks=args.checks, budget_s=args.budget,
                        max_size_cap=args.max_size_cap, ssl=ssl_ctx, progress=progress)
    except ValueError as exc:
        print(f"wsnb doctor: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json())
    else:
        print(report.summary())
        print()
        print(report.findings.drop(columns=["advice"]).to_string(index=False, max_colwidth=60))
    return report.exit_code
