"""Socket.IO v4 (protocol 5) over Engine.IO v4's WebSocket transport.

``Client(socketio.url("http://host:port"), dialect="socketio")``, i.e. the URL
``ws://host:port/socket.io/?EIO=4&transport=websocket``: WebSocket only, no
HTTP long-polling first (python-socketio, Node's socket.io and most others
accept it).

What the dialect does on every (re)connect, before the outbox flushes: wait
for the Engine.IO open packet ``0{"sid":..,"pingInterval":..,"pingTimeout":..}``
(a ``state`` row, ``engine.io open``), send the Socket.IO connect ``40`` (the
namespace, and the ``auth`` payload if any) and wait for its ack
``40{"sid":..}`` (a ``state`` row, ``socket.io connected``). Events queued
while disconnected therefore always follow the connect. A ``44``
connect_error closes the connection with 4401 and does not reconnect
(`wsnb.AuthError`, the server's message on the timeline), as the browser
client does.

Engine.IO's heartbeat is answered here: each ping ``2`` gets its pong ``3`` at
once, written straight to the socket (never queued behind the outbox), and
never reaches the application. Nothing at all for pingInterval + pingTimeout
(plus slack) means a dead link: the connection is dropped and redone. A ping flood, or a packet
type the dialect does not know, gets one ``error`` row (not one per frame).

What the application receives (``recv``, ``on_message``, the inbox):

- an event ``42["chat","hi",1]``: ``{"event": "chat", "args": ["hi", 1]}``,
  plus ``"ack": N`` when the server asked for an acknowledgement (answer with
  `ack`) and ``"namespace": "/x"`` outside the default namespace. Binary
  attachments (``45``) arrive as ``bytes`` in their places.
- an acknowledgement nobody waits for any more (its `Client.request` timed
  out): an `Ack` (a list of the ack's arguments, with ``.id``).

Everything else (open, ping, noop, connect, disconnect, errors) is consumed.

Sending: `emit` (or ``client.send`` of a frame from `event_frame`);
``await emit(client, "chat", "hi", ack=True)`` or
``await client.request(("chat", "hi"))`` sends ``42N["chat","hi"]`` and
returns the arguments of the server's ``43N[...]`` (an `Ack`), with
``request``/``reply`` rows on the timeline (`Timeline.requests`).

A server disconnect (``41``, e.g. python-socketio's ``sio.disconnect(sid)``)
and a WebSocket close 1000 (python-socketio closes that way) are routine
here: the client reconnects and connects again (``1000`` is a retry code of
this dialect). `disconnect` leaves for good.

Passing your own ``on_open=`` to `Client` replaces this dialect's greeting:
call ``await socketio.DIALECT.on_open(client)`` (or your dialect's) first in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

from wsnb.dialects import CONSUMED, Dialect

if TYPE_CHECKING:
    from wsnb._receipt import Receipt
    from wsnb.client import Client
    from wsnb.link import Link

#: Pings in one second past which the server is flooding (rows are then suppressed).
FLOOD_PINGS = 20
#: Distinct unknown packet kinds that each get their own error row.
MAX_UNKNOWN_KINDS = 8
#: Binary attachments one packet may announce (python-socketio's own limit is similar).
MAX_ATTACHMENTS = 64

AuthSource = Mapping[str, Any] | Callable[[], Any] | None


class ConnectError(Exception):
    """The server refused the Socket.IO connect (a ``44`` connect_error)."""


class Ack(list):  # type: ignore[type-arg]
    """The arguments of a server's acknowledgement ``43N[...]``; ``id`` is N."""

    def __init__(self, args: list[Any], id: int, namespace: str = "/") -> None:
        super().__init__(args)
        self.id = id
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"Ack(id={self.id}, {list(self)!r})"


def url(base: str, path: str = "/socket.io/", **query: str) -> str:
    """The WebSocket URL for a Socket.IO server at `base` (http(s):// or ws(s)://).

    ``url("http://127.0.0.1:5000")`` is
    ``"ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket"``; extra
    ``query`` values are appended (use `auth` for credentials, not the URL).
    """
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"expected http(s):// or ws(s):// with a host, got {base!r}")
    prefix = parts.path.rstrip("/")
    full = prefix + "/" + path.strip("/") + "/"
    params = urlencode({"EIO": "4", "transport": "websocket", **query})
    return urlunsplit((scheme, parts.netloc, full, params, ""))


