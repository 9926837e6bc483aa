"""The probing connection: open, greet and read a server the way a real client would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from wsnb._secret import Secret
from wsnb.client import describe_close
from wsnb.doctor.report import (
    Finding,
    _clamp,
    _short,
)
from wsnb.failures import ConnectFailed as _OpenFailed
from wsnb.failures import classify
from wsnb.protocol.envelope import handshake_frame

DEFAULT_CAP = 4 * 1024 * 1024
PINGS = 20
RECONNECTS = 5
#: Offered once more when a server refuses an upgrade without a subprotocol (HTTP 400).
KNOWN_SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")
THROTTLE_CODES = (4429, 1013)
USER_AGENT = "wsnb-doctor/0.1 (python websockets)"
SIGNALR_HANDSHAKE = '{"protocol":"json","version":1}\x1e'
GRAPHQL_INIT = '{"type":"connection_init","payload":{}}'
#: What `Report.facts["protocol"]` says of a server that sends back what it gets.
ECHO_PROTOCOL = "echo/raw"
#: `error` codes with which a wsnb server refuses a handshake frame (PROTOCOL.md).
WSNB_ERROR_CODES = ("bad_envelope", "bad_json", "version", "bad_signature", "too_large")
_HEARTBEAT_WORDS = {"ping", "heartbeat", "keepalive", "keep-alive", "hb", "ka"}
#: The doctor's connections log here, above DEBUG: websockets' DEBUG logs frames (tokens).
LOGGER = logging.getLogger("wsnb.doctor")
LOGGER.setLevel(logging.INFO)

Progress = Callable[[str, float, str], None]


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
    """A client connection that notes the server's pings and when its close frame came.

    It also keeps a close frame that a TCP reset would otherwise hide: a server
    refusing a message often sends its close frame and then closes a socket
    with unread data, which resets the connection. When our next write meets
    that reset, asyncio drops the connection without reading what is still
    queued, close frame included, and the close looks like a 1006. So when the
    connection is lost with an error and no close frame was read, the bytes
    still queued in the kernel are read and fed to the protocol first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_pings: list[float] = []
        self.close_rcvd_at: float | None = None
        self.close_event = asyncio.Event()  # a close frame came, or the connection is gone

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.server_pings.append(time.monotonic())
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._note_close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.protocol.close_rcvd is None:
            self._salvage()
        self._note_close()
        super().connection_lost(exc)
        self.close_event.set()

    def _note_close(self) -> None:
        if self.close_rcvd_at is None and self.protocol.close_rcvd is not None:
            self.close_rcvd_at = time.monotonic()
            self.close_event.set()

    def _salvage(self) -> None:
        """Feed the protocol what the kernel still holds for this socket (bounded, no TLS)."""
        transport = self.transport
        if transport is None or transport.get_extra_info("ssl_object") is not None:
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return
        with dup:
            dup.setblocking(False)
            for _ in range(64):  # at most 4 MiB: a close frame is at the end of what came
                try:
                    data = dup.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                try:
                    self.protocol.receive_data(data)
                    self.protocol.events_received()
                except Exception:  # a broken stream: keep what was parsed
                    return
                if self.protocol.close_rcvd is not None:
                    return