@dataclass(frozen=True)
class SocketIODialect(Dialect):
    """The Socket.IO dialect for one namespace (and its ``auth`` payload)."""

    namespace: str = "/"
    auth: Any = field(default=None, repr=False)


def dialect(namespace: str = "/", auth: AuthSource = None) -> SocketIODialect:
    """A Socket.IO dialect connecting to `namespace` with `auth`.

    ``auth``: the connect payload (a dict, e.g. ``{"token": ...}``), or a
    function (sync or async) returning it, called on every (re)connect so a
    fresh token can be used. Never shown on the timeline.
    """
    if not namespace.startswith("/") or "," in namespace:
        raise ValueError(f"a namespace starts with '/' and has no ',': {namespace!r}")

    async def on_open(client: Client) -> None:
        await _greet(client, namespace, auth)

    def intercept(client: Client, frame: Any) -> Any:
        return _intercept(client, frame, namespace)

    def make_request(payload: Any, key: Any) -> str:
        name: Any
        if isinstance(payload, Mapping):
            name, args = payload.get("event"), list(payload.get("args", ()))
            space = payload.get("namespace", namespace)
        elif isinstance(payload, (tuple, list)) and payload:
            name, args, space = payload[0], list(payload[1:]), namespace
        else:
            raise ValueError("a Socket.IO request is (event, *args) or "
                             f"{{'event': ..., 'args': [...]}}, got {payload!r}")
        return event_frame(name, *args, namespace=space, ack_id=key)

    return SocketIODialect(
        name="socketio", on_open=on_open, intercept=intercept, reply_key=_reply_key,
        make_request=make_request, retry_codes=frozenset({1000}), namespace=namespace,
        auth=auth)


def _reply_key(value: Any) -> Any:
    return value.id if isinstance(value, Ack) else None


# ----- frames -------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise TypeError(f"Socket.IO arguments must be JSON (wsnb does not send binary "
                        f"attachments): {exc}") from None


def _prefix(kind: int, namespace: str, ack_id: int | None = None) -> str:
    text = f"4{kind}"
    if namespace != "/":
        text += namespace + ","
    if ack_id is not None:
        text += str(int(ack_id))
    return text


def event_frame(event: str, *args: Any, namespace: str = "/",
                ack_id: int | None = None) -> str:
    """The text frame of an event: ``42["chat","hi"]``, ``42/ns,7["chat"]``."""
    if not isinstance(event, str):
        raise TypeError(f"a Socket.IO event name is a str, got {event!r}")
    return _prefix(2, namespace, ack_id) + _dumps([event, *args])


def _namespace_of(client: Client) -> str:
    found = client.dialect
    return found.namespace if isinstance(found, SocketIODialect) else "/"


async def emit(client: Client, event: str, *args: Any, ack: bool = False,
               timeout: float | None = 10.0) -> Any:
    """Send event `event` with `args`.

    ``ack=False``: the `wsnb.Receipt` of the frame (queued while disconnected,
    sent after the next connect). ``ack=True``: the server's acknowledgement
    arguments (an `Ack`), via `Client.request`, within `timeout` seconds.
    """
    if ack:
        return await client.request((event, *args), timeout=timeout)
    return await client.send(event_frame(event, *args, namespace=_namespace_of(client)))


async def ack(client: Client, message: Mapping[str, Any], *args: Any) -> Receipt:
    """Acknowledge `message` (an event the server sent with ``"ack": N``) with `args`."""
    if "ack" not in message:
        raise ValueError("this event did not ask for an acknowledgement (no 'ack' key)")
    space = message.get("namespace", "/")
    return await client.send(_prefix(3, space, message["ack"]) + _dumps(list(args)))


async def disconnect(client: Client) -> None:
    """Leave for good: the Socket.IO disconnect ``41``, then `Client.close`."""
    link = client.link
    if link is not None and link.ws is not None:
        link.ws.send([_prefix(1, _namespace_of(client))])
    await client.close()


# ----- per-client state -----------------------------------------------------------------


@dataclass
class _Conn:
    """One WebSocket's Engine.IO session."""

    link: Any
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: ConnectError | None = None
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    last_life: float = 0.0
    watchdog: asyncio.TimerHandle | None = None
    binary: tuple[int, str, int | None, Any, int, list[bytes]] | None = None
    leaving: bool = False