class _GreetFailed(Exception):
    """The server accepted the upgrade but not the protocol's hello."""

    def __init__(self, text: str, code: int | None = None,
                 reply: str | bytes | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.reply = reply


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
        self.echoed = False  # the server sent our greeting back
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

    async def wait_close(self, timeout: float) -> bool:
        """Until the server's close frame came or the connection is gone; True if either."""
        if not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ws.close_event.wait(), max(0.0, timeout))
        return self.closing

    @property
    def closing(self) -> bool:
        """The server sent its close frame, or the connection is gone."""
        return self.closed or self.ws.protocol.close_rcvd is not None

    @property
    def close_code(self) -> int | None:
        """The code of the server's close frame (even before TCP closes), 1006 when the
        connection ended without one, None while open."""
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is not None:
            return rcvd.code
        return self.ws.close_code  # 1006 once closed, None while open

    def close_words(self) -> str:
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is not None:
            return describe_close(rcvd.code, rcvd.reason)
        if self.ws.close_code is None:
            return "still open"
        return "1006: TCP connection dropped without a close frame"

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
    origin: str | None = None
    #: the server sends back what it gets (found before any protocol is tried)
    echo: bool = False
    #: the server refused the upgrade without a subprotocol (HTTP 400) and took one of ours
    sub_required: bool = False
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
        """wsnb's handshake frame, built where the client builds it."""
        token = self.token.reveal() if self.token is not None else None
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        return handshake_frame(token)

    def speaks(self) -> str:
        """The protocol as reported: "echo/raw" for an echo server."""
        return ECHO_PROTOCOL if self.echo else self.protocol


async def _open(ctx: _Ctx, *, greet: bool = True, compression: str | None = None,
                subprotocols: Sequence[str] | None = None,
                protocol: str | None = None) -> _Conn:
    """Open (and greet) one probe connection; raises `_OpenFailed` or `_GreetFailed`."""
    secure = ctx.url.lower().startswith("wss:")
    offered = list(subprotocols if subprotocols is not None else ctx.subprotocols)
    ctx.connects.append(time.monotonic())
    started = time.monotonic()
    made: list[_ProbeConnection] = []

    def create_connection(*args: Any, **kwargs: Any) -> _ProbeConnection:
        made.append(_ProbeConnection(*args, **kwargs))
        return made[-1]

    try:
        ws = await connect(
            ctx.url, additional_headers=ctx.headers or None,
            subprotocols=offered or None,  # type: ignore[arg-type]
            origin=ctx.origin,  # type: ignore[arg-type]
            compression=compression, open_timeout=ctx.open_timeout, ping_interval=None,
            ping_timeout=None, close_timeout=ctx.patient, max_size=ctx.cap + 65536,
            max_queue=64, ssl=(ctx.ssl or True) if secure else None,
            user_agent_header=USER_AGENT, logger=LOGGER,
            create_connection=create_connection,  # type: ignore[arg-type]  # a factory works
        )
    except Exception as exc:
        phase = "upgrade" if made and getattr(made[-1], "transport", None) else "connect"
        raise _OpenFailed(classify(exc, url=ctx.url, timeout=ctx.open_timeout,
                                   phase=phase)) from exc
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
                                   conn.close_code)
            raise _GreetFailed(f"no {what} within {timeout:.1f} s")
        if accept(msg):
            return msg


async def _greet(ctx: _Ctx, conn: _Conn) -> None:
    """Say hello the way the server's protocol expects (nothing for plain servers).

    A greeting that comes back verbatim is an echo, never a failed greeting:
    the connection is then marked `echoed` and counts as open.
    """
    wait = 2 * ctx.quick
    proto = conn.protocol
    if proto == "wsnb":
        hello = ctx.hello()
        await conn.ws.send(hello)
        reply = await _expect(conn, wait, "handshake_ack", lambda m: True)
        if reply == hello:
            conn.echoed = True
            return
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
        await conn.ws.send(GRAPHQL_INIT)
        reply = await _expect(conn, wait, "connection_ack", lambda m: True)
        if reply == GRAPHQL_INIT:
            conn.echoed = True
            return
        data = _json(reply)
        if not (isinstance(data, dict) and data.get("type") == "connection_ack"):
            raise _GreetFailed(f"answered connection_init with {_short(reply)}", None, reply)
    elif proto == "signalr":
        await conn.ws.send(SIGNALR_HANDSHAKE)
        reply = await _expect(conn, wait, "SignalR handshake response", lambda m: True)
        if reply == SIGNALR_HANDSHAKE:
            conn.echoed = True
            return
        if reply != "{}\x1e":
            raise _GreetFailed(f"answered the SignalR handshake with {_short(reply)}")