@dataclass
class Info:
    """What the dialect knows about one client (`info`)."""

    eio_sid: str | None = None
    sid: str | None = None
    connected: bool = False
    error: ConnectError | None = None
    pings: int = 0
    pongs_skipped: int = 0
    unknown: int = 0
    unknown_kinds: set[str] = field(default_factory=set)
    flood_window: float = 0.0
    flood_count: int = 0
    flooding: bool = False
    conn: _Conn | None = field(default=None, repr=False)


def info(client: Client) -> Info:
    """The Engine.IO/Socket.IO state of `client`: sids, connected, ping and error counts."""
    found: Info | None = getattr(client, _ATTR, None)
    if found is None:
        found = Info()
        setattr(client, _ATTR, found)  # on the client: it lives and dies with it
    return found


_ATTR = "_socketio_info"


def _conn(client: Client) -> _Conn:
    """The state of the client's current WebSocket (fresh after each reconnect)."""
    state = info(client)
    link = client.link
    if state.conn is None or state.conn.link is not link:
        if state.conn is not None and state.conn.watchdog is not None:
            state.conn.watchdog.cancel()
        state.conn = _Conn(link)
        state.connected, state.sid = False, None
    return state.conn


async def connected(client: Client, timeout: float | None = 10.0) -> str:
    """Wait until the Socket.IO connect is acknowledged; return the Socket.IO sid.

    Raises `ConnectError` when the server refused it (``44``).
    """
    state = info(client)

    def now_connected(c: Client) -> bool:  # on the current WebSocket, not a closed one
        conn = state.conn
        return c.ready and state.connected and conn is not None and conn.link is c.link

    await client.wait_until(lambda c: now_connected(c) or state.error is not None, timeout)
    if state.error is not None:
        raise state.error
    assert state.sid is not None
    return state.sid


def _record(client: Client, kind: str, detail: str, *, state: str = "",
            direction: str = "") -> None:
    client.timeline.record(kind, direction=direction, state=state, peer=client.name,
                           detail=detail[:200])


def _write(link: Link | None, text: str, *, force: bool = False) -> bool:
    """Write `text` now, ahead of the outbox; False when the socket cannot take it."""
    ws = link.ws if link is not None else None
    if ws is None or not (ws.writable or force):
        return False
    ws.send([text])
    return True


def _hold(link: Link | None) -> None:
    """Nothing more from the outbox on this link (it is being closed: keep them queued)."""
    if link is not None:
        link.conn.hold_outbox, link.conn.greeting = True, 0


async def _drop(link: Link, code: int, reason: str, wait: float) -> None:
    """Close `link` with `code`; abort if the peer does not finish within `wait` s."""
    _hold(link)
    link.close(code, reason)
    try:
        await asyncio.wait_for(asyncio.shield(link.closed), max(0.05, wait))
    except TimeoutError:
        link.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(link.closed), 1.0)


# ----- the greeting -----------------------------------------------------------------------


async def _greet(client: Client, namespace: str, auth: AuthSource) -> None:
    link = client.link
    if link is None:
        return
    conn = _conn(client)
    state = info(client)
    # This greeting writes its frames itself, ahead of the held outbox.
    budget = client.handshake_timeout * 0.6
    started = time.monotonic()
    step = "the Engine.IO open packet"
    try:
        await asyncio.wait_for(conn.opened.wait(), budget)
        payload = auth() if callable(auth) else auth
        if inspect.isawaitable(payload):
            payload = await payload
        if payload is not None and not isinstance(payload, Mapping):
            raise TypeError(f"Socket.IO auth must be a dict, got {type(payload).__name__}")
        frame = _prefix(0, namespace) + (_dumps(dict(payload)) if payload is not None else "")
        _write(link, frame, force=True)  # ahead of everything queued
        _record(client, "state", f"connect {namespace}" + (" with auth" if payload else ""),
                state="socket.io connect", direction="out")
        step = f"the connect ack for {namespace}"
        left = budget - (time.monotonic() - started)
        await asyncio.wait_for(conn.connected.wait(), max(0.0, left))
    except TimeoutError:
        why = f"socket.io: no {step} within {budget:.1f} s"
        client.last_error = why
        _record(client, "error", why + "; reconnecting")
        await _drop(link, 4408, "socket.io handshake timeout", client.handshake_timeout * 0.3)
        return
    if conn.error is not None:
        state.error = conn.error
        client.last_error = f"socket.io connect_error: {conn.error}"
        reason = f"socket.io connect_error: {conn.error}".encode("ascii", "replace")[:120]
        await _drop(link, 4401, reason.decode(), client.handshake_timeout * 0.3)


# ----- incoming frames --------------------------------------------------------------------


def _intercept(client: Client, frame: Any, namespace: str) -> Any:
    try:
        return _read(client, frame, namespace)
    except ValueError as exc:  # orjson's errors too: shown once per kind, never delivered
        kind = frame[:2] if isinstance(frame, str) else "binary"
        return _unknown(client, repr(kind), frame, f"malformed packet ({exc})")


def _read(client: Client, frame: Any, namespace: str) -> Any:
    conn = _conn(client)
    loop = asyncio.get_running_loop()
    conn.last_life = loop.time()
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return _attachment(client, conn, bytes(frame))
    if not frame:
        return _unknown(client, "", frame)
    kind = frame[0]
    if kind == "4":
        return _socketio(client, conn, frame, namespace)
    if kind == "2":
        _ping(client, conn, frame)
        return CONSUMED
    if kind == "0":
        _open(client, conn, frame)
        return CONSUMED
    if kind == "6":
        return CONSUMED
    if kind == "1":
        _record(client, "state", "the server closed the Engine.IO session",
                state="engine.io close", direction="in")
        conn.leaving = True
        _hold(conn.link)
        if conn.link is not None:
            conn.link.close(1000, "engine.io close")
        return CONSUMED
    return _unknown(client, f"engine.io {kind!r}", frame)


def _open(client: Client, conn: _Conn, frame: str) -> None:
    data = orjson.loads(frame[1:])
    if not isinstance(data, dict):
        raise ValueError(f"engine.io open packet is not an object: {frame[:80]!r}")
    conn.ping_interval = float(data.get("pingInterval", 25000)) / 1000
    conn.ping_timeout = float(data.get("pingTimeout", 20000)) / 1000
    sid = str(data.get("sid", ""))
    info(client).eio_sid = sid
    _record(client, "state", f"sid {sid[:4]}… pingInterval {conn.ping_interval * 1000:g} ms "
            f"pingTimeout {conn.ping_timeout * 1000:g} ms "
            f"maxPayload {data.get('maxPayload', '?')}", state="engine.io open", direction="in")
    conn.opened.set()
    _arm(client, conn)


def _arm(client: Client, conn: _Conn) -> None:
    """Drop the link when nothing (not even a ping) came for pingInterval + pingTimeout.

    Half a second of slack, and at least a second: python-engineio announces
    ``int(interval) * 1000``, so a sub-second interval reads as 0 ms.
    """
    limit = max(conn.ping_interval + conn.ping_timeout, 1.0) + 0.5
    loop = asyncio.get_running_loop()

    def check() -> None:
        conn.watchdog = None
        link = conn.link
        if link is None or link.closed.done() or info(client).conn is not conn:
            return
        quiet = loop.time() - conn.last_life
        if quiet < limit:
            conn.watchdog = loop.call_later(limit - quiet, check)
            return
        _record(client, "error", f"engine.io: no ping for {quiet:.2f} s (pingInterval + "
                f"pingTimeout = {limit:g} s): dead link, reconnecting")
        link.abort()

    if conn.watchdog is None:
        conn.watchdog = loop.call_later(limit, check)


def _ping(client: Client, conn: _Conn, frame: str) -> None:
    state = info(client)
    state.pings += 1
    now = conn.last_life
    if now - state.flood_window >= 1.0:
        if state.flooding and state.flood_count <= FLOOD_PINGS:
            state.flooding = False
        state.flood_window, state.flood_count = now, 0
    state.flood_count += 1
    if state.flood_count == FLOOD_PINGS + 1 and not state.flooding:
        state.flooding = True
        _record(client, "error", f"engine.io ping flood: over {FLOOD_PINGS} pings in 1 s "
                f"(pingInterval {conn.ping_interval * 1000:g} ms); answering, rows "
                "suppressed while it lasts", direction="in")
    pong = "3" + frame[1:]
    if not _write(conn.link, pong):
        state.pongs_skipped += 1  # the socket is backed up: the next ping gets its pong
    elif not state.flooding:
        _record(client, "ping", "engine.io ping", direction="in")
        _record(client, "pong", "engine.io pong", direction="out")


def _unknown(client: Client, kind: str, frame: Any, why: str = "unknown packet type") -> Any:
    """Count a frame the dialect cannot use; one error row per kind (bounded), consumed."""
    state = info(client)
    state.unknown += 1
    if kind not in state.unknown_kinds and len(state.unknown_kinds) < MAX_UNKNOWN_KINDS:
        state.unknown_kinds.add(kind)
        _record(client, "error", f"socketio dialect: {why} {kind} (first seen: "
                f"{str(frame)[:60]!r}); ignored, later ones not shown", direction="in")
    return CONSUMED


def _split(body: str, namespace: str) -> tuple[str, int | None, str]:
    """``/ns,12[...]`` → (namespace, ack id, JSON text)."""
    space = "/"
    if body.startswith("/"):
        comma = body.find(",")
        space, body = (body, "") if comma < 0 else (body[:comma], body[comma + 1:])
        space = space.split("?", 1)[0]
    digits = 0
    while digits < len(body) and body[digits].isdigit() and digits < 20:
        digits += 1
    ack_id = int(body[:digits]) if digits else None
    return space, ack_id, body[digits:]


def _socketio(client: Client, conn: _Conn, frame: str, namespace: str) -> Any:
    if len(frame) < 2:
        return _unknown(client, "socket.io ''", frame)
    kind, body = frame[1], frame[2:]
    if kind not in "0123456":
        return _unknown(client, f"socket.io {kind!r}", frame)
    count = 0
    if kind in "56":
        dash = body.find("-")
        if dash <= 0 or not body[:dash].isdigit() or int(body[:dash]) > MAX_ATTACHMENTS:
            raise ValueError(f"bad binary packet header {frame[:40]!r}")
        count, body = int(body[:dash]), body[dash + 1:]
    space, ack_id, text = _split(body, namespace)
    data = orjson.loads(text) if text else None
    if kind == "2":
        return _event(data, space, ack_id)
    if kind == "3":
        return Ack(data if isinstance(data, list) else [data], ack_id or 0, space)
    if kind in "56":
        conn.binary = (2 if kind == "5" else 3, space, ack_id, data, count, [])
        return CONSUMED if count else _complete(conn)
    if kind == "0":
        state = info(client)
        sid = data.get("sid") if isinstance(data, dict) else None
        if space == namespace:
            state.connected, state.sid, state.error = True, sid, None
            conn.connected.set()
        _record(client, "state", f"namespace {space}", state="socket.io connected",
                direction="in")
        return CONSUMED
    if kind == "4":
        message = data.get("message", data) if isinstance(data, dict) else data
        error = ConnectError(f"{space}: {message}")
        _record(client, "error", f"socket.io connect_error {space}: {message}", direction="in")
        if space == namespace:
            conn.error = info(client).error = error
            conn.connected.set()
        return CONSUMED
    if kind == "1":
        _record(client, "state", f"the server disconnected namespace {space}",
                state="socket.io disconnected", direction="in")
        if space == namespace:
            info(client).connected = False
            conn.leaving = True
            _hold(conn.link)  # what is queued waits for the next connect
            if conn.link is not None:
                conn.link.close(1000, "socket.io server disconnect")
        return CONSUMED
    raise AssertionError(kind)  # pragma: no cover - every kind is handled above


def _event(data: Any, space: str, ack_id: int | None) -> dict[str, Any]:
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError(f"a Socket.IO event is [name, ...args], got {str(data)[:80]}")
    message: dict[str, Any] = {"event": data[0], "args": data[1:]}
    if ack_id is not None:
        message["ack"] = ack_id
    if space != "/":
        message["namespace"] = space
    return message


def _attachment(client: Client, conn: _Conn, data: bytes) -> Any:
    if conn.binary is None:
        return _unknown(client, "binary frame without a 45/46 header", data)
    kind, space, ack_id, payload, count, parts = conn.binary
    parts.append(data)
    if len(parts) < count:
        return CONSUMED
    return _complete(conn)


def _complete(conn: _Conn) -> Any:
    assert conn.binary is not None
    kind, space, ack_id, payload, _, parts = conn.binary
    conn.binary = None

    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            if value.get("_placeholder") is True and isinstance(value.get("num"), int):
                num = value["num"]
                if 0 <= num < len(parts):
                    return parts[num]
            return {k: fill(v) for k, v in value.items()}
        return value

    data = fill(payload)
    if kind == 2:
        return _event(data, space, ack_id)
    return Ack(data if isinstance(data, list) else [data], ack_id or 0, space)


DIALECT = dialect()

__all__ = ["DIALECT", "Ack", "ConnectError", "Info", "SocketIODialect", "ack", "connected",
           "dialect", "disconnect", "emit", "event_frame", "info", "url"]
