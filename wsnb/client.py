"""The reliable asyncio client: readyState, READY, heartbeats, reconnect, outbox, acks.

With ``store=`` the client's half of the session (its outbox, its session id,
the last message it delivered) lives in a session store (`wsnb.store`), so a
crashed or restarted kernel resumes where it was: see `Client` (``store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import random
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import IntEnum
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from wsnb._receipt import Receipt
from wsnb._secret import Secret, masked_url, optional_secret, safe_url, scrub
from wsnb.dialects import CONSUMED, Dialect
from wsnb.dialects import get as get_dialect
from wsnb.errors import AuthError, Backpressure, NotOpen, ProtocolError, Refused
from wsnb.link import Link
from wsnb.loop import LoopChoice, call_on, choose_loop, on_own_loop
from wsnb.protocol import envelope
from wsnb.protocol.backoff import Backoff, ReconnectPolicy
from wsnb.protocol.close import CLOSE_RULES, TLS_RULE, CloseRule, describe_close, upgrade_rule
from wsnb.protocol.connection import (
    Acked,
    Closed,
    Complained,
    Connection,
    Delivered,
    Event,
    Options,
    Ready,
)
from wsnb.protocol.connection import (
    Refused as RefusedEvent,
)
from wsnb.protocol.heartbeat import dead_link_bound
from wsnb.protocol.session import Outgoing, Receiver, Sender, Session
from wsnb.store import (
    Change,
    Outcome,
    StaleSession,
    Store,
    StoredSession,
    StoreError,
    store_from_url,
)
from wsnb.store.base import pending_of, to_session
from wsnb.timeline import Timeline
from wsnb.transport import ConnectOptions, UpgradeFailed, WebSocketProtocol, connect

WhenClosed = Literal["queue", "raise", "drop"]


class ReadyState(IntEnum):
    """The browser's WebSocket.readyState."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: Close codes in words (RFC 6455 and PROTOCOL.md), from the one close-code table.
CLOSE_CODES = {code: rule.words for code, rule in CLOSE_RULES.items()}

#: Default code points per chunk slice (the peer's max_size permitting).
DEFAULT_CHUNK_SIZE = 512 * 1024
#: Serialized payloads over this many bytes are prepared in a worker thread.
BIG_PAYLOAD = 1 << 20


def check_url(url: str) -> str:
    """Accept only ``ws://`` and ``wss://`` URLs; explain the fix otherwise."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        fixed = ("wss" if scheme == "https" else "ws") + url[len(scheme):]
        raise ValueError(
            f"{scheme}:// is not a WebSocket URL for wsnb.Client: only the handshake is HTTP; "
            f"use {safe_url(fixed)} (browsers since 2023 map it for you)")
    if scheme not in ("ws", "wss"):
        raise ValueError(f"WebSocket URLs start with ws:// or wss://, got {safe_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"WebSocket URL has no host: {safe_url(url)!r}")
    return url


class Client:
    """A WebSocket client that keeps its promises across the connection's whole life.

    ``protocol="wsnb"`` speaks docs/protocol.md (handshake, acks, resume);
    ``protocol="raw"`` talks to any server with plain frames (receipts end at
    "written": nothing acks them). Public coroutines may be awaited from any
    event loop or thread.

    With ``store=`` the outbox is durable: `send` returns once the message
    is recorded, and a kernel that crashed (or a new `Client` on the same
    store and ``store_key``) resumes the session, resending what was not
    acked with the same ids (receipts in `recovered`); the server drops
    what it already had. Exactly once end to end needs the server's session
    to survive too (a live server, or one with a durable store).

    Args:
        url: ``ws://`` or ``wss://`` address (credentials and token-like query
            values are masked everywhere they are shown).
        token: sent in the ``handshake`` frame.
        secret: HMAC key; messages are signed and checked (PROTOCOL.md).
        protocol: ``"wsnb"`` or ``"raw"``.
        backoff: reconnect timing (`Backoff`).
        when_closed: ``send`` while not READY: ``"queue"`` (outbox), ``"raise"``
            (`NotOpen`) or ``"drop"``.
        when_full: ``send`` with a full outbox: ``"wait"`` or ``"raise"`` (`Backpressure`).
        max_outbox: messages held (not yet acked) at most.
        max_outbox_bytes: bytes held at most.
        max_message: largest payload, in UTF-8 bytes once serialized.
        max_inbox: messages received and not yet read by `recv`; past it the client
            stops reading and acking (backpressure), never drops.
        chunk_size: code points per chunk slice for large messages.
        compress_min: payloads at least this many bytes are compressed when smaller
            (None: never).
        heartbeat: send pings and watch for a dead link.
        handshake_timeout: seconds to wait for ``handshake_ack``.
        open_timeout: seconds for TCP, TLS and the HTTP upgrade.
        ssl: TLS context for ``wss://`` (e.g. to trust a private CA).
        compression: ``"deflate"`` to offer permessage-deflate.
        raw_ping_interval: raw mode: seconds between WebSocket pings (RTT), None: off.
        headers: extra HTTP headers for the upgrade (e.g. ``Authorization``).
        cookies: cookies for the upgrade (sent as one ``Cookie`` header, as a browser does).
        subprotocols: subprotocols offered (``Sec-WebSocket-Protocol``).
        origin: the ``Origin`` header.
        final_codes: close codes after which not to reconnect (added to 1000, 1008, 4401).
        retry_codes: close codes after which to reconnect even if normally final
            (e.g. ``{1000}`` for a server that closes idle clients with 1000).
        on_message: called with each message (sync or async) instead of the inbox.
        on_open: called with the client after every (re)connect, before the outbox
            flushes (sync or async): re-authenticate, resubscribe, send a protocol's
            greeting. What it sends goes out first (raw mode) or in id order (wsnb).
        reply_key: how `request` pairs replies with requests: a field name (the
            application's own id, e.g. ``"id"`` for JSON-RPC) or a function
            ``payload -> key`` (None when a message is not a reply).
        max_requests: requests awaiting a reply at most.
        dialect: an application protocol spoken over raw mode (``"jsonrpc"``,
            ``"graphql-transport-ws"``, ``"socketio"`` or a `wsnb.dialects.Dialect`):
            its greeting, heartbeats, request/reply pairing, subprotocol and final
            close codes. Implies ``protocol="raw"``.
        decode: raw mode: ``"text"`` delivers text frames exactly as sent; ``"json"``
            parses them strictly (RFC 8259) and delivers text that is not JSON as is.
        timeline: where events are recorded (a new `Timeline` by default).
        loop: ``"auto"`` (wsnb's loop thread in a notebook), ``"thread"``, ``"current"``
            or an event loop.
        seed: seeds the backoff jitter (reproducible runs).
        name: the ``peer`` column of this client's timeline rows.
        store: where the client's half of the session is kept (None: in memory
            only, as before): a URL (``"sqlite:///abs/path.db"``, ``"redis://..."``,
            `wsnb.store`) or a `Store`. Parsed here (a bad URL raises `StoreError`),
            opened by the first `connect` or `send` (an unreachable store raises
            `StoreError` naming it). What it guarantees: a message whose `send`
            returned survives a crash and is resent after the restart with the
            same id, so the server delivers it once; the store records an
            incoming message as delivered only once the application took it (the
            sync `on_message` returned, the async one finished, or `recv`
            returned it) and the ack waits for that record, so **the ack never
            runs ahead of the store**. A crash after the application took a
            message but before the record means the server resends it and the
            application gets it again: delivery to your handler is
            **at-least-once across a crash** unless the handler is idempotent.
            `close` keeps un-acked messages in the store (their receipts fail
            here; the next client on the store resends them), then flushes and
            closes a store it opened from a URL (a `Store` you passed is only
            flushed). Needs ``protocol="wsnb"``.
        store_key: the name of this client's record in the store: one owner at
            a time. Claiming it (the first `connect`) fences out any earlier
            owner, in this process or another; the fenced client stops with
            `StaleSession` ("store key ... was taken by another process").
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | Secret | None = None,
        secret: str | bytes | Secret | None = None,
        protocol: Literal["wsnb", "raw"] = "wsnb",
        backoff: Backoff | None = None,
        when_closed: WhenClosed = "queue",
        when_full: Literal["wait", "raise"] = "wait",
        max_outbox: int = 10_000,
        max_outbox_bytes: int = 64 * 1024 * 1024,
        max_message: int = 64 * 1024 * 1024,
        max_inbox: int = 100_000,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compress_min: int | None = 64 * 1024,
        heartbeat: bool = True,
        handshake_timeout: float = 10.0,
        open_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        compression: Literal["deflate"] | None = None,
        raw_ping_interval: float | None = 20.0,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        subprotocols: Iterable[str] = (),
        origin: str | None = None,
        cookies: Mapping[str, str] | None = None,
        final_codes: Iterable[int] = (),
        retry_codes: Iterable[int] = (),
        on_message: Callable[[Any], Awaitable[None] | None] | None = None,
        on_open: Callable[[Client], Awaitable[None] | None] | None = None,
        reply_key: str | Callable[[Any], Any] = "id",
        max_requests: int = 10_000,
        decode: Literal["text", "json"] = "text",
        dialect: str | Dialect | None = None,
        timeline: Timeline | None = None,
        loop: LoopChoice = "auto",
        seed: int | None = None,
        name: str = "client",
        store: str | Store | None = None,
        store_key: str = "client",
    ) -> None:
        self._url = Secret(check_url(url))  # a query string may carry a token
        self.dialect = get_dialect(dialect) if dialect is not None else None
        if self.dialect is not None:
            protocol = "raw"
            subprotocols = [*subprotocols, *self.dialect.subprotocols]
            final_codes = {*final_codes, *self.dialect.final_codes}
            retry_codes = {*retry_codes, *self.dialect.retry_codes}
            if self.dialect.reply_key is not None:
                reply_key = self.dialect.reply_key
        if protocol not in ("wsnb", "raw"):
            raise ValueError(f'protocol must be "wsnb" or "raw", not {protocol!r}')
        if store is not None and protocol == "raw":
            raise ValueError("store= needs protocol='wsnb': raw mode has no acks, so nothing "
                             "says when a stored message may be forgotten")
        if not isinstance(store_key, str) or not store_key:
            raise ValueError(f"store_key must be a non-empty str, got {store_key!r}")
        if when_closed not in ("queue", "raise", "drop"):
            raise ValueError(f'when_closed must be "queue", "raise" or "drop", not {when_closed!r}')
        if when_full not in ("wait", "raise"):
            raise ValueError(f'when_full must be "wait" or "raise", not {when_full!r}')
        for label, value in (("max_outbox", max_outbox), ("max_outbox_bytes", max_outbox_bytes),
                             ("max_message", max_message), ("max_inbox", max_inbox),
                             ("chunk_size", chunk_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an int >= 1, got {value!r}")
        secure = urlsplit(url).scheme.lower() == "wss"
        if ssl is not None and not secure:
            raise ValueError("ssl= is only for wss:// URLs")
        self._ssl = ssl
        self._token = optional_secret(token)
        self._secret = optional_secret(secret)
        self.protocol = protocol
        self.backoff = backoff or Backoff()
        self.when_closed: WhenClosed = when_closed
        self.when_full = when_full
        self.max_message = max_message
        self.max_inbox = max_inbox
        self.compress_min = compress_min
        self.heartbeat = heartbeat
        self.handshake_timeout = handshake_timeout
        self.open_timeout = open_timeout
        self.compression = compression
        self.raw_ping_interval = raw_ping_interval
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        if cookies:
            for name, text in cookies.items():
                if any(c in f"{name}{text}" for c in ";,\r\n") or "=" in name:
                    raise ValueError(f"cookie {name!r} holds a character a Cookie header "
                                     "cannot carry (; , = or a line break)")
            self.headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        self.subprotocols = list(subprotocols)
        self.origin = origin
        self.on_message = on_message
        self.on_open = on_open
        #: the dialect's greeting first, then the user's own hook
        self._open_hooks = [hook for hook in (self.dialect.on_open if self.dialect else None,
                                              on_open) if hook is not None]
        #: per-client state a dialect keeps (subscriptions, negotiated values)
        self.dialect_state: dict[str, Any] = {}
        self._on_open_task: asyncio.Task[None] | None = None
        self.reply_key = reply_key
        self.max_requests = max_requests
        if decode not in ("text", "json"):
            raise ValueError(f'decode must be "text" or "json", not {decode!r}')
        self.decode = decode
        self._requests: dict[Any, tuple[asyncio.Future[Any], float, Receipt]] = {}
        self._greeting: list[Any] | None = None  # messages on_open sends, while it runs
        self._request_ids = 0
        self.name = name
        self.timeline = timeline if timeline is not None else Timeline()
        self._loop = choose_loop(loop)
        self._rng = random.Random(seed)
        self._options = Options(
            secret=self._secret.as_bytes() if self._secret else None,
            raw=protocol == "raw", chunk_size=chunk_size, max_size=max_message + 4096,
            max_message=max_message, send_pings=heartbeat, watch_dead_link=heartbeat,
            handshake_timeout=handshake_timeout, final_codes=frozenset(final_codes),
            retry_codes=frozenset(retry_codes))
        self.session = Session(Sender(max_outbox, max_outbox_bytes), Receiver(max_held=max_outbox))
        #: the session store (None without ``store=``); parsed now, opened by connect/send
        self.store: Store | None = store_from_url(store) if store is not None else None
        self.store_key = store_key
        #: receipts of the un-acked messages restored from the store, in id order
        self.recovered: list[Receipt] = []
        self._store_source = store
        self._store_opened = False  # open() was called on self.store: close() releases it
        self._store_claimed = False  # we own store_key at _store_generation
        self._store_closed = False  # close() released a store we opened: make a new one
        self._store_generation = 0
        self._store_error: StoreError | None = None
        self._store_lock: asyncio.Lock | None = None
        self._store_jobs: set[asyncio.Future[Outcome]] = set()
        # Delivery marks live in "store space": the wire id plus the `_base` of the wire
        # session (the mark when that session began), so they only ever go up while wire
        # ids restart at 1 in a new session; the base is kept with the session id.
        self._base = 0
        self._mark_hw = 0  # highest mark handed to the application (or skipped)
        self._mark_sent = 0  # highest mark submitted to the store
        self._held_marks: deque[int] = deque()  # in the inbox or a running async handler
        self._renumber_seq = 0
        self._held_for_renumber: set[Outgoing] = set()  # written only once renumber is stored
        self.link: Link | None = None
        self.ready_state = ReadyState.CLOSED
        self.ready = False
        self.resumed = False
        self.durable = False
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_error = ""
        self.reconnects = 0
        self.attempt = 0
        self.next_retry_at: float | None = None
        self.server_heartbeat_ms = 0
        self.handshake_response: Any = None  # the HTTP response of the last upgrade
        self.inbox: deque[Any] = deque()
        self.counters_base = dict.fromkeys(
            ("sent", "written", "acked", "resent", "nacked", "received", "duplicates"), 0)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stop_error: Exception | None = None
        self._changed = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._room = asyncio.Event()
        self._handler_busy = False

    # ----- what users look at ---------------------------------------------

    @property
    def url(self) -> str:
        """The server URL, with credentials and token-like query values masked."""
        return safe_url(str(self._url.reveal()))

    @url.setter
    def url(self, url: str) -> None:
        self._url = Secret(check_url(url))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this client runs on (panels schedule their commands there)."""
        return self._loop

    @property
    def has_token(self) -> bool:
        """Whether a token is set (the token itself is never shown)."""
        return self._token is not None

    def set_token(self, token: str | Secret | None) -> None:
        """Use `token` from the next handshake on."""
        self._token = optional_secret(token)

    @property
    def session_id(self) -> str | None:
        """The session id from the last ``handshake_ack`` (None before the first)."""
        return self.session.id

    def __repr__(self) -> str:
        ready = " READY" if self.ready else ""
        return (f"<wsnb.Client {masked_url(self.url)} {self.ready_state.name}{ready} "
                f"protocol={self.protocol} pending={self.pending}>")

    @property
    def buffered_amount(self) -> int:
        """Bytes not yet written plus bytes not yet acked (the browser's bufferedAmount)."""
        return self.session.sender.held_bytes

    @property
    def pending(self) -> int:
        """Messages sent and not yet acked (or, in raw mode, not yet written)."""
        return self.session.sender.pending

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time from the last ping/pong (WebSocket pings in raw mode)."""
        link = self.link
        if link is None:
            return self._last_rtt
        return link.rtt_ms if link.rtt_ms is not None else link.conn.rtt_ms

    _last_rtt: float | None = None

    @property
    def counters(self) -> dict[str, int]:
        """sent, written, acked, resent, nacked, received, duplicates, reconnects, pending."""
        counts = self.timeline.counts()
        return {"sent": counts.get("sent", 0), "written": counts.get("written", 0),
                "acked": counts.get("acked", 0), "resent": counts.get("resent", 0),
                "nacked": counts.get("nack", 0), "received": counts.get("received", 0),
                "duplicates": self.session.receiver.duplicates,
                "reconnects": self.reconnects, "pending": self.pending,
                "dropped": counts.get("dropped", 0)}

    @property
    def close_text(self) -> str:
        """The last close code and reason in words."""
        return describe_close(self.close_code, self.close_reason)

    @property
    def next_retry_in(self) -> float | None:
        """Seconds until the next reconnect attempt, or None if none is scheduled."""
        if self.next_retry_at is None:
            return None
        return max(0.0, self.next_retry_at - time.monotonic())

    # ----- commands ---------------------------------------------------------

    @on_own_loop
    async def connect(self, timeout: float | None = 30.0) -> Client:
        """Start connecting (and reconnecting); return once READY (OPEN in raw mode).

        With a store, it is opened and ``store_key`` claimed first (the session
        restored from it); `StoreError` says why if that fails.
        """
        if self._task is None or self._task.done():
            if self.store is not None:
                self._store_error = None
                await self._ensure_store()
            self._closing = False
            self._stop_error = None
            self._close_requested.clear()
            self._task = asyncio.ensure_future(self._supervise())
        try:
            await self._wait(lambda: self.ready or self._stop_error is not None, timeout)
        except TimeoutError:
            cause = f": {self.last_error}" if self.last_error else ""
            raise TimeoutError(
                f"{masked_url(self.url)} not READY within {timeout} s{cause} "
                "(still retrying in the background; call close() to stop)") from None
        if self._stop_error is not None:
            raise self._stop_error
        return self

    def _prepare_big(self, payload: Any) -> tuple[str, int]:
        text = envelope.payload_text_batched(payload) if self._secret is None else ""
        return self._finish(payload, text)

    def _finish(self, payload: Any, text: str) -> tuple[str, int]:
        """Signed form (JCS), size check, compression: in a thread for big payloads."""
        if self._secret is not None:
            text = envelope.payload_text(payload, canonical=True)
        size = envelope.utf8_size(text)
        if size > self.max_message:
            raise ValueError(f"payload is {size} bytes serialized (UTF-8); the limit is "
                             f"max_message={self.max_message}")
        return envelope.maybe_compress(text, self.compress_min)

    async def send(self, payload: Any) -> Receipt:
        """Accept `payload` into the outbox; ``await`` the receipt to wait for its ack.

        Raises `TypeError`/`ValueError` naming the bad value's path for
        non-JSON payloads (nothing is sent), `NotOpen` with
        ``when_closed="raise"`` while not READY, `Backpressure` with
        ``when_full="raise"`` while the outbox is full; otherwise waits for room.
        Large payloads are serialized, compressed and signed in a worker
        thread, so the event loop keeps answering heartbeats.
        """
        data: str | bytes
        z = 0
        if self.protocol == "raw":
            if isinstance(payload, (bytes, bytearray, memoryview)):
                data = bytes(payload)
            else:
                data = payload if isinstance(payload, str) else envelope.payload_text(payload)
        else:
            if _looks_big(payload):  # serialized in a thread, in short steps
                data, z = await asyncio.to_thread(self._prepare_big, payload)
            else:
                text = envelope.payload_text(payload)
                if len(text) > BIG_PAYLOAD:  # a big value one level deeper
                    data, z = await asyncio.to_thread(self._finish, payload, text)
                else:
                    data, z = self._finish(payload, text)
        return await call_on(self._loop, self._enqueue(data, z))

    async def _enqueue(self, data: str | bytes, z: int) -> Receipt:
        if self.store is not None:
            if self._store_error is not None:  # stopped: connect() again to take over
                raise self._store_error
            await self._ensure_store()
        if not self.ready:
            where = f"not READY (readyState {self.ready_state.name})"
            if self.when_closed == "raise":
                self.timeline.record("error", direction="out", size=len(data), peer=self.name,
                                     detail=f"send refused: client {where} (when_closed='raise')")
                raise NotOpen(f"client is {where}; send refused (when_closed='raise')")
            if self.when_closed == "drop":
                self.timeline.record("dropped", direction="out", size=len(data), peer=self.name,
                                     detail=f"client {where}: when_closed='drop'")
                receipt = Receipt(0, "queued")
                receipt._settle("dropped", Refused("dropped", f"client {where}"))
                return receipt
        size = envelope.utf8_size(data) if isinstance(data, str) else len(data)
        sender = self.session.sender
        while not sender.has_room(size):
            if self.when_full == "raise":
                raise Backpressure(
                    f"outbox full: {self.pending} messages, {self.buffered_amount} bytes held "
                    f"(limits {sender.max_messages} messages, {sender.max_bytes} bytes)")
            self._room.clear()
            await self._room.wait()
        stored = self._store_claimed
        out = sender.add(data, time.monotonic(), z=z, size=size,  # type: ignore[arg-type]
                         binary=isinstance(data, bytes), saved=not stored)
        out.handle = receipt = Receipt(out.id, raw=self.protocol == "raw")
        if stored:  # recorded before it may be written, and before send() returns
            self.timeline.record("sent", direction="out", id=out.id, size=size, peer=self.name)
            job = self._store_write(Change(self.store_key, self._store_generation,
                                           outgoing=(pending_of(out),)))
            job.add_done_callback(lambda done: self._store_saved(out, done))
            with contextlib.suppress(Exception):
                await asyncio.shield(job)
            error = _job_error(job)
            if error is not None:
                raise self._store_error or error
            if not self.ready:
                self.timeline.record("queued", direction="out", id=out.id, size=size,
                                     peer=self.name, detail="not READY: held in outbox")
            return receipt  # _store_saved kicks the link
        greeting = (self._greeting is not None and self.protocol == "raw"
                    and asyncio.current_task() is self._on_open_task)
        if greeting:
            assert self._greeting is not None
            # on_open's greeting jumps the queue: raw ids are only local counters
            sender.unsent.pop()
            sender.unsent.insert(len(self._greeting), out)
            self._greeting.append(out)
        self.timeline.record("sent", direction="out", id=out.id, size=size, peer=self.name)
        if not self.ready:
            self.timeline.record("queued", direction="out", id=out.id, size=size,
                                 peer=self.name, detail="not READY: held in outbox")
        elif self.link is not None:
            if greeting:
                self.link.conn.greeting += 1  # the greeting goes out, the rest stays held
            self.link.kick()
        return receipt

    def _key_of(self, payload: Any) -> Any:
        """The application's id in `payload` under `reply_key` (None if it has none)."""
        if callable(self.reply_key):
            try:
                return self.reply_key(payload)
            except Exception:  # a rule that does not apply to this message
                return None
        return payload.get(self.reply_key) if isinstance(payload, dict) else None

    async def request(self, payload: Any, timeout: float | None = 10.0) -> Any:
        """Send `payload` and return the reply that carries the same application id.

        The id is read with `reply_key` (a field such as ``"id"``, or a function),
        from the request and from every incoming message; the matching reply is
        returned (parsed JSON, or the text in raw mode when it is not JSON) and
        is not put in the inbox. The timeline gets ``request`` and ``reply``
        rows with the id and the latency (`Timeline.requests`). In raw mode the
        request's receipt becomes "acked" when its reply arrives: nothing else
        confirms that a raw message was received.
        """
        dialect = self.dialect
        if dialect is not None and dialect.make_request is not None:
            self._request_ids += 1
            key = self._request_ids
            payload = dialect.make_request(payload, key)
        elif dialect is not None and dialect.request_key is not None:
            key = dialect.request_key(payload)
        else:
            key = self._key_of(payload)
        if key is None or isinstance(key, (dict, list)):
            raise ValueError(f"request payload has no usable id under reply_key="
                             f"{self.reply_key!r} (got {key!r})")
        return await call_on(self._loop, self._request(payload, key, timeout))

    async def _request(self, payload: Any, key: Any, timeout: float | None) -> Any:
        if key in self._requests:
            raise ValueError(f"a request with id {key!r} is already waiting for its reply")
        if len(self._requests) >= self.max_requests:
            raise Backpressure(f"{len(self._requests)} requests wait for replies "
                               f"(max_requests={self.max_requests})")
        future: asyncio.Future[Any] = self._loop.create_future()
        receipt = await self.send(payload)
        self._requests[key] = (future, time.monotonic(), receipt)
        self.timeline.record("request", direction="out", id=receipt.id or None,
                             peer=self.name, detail=f"id={key!r}"[:200])
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self.timeline.record("error", peer=self.name,
                                 detail=f"no reply to request id={key!r} within {timeout} s")
            raise TimeoutError(f"no reply to request id={key!r} within {timeout} s") from None
        finally:
            self._requests.pop(key, None)

    def _match_reply(self, payload: Any) -> bool:
        """Resolve the request `payload` answers; True if it was a reply to one."""
        value = payload
        if callable(self.reply_key):
            pass  # a rule (or dialect) that reads the frame as it came
        elif isinstance(payload, (str, bytes)) and self.protocol == "raw":
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return False
        key = self._key_of(value)
        if key is None or isinstance(key, (dict, list)):
            return False
        waiting = self._requests.get(key)
        if waiting is None:
            if self._requests or self.dialect is not None:
                self.timeline.record("error", direction="in", peer=self.name,
                                     detail=f"a reply with id={key!r} matches no request"[:200])
            return False
        future, started, receipt = waiting
        latency = (time.monotonic() - started) * 1000
        self.timeline.record("reply", direction="in", id=receipt.id or None, peer=self.name,
                             detail=f"id={key!r}"[:200], latency_ms=latency)
        if self.protocol == "raw" and receipt.state == "written":
            receipt.state, receipt.latency_ms = "acked", latency  # confirmed by its reply
        if not future.done():
            future.set_result(value)
        return True

    @on_own_loop
    async def recv(self, timeout: float | None = None) -> Any:
        """The next message from the server, in order, exactly once."""
        await self._wait(lambda: bool(self.inbox), timeout, what="a message")
        message = self.inbox.popleft()
        self._grant()
        if self._store_claimed:
            self._store_progress()
        return message

    @on_own_loop
    async def drain(self, timeout: float | None = 10.0) -> None:
        """Wait until every sent message is acked (written, in raw mode)."""
        await self._wait(lambda: self.session.sender.pending == 0, timeout,
                         what=lambda: f"all acks ({self.pending} pending)")

    @on_own_loop
    async def wait_until(self, predicate: Callable[[Client], bool],
                         timeout: float | None = 10.0) -> None:
        """Wait until ``predicate(client)`` is true, re-checked on every change."""
        await self._wait(lambda: predicate(self), timeout, what="the condition")

    async def wait_state(self, state: ReadyState, timeout: float | None = 10.0) -> None:
        """Wait until `ready_state` is `state`."""
        await self.wait_until(lambda c: c.ready_state == state, timeout)

    @on_own_loop
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good: no reconnect; un-acked messages are dropped and their receipts fail.

        With a store they stay recorded there (the next client on the store
        resends them); the store is flushed, and closed if the client opened it.
        """
        self._closing = True
        self._close_requested.set()
        if self._task is not None and not self._task.done():
            self._set_state(ReadyState.CLOSING)
            link = self.link
            if link is not None:
                link.close(code, reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(link.closed), 3)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._store_claimed:
            self._fail_held("dropped", "client closed by the user (kept in the store: resent "
                            f"by the next client on store_key={self.store_key!r})",
                            NotOpen("client closed before the message was acked; it stays in "
                                    f"the store under store_key={self.store_key!r}"))
        else:
            self._fail_held("dropped", "client closed by the user",
                            NotOpen("client closed before the message was acked"))
        if self.store is not None and self._store_opened:
            await self._release_store()
        if self.close_code != code or self.ready_state != ReadyState.CLOSED:
            self.close_code, self.close_reason = code, reason
            self.timeline.record("close", peer=self.name, detail=describe_close(code, reason))
        self._set_ready(False)
        self._set_state(ReadyState.CLOSED)

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def disconnect_now(self) -> None:
        """Drop the transport abruptly, as a network fault would (reconnect follows)."""
        link = self.link
        if link is not None:
            self._loop.call_soon_threadsafe(link.abort)

    # ----- internals ----------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, predicate: Callable[[], bool], timeout: float | None,
                    what: str | Callable[[], str] = "READY") -> None:
        async def waiter() -> None:
            while not predicate():
                await self._changed.wait()

        try:
            await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            text = what() if callable(what) else what
            raise TimeoutError(f"no {text} within {timeout} s") from None

    def _set_state(self, state: ReadyState, detail: str = "") -> None:
        if state != self.ready_state:
            self.ready_state = state
            self.timeline.record("state", state=state.name, peer=self.name, detail=detail)
            self._notify()

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self.timeline.record("state", state="READY" if ready else "NOT_READY",
                                 peer=self.name)
            self._notify()

    def _fail_held(self, state: str, why: str, error: Exception, *,
                   forget: bool = False) -> None:
        dropped = self.session.sender.clear()
        if forget and dropped and self._store_claimed:  # failed for good: not resent later
            self._store_forget(tuple(out.id for out in dropped))
        self._held_for_renumber.clear()
        for out in dropped:
            self.timeline.record("dropped", direction="out", id=out.id, size=out.size,
                                 peer=self.name, detail=why)
            if out.handle is not None:
                out.handle._settle(state, error)
        self._room.set()
        self._notify()

    def _grant(self) -> None:
        """Tell the connection how many more messages the application can take."""
        link = self.link
        if link is None:
            return
        if self.on_message is None:
            link.conn.grant(max(0, self.max_inbox - len(self.inbox)))
        elif self._handler_busy:
            link.conn.grant(0)
        else:
            link.conn.grant(None if not self._async_handler else 1)
        link.pump()

    @property
    def _async_handler(self) -> bool:
        return self.on_message is not None and inspect.iscoroutinefunction(self.on_message)

    def _on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is Acked or kind is RefusedEvent:
            if self._store_claimed:
                if isinstance(event, Acked):
                    self._store_forget(tuple(out.id for out in event.messages))
                elif isinstance(event, RefusedEvent):
                    self._store_forget((event.message.id,))
            self._room.set()
            self._notify()
        elif kind is Delivered:
            assert isinstance(event, Delivered)
            self._deliver(event)
        elif kind is Ready:
            assert isinstance(event, Ready)
            self._on_ready(event)
        elif kind is Closed:
            assert isinstance(event, Closed)
            self._closed_event = event
        else:
            if kind is Complained and self._store_claimed:  # a nacked id counts as consumed
                self._store_progress(self._base + self.session.receiver.last_delivered)
            self._notify()

    _closed_event: Closed | None = None
    _policy: ReconnectPolicy | None = None

    def _deliver(self, event: Delivered) -> None:
        messages = event.messages
        intercept = self.dialect.intercept if self.dialect is not None else None
        if intercept is not None:
            seen = []
            for msg_id, payload in messages:
                try:
                    value = intercept(self, payload)
                except Exception as exc:  # a frame the dialect cannot read: shown, delivered
                    self.timeline.record("error", direction="in", id=msg_id, peer=self.name,
                                         detail=f"{self.dialect.name if self.dialect else ''}: "
                                                f"{type(exc).__name__}: {exc}"[:200])
                    value = payload
                if value is not CONSUMED:
                    seen.append((msg_id, value))
            messages = tuple(seen)  # the dialect's own frames (heartbeats) are not "received"
        record = self.timeline.record
        for msg_id, _ in messages:
            record("received", direction="in", id=msg_id, peer=self.name)
        if self.decode == "json" and self.protocol == "raw":
            messages = tuple((i, _strict_json(p)) for i, p in messages)
        if self._requests or self.dialect is not None:
            messages = tuple(m for m in messages if not self._match_reply(m[1]))
        stored = self._store_claimed
        base = self._base
        if self.on_message is None:
            self.inbox.extend(payload for _, payload in messages)
            if stored:  # recorded as delivered once recv() returns it
                self._held_marks.extend(base + msg_id for msg_id, _ in messages)
        elif not self._async_handler:
            for _, payload in messages:
                self._call_handler(payload)
        elif messages:
            self._handler_busy = True
            marks = [base + msg_id for msg_id, _ in messages] if stored else None
            if marks is not None:
                self._held_marks.extend(marks)
            asyncio.ensure_future(self._run_handler([p for _, p in messages], marks))
        if stored:
            self._store_progress(base + self.session.receiver.last_delivered)
        self._notify()

    def _call_handler(self, payload: Any) -> None:
        assert self.on_message is not None
        try:
            self.on_message(payload)
        except Exception as exc:  # a handler bug is shown, never kills the client
            self.timeline.record("error", peer=self.name,
                                 detail=f"on_message raised {type(exc).__name__}: {exc}"[:200])

    async def _run_handler(self, payloads: list[Any], marks: list[int] | None = None) -> None:
        assert self.on_message is not None
        for index, payload in enumerate(payloads):
            try:
                result = self.on_message(payload)
                if result is not None:
                    await result
            except Exception as exc:
                self.timeline.record("error", peer=self.name,
                                     detail=f"on_message raised {type(exc).__name__}: {exc}"[:200])
            if marks is not None:  # (store) this one is done: it may be recorded
                held = self._held_marks
                if held and held[0] == marks[index]:
                    held.popleft()
                self._store_progress()
        self._handler_busy = False
        self._grant()

    def _on_ready(self, event: Ready) -> None:
        if self._store_claimed and not event.resumed:
            self._store_new_session(event)
        if event.lost:
            self.timeline.record("error", peer=self.name, detail=(
                f"session lost on the server: {event.renumbered} un-acked messages renumbered "
                "and resent (at-least-once across the lost session)"))
        self.resumed = event.resumed
        self.durable = event.durable
        self.server_heartbeat_ms = event.heartbeat_ms
        self._became_ready()  # before the link flushes the outbox: READY precedes "written"
        self._start_on_open()

    def _start_on_open(self) -> None:
        """Run `on_open` before anything queued is written (the outbox is held)."""
        link = self.link
        if not self._open_hooks or link is None:
            return
        link.conn.hold_outbox, link.conn.greeting = True, 0
        self._greeting = []
        self._on_open_task = asyncio.ensure_future(self._run_on_open(link))

    async def _run_on_open(self, link: Link) -> None:
        try:
            for hook in self._open_hooks:
                result = hook(self)
                if result is not None:  # in this task: its sends are the greeting
                    async with asyncio.timeout(self.handshake_timeout):
                        await result
        except Exception as exc:  # shown, and the outbox is released all the same
            self.timeline.record("error", peer=self.name,
                                 detail=f"on_open raised {type(exc).__name__}: {exc}"[:200])
        finally:
            self._greeting = None
            link.conn.hold_outbox = False
            link.pump()

    def _became_ready(self) -> None:
        self.last_error = ""
        if self._policy is not None:
            self._policy.on_ready(time.monotonic())
        self._set_ready(True)
        self._room.set()

    async def _supervise(self) -> None:
        policy = self._policy = ReconnectPolicy(self.backoff, self._rng)
        first = True
        try:
            while not self._closing:
                if self.store is not None and not first and not await self._store_still_ours():
                    return
                first = False
                self.next_retry_at = None
                self._set_state(ReadyState.CONNECTING)
                code, reason, rule, hint = await self._connect_once(policy)
                self._set_ready(False)
                if self._closing:
                    break
                self.close_code, self.close_reason = code, reason
                self.timeline.record("close", peer=self.name, detail=describe_close(code, reason)
                                     if code is not None else reason)
                words = describe_close(code, reason) if code is not None else reason
                if rule.auth:
                    self._stop_error = AuthError(f"server refused the credentials: {words}")
                delay = policy.on_close(rule, time.monotonic(), hint)
                self.attempt = policy.attempt
                if delay is None:
                    self._fail_held("refused", f"closed for good: {words}",
                                    Refused("closed", words), forget=True)
                    self._set_state(ReadyState.CLOSED, detail="not reconnecting")
                    if self._stop_error is None:
                        self._stop_error = NotOpen(f"closed: {words}")
                    self._notify()
                    return
                self.next_retry_at = time.monotonic() + delay
                self._set_state(ReadyState.CLOSED, detail=f"reconnect in {delay:.2f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), delay)
                self.reconnects += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never vanish: show it on the timeline
            self.last_error = scrub(f"{type(exc).__name__}: {exc}", str(self._url.reveal()))
            self.timeline.record("error", peer=self.name, detail=self.last_error[:200])
            self._stop_error = RuntimeError(self.last_error)
            self._set_state(ReadyState.CLOSED)
            self._notify()

    # ----- the session store (store=) --------------------------------------------

    @property
    def _store_label(self) -> str:
        url = self.store.url if self.store is not None else ""
        return safe_url(url) if "@" in url else url  # never show a password

    async def _ensure_store(self) -> None:
        """Open the store and claim ``store_key`` once (first `connect` or `send`)."""
        if self.store is None or self._store_claimed:
            return
        if self._store_lock is None:
            self._store_lock = asyncio.Lock()
        async with self._store_lock:
            if not self._store_claimed:
                await self._claim_store()

    async def _claim_store(self) -> None:
        assert self._store_source is not None
        if self._store_closed:  # close() released the one we opened: a new handle
            self.store = store_from_url(self._store_source)
            self._store_closed = False
        store = self.store
        assert store is not None
        key = self.store_key
        self._store_opened = True  # even if open() fails: close() releases its thread
        try:
            await store.open()
            record = await store.claim(key, create=StoredSession(key, None))
        except StoreError:
            raise
        except Exception as exc:  # a driver error: say which store
            raise StoreError(f"{self._store_label}: cannot open: "
                             f"{type(exc).__name__}: {exc}") from exc
        if record is None:
            raise StoreError(f"{self._store_label}: claiming store_key={key!r} returned nothing")
        self._restore(record)

    def _restore(self, record: StoredSession) -> None:
        """Rebuild the protocol session from `record`; un-acked messages get receipts."""
        wire_id, base = _split_stored_id(record.session_id, record.last_delivered)
        delivered = max(0, record.last_delivered - base)
        old = self.session
        self.session = to_session(
            dataclasses.replace(record, session_id=wire_id, last_delivered=delivered),
            Sender(old.sender.max_messages, old.sender.max_bytes),
            Receiver(max_held=old.receiver.max_held))
        self._store_generation = record.generation
        self._store_claimed = True
        self._base = base
        self._mark_hw = base + delivered
        self._mark_sent = record.last_delivered
        # Messages not yet taken from the inbox were not recorded: the server resends them.
        self._held_marks.clear()
        self.inbox.clear()
        self._held_for_renumber.clear()
        self.recovered = []
        for out in self.session.sender.unsent:
            out.handle = receipt = Receipt(out.id)
            self.recovered.append(receipt)
            self.timeline.record("queued", direction="out", id=out.id, size=out.size,
                                 peer=self.name, detail="restored from the store: resent on READY")
        where = f"session {wire_id[:8]}…" if wire_id else "no session yet"
        self.timeline.record(
            "state", state="RESTORED", peer=self.name,
            detail=f"restored {len(self.recovered)} un-acked messages from {self._store_label} "
                   f"(store_key={self.store_key!r}, {where}, delivered up to {delivered}, "
                   f"generation {record.generation})")

    def _store_write(self, change: Change) -> asyncio.Future[Outcome]:
        """Commit `change` in call order (tasks start FIFO); the future holds the outcome."""
        assert self.store is not None
        job: asyncio.Future[Outcome] = asyncio.ensure_future(self.store.commit(change))
        self._store_jobs.add(job)
        job.add_done_callback(self._store_jobs.discard)
        return job

    def _store_forget(self, ids: tuple[int, ...]) -> None:
        """Acked or refused: drop from the store without waiting (a lost forget costs a
        resend the server drops); a failure, a fencing one above all, still stops us."""
        job = self._store_write(Change(self.store_key, self._store_generation, forget=ids))
        job.add_done_callback(self._store_checked)

    def _store_checked(self, job: asyncio.Future[Outcome]) -> None:
        error = _job_error(job)
        if error is not None:
            self._store_failed(error)

    def _store_saved(self, out: Outgoing, job: asyncio.Future[Outcome]) -> None:
        """The message is recorded: it may be written now (unless a renumber is pending)."""
        error = _job_error(job)
        if error is not None:
            self._store_failed(error)
            return
        if out not in self._held_for_renumber:
            out.saved = True
        link = self.link
        if link is not None and self.ready:
            link.kick()

    def _store_progress(self, delivered: int | None = None) -> None:
        """Record as delivered every mark the application has taken (`delivered`: the
        mark of the last message handed up, or skipped)."""
        if not self._store_claimed:
            return
        if delivered is not None and delivered > self._mark_hw:
            self._mark_hw = delivered
        held = self._held_marks
        if self.on_message is None:  # the inbox: what recv() (or anyone) took is done
            while len(held) > len(self.inbox):
                held.popleft()
        target = held[0] - 1 if held else self._mark_hw
        if target <= self._mark_sent:
            return
        self._mark_sent = target
        job = self._store_write(Change(self.store_key, self._store_generation,
                                       delivered_upto=target))
        job.add_done_callback(lambda done: self._store_recorded(target, done))

    def _store_recorded(self, mark: int, job: asyncio.Future[Outcome]) -> None:
        """Deliveries up to `mark` are stored: only now may the server hear they arrived."""
        error = _job_error(job)
        if error is not None:
            self._store_failed(error)
            return
        upto = mark - self._base
        if upto <= 0:
            return  # a session that is over: nothing to ack there
        link = self.link
        receiver = self.session.receiver
        if link is not None and link.conn.ready and link.conn.session is self.session:
            link.conn.commit(upto, self._loop.time())
            link.pump()
        elif upto > receiver.committed:
            # Between connections: the next handshake's last_seen says it. Not
            # Receiver.commit, which owes an ack a connection that is still opening
            # could write before handshake_ack (a server refuses that with 1002).
            receiver.committed = min(upto, receiver.last_delivered)
        self._notify()

    def _store_new_session(self, event: Ready) -> None:
        """READY in a new session: store its id, the renumbered outbox and a new base.

        Wire ids restart at 1 but the stored delivery mark can only go up, so the
        session's base (the mark so far) is stored with its id and marks are base + id.
        The renumbered messages are written only once this is stored: a crash in
        between resumes the old numbering, never a mix.
        """
        sender = self.session.sender
        held = [*sender.inflight.values(), *sender.unsent]
        self._base = self._mark_hw
        self._renumber_seq += 1
        seq = self._renumber_seq
        self._held_for_renumber = set(held)
        for out in held:
            out.saved = False
        job = self._store_write(Change(
            self.store_key, self._store_generation,
            session_id=_stored_id(event.session, self._base),
            renumber=tuple(pending_of(out) for out in held), next_id=sender.next_id))
        job.add_done_callback(lambda done: self._store_renumbered(seq, done))

    def _store_renumbered(self, seq: int, job: asyncio.Future[Outcome]) -> None:
        error = _job_error(job)
        if error is not None:
            self._store_failed(error)
            return
        if seq != self._renumber_seq:
            return  # a newer session's renumber covers these
        for out in self._held_for_renumber:
            out.saved = True
        self._held_for_renumber.clear()
        if self.link is not None:
            self.link.pump()

    async def _store_still_ours(self) -> bool:
        """Before a reconnect: does ``store_key`` still belong to us (no newer claim)?"""
        assert self.store is not None
        if not self._store_claimed:
            return self._store_error is None
        try:
            record = await self.store.load(self.store_key)
        except Exception as exc:
            self._store_failed(exc)
            return False
        if record is None or record.generation != self._store_generation:
            self._store_failed(StaleSession(f"{self.store_key} claimed again"))
            return False
        return True

    def _store_failed(self, error: Exception) -> None:
        """A store write failed or another owner claimed the key: stop, say why, never
        continue unrecorded. `connect` again claims the key back."""
        if self._store_error is not None or not self._store_claimed:
            return
        label = self._store_label
        if isinstance(error, StaleSession):
            error = StaleSession(
                f"store key {self.store_key!r} was taken by another process (or another "
                f"Client) on {label}: this client stopped; connect() again to take it back")
        elif not isinstance(error, StoreError):
            error = StoreError(f"{label}: {type(error).__name__}: {error}")
        elif label not in str(error):
            error = StoreError(f"{label}: {error}")
        self._store_error = error
        self._store_claimed = False
        self._stop_error = error
        self.last_error = str(error)
        self.timeline.record("error", peer=self.name, detail=str(error)[:200])
        self._closing = True
        self._close_requested.set()
        link = self.link
        if link is not None:
            link.abort()  # no close frame: the session stays on the server for its owner
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._fail_held("dropped", f"store failed: {error}"[:200], error)
        self._set_ready(False)
        self._set_state(ReadyState.CLOSED, detail="store failed: not reconnecting")
        self._notify()

    async def _release_store(self) -> None:
        """close(): let queued writes land, then close the store if we opened it."""
        store = self.store
        assert store is not None
        jobs = list(self._store_jobs)
        if jobs:
            await asyncio.wait(jobs)
        try:
            if self._own_store:
                await store.close()
                self._store_closed = True
            else:
                await store.flush()
        except Exception as exc:  # shown; close() itself does not fail
            self.timeline.record("error", peer=self.name,
                                 detail=f"closing {self._store_label}: "
                                        f"{type(exc).__name__}: {exc}"[:200])
        self._store_opened = False
        self._store_claimed = False

    @property
    def _own_store(self) -> bool:
        return isinstance(self._store_source, str)

    def _attempt_timeout(self, configured: float) -> float:
        """Once the server's heartbeat is known, an attempt silent for longer is on a dead link."""
        if self.server_heartbeat_ms <= 0:
            return configured
        return min(configured, max(1.0, dead_link_bound(self.server_heartbeat_ms)))

    def _new_link(self, ws: WebSocketProtocol) -> Link:
        """The upgrade succeeded: OPEN now, before any frame (handshake_ack) is read."""
        self.handshake_response = ws.response
        self.subprotocol = ws.subprotocol
        self._set_state(ReadyState.OPEN,
                        detail=f"subprotocol {ws.subprotocol}" if ws.subprotocol else "")
        options = dataclasses.replace(
            self._options, handshake_timeout=self._attempt_timeout(self.handshake_timeout))
        conn = Connection.client(self.session, options, self._loop.time(),
                                 token=_text(self._token))
        link = Link(conn, timeline=self.timeline, peer=self.name, on_event=self._on_event,
                    raw_ping_s=self.raw_ping_interval if self.protocol == "raw" else None)
        self.link = link
        self._grant_initial(conn)
        if self._open_hooks:  # nothing queued goes out before the hooks have run
            conn.hold_outbox = True
        return link

    def _grant_initial(self, conn: Connection) -> None:
        if self.on_message is None:
            conn.room = max(0, self.max_inbox - len(self.inbox))
        elif self._async_handler:
            conn.room = 0 if self._handler_busy else 1

    async def _connect_once(self, policy: ReconnectPolicy,
                            ) -> tuple[int | None, str, CloseRule, float | None]:
        """One connection's life; returns (close code, reason, rule, retry hint seconds)."""
        url = str(self._url.reveal())
        options = ConnectOptions(
            ssl=self._ssl, headers=self.headers, subprotocols=self.subprotocols,
            origin=self.origin, compression=self.compression == "deflate",
            max_size=self.max_message + 4096,
            open_timeout=self._attempt_timeout(self.open_timeout))
        self._closed_event = None
        try:
            await connect(url, self._new_link, options)
        except UpgradeFailed as exc:
            self.last_error = scrub(str(exc), url)
            self.timeline.record("error", peer=self.name, detail=self.last_error[:200])
            if exc.tls:
                self.last_error = f"{self.last_error}; {TLS_RULE.words}"
                return None, self.last_error, TLS_RULE, None
            if exc.status is not None:
                rule = upgrade_rule(exc.status)
                hint = None
                if exc.headers is not None and exc.headers.get("Retry-After", "").isdigit():
                    hint = float(exc.headers["Retry-After"])
                return None, self.last_error, rule, hint
            return None, self.last_error, CLOSE_RULES[1006], None
        link = self.link
        assert link is not None
        if self.protocol == "raw":
            self._became_ready()
            self._start_on_open()
            link.pump()
        try:
            await asyncio.shield(link.closed)
        finally:
            self._last_rtt = self.rtt_ms
            self.link = None
            self._set_ready(False)
        closed = self._closed_event
        if closed is None:
            return 1006, "", CLOSE_RULES[1006], None
        if closed.code == 1002 and closed.by_us:
            self.last_error = closed.reason
        return closed.code, closed.reason, closed.rule, closed.hint_s


def _job_error(job: asyncio.Future[Outcome]) -> Exception | None:
    """Why a store write failed (None if it was applied)."""
    if job.cancelled():
        return StoreError("store write cancelled")
    exc = job.exception()
    if exc is not None:
        return exc if isinstance(exc, Exception) else StoreError(f"store write: {exc!r}")
    return job.result().error


def _stored_id(session_id: str, base: int) -> str:
    """What the store keeps as the session id: the wire id and its delivery-mark base."""
    return f"{session_id}#{base}"


def _split_stored_id(stored: str | None, last_delivered: int) -> tuple[str | None, int]:
    """(wire session id, base) from a stored client session id (see `_stored_id`)."""
    if stored is None:
        return None, last_delivered
    wire, sep, base = stored.rpartition("#")
    if sep and base.isdigit():
        return wire, int(base)
    return stored, 0


def _text(secret: Secret | None) -> str | None:
    if secret is None:
        return None
    value = secret.reveal()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _strict_json(value: Any) -> Any:
    """`value` parsed as strict JSON when it is text that is JSON; unchanged otherwise."""
    if not isinstance(value, str):
        return value
    try:
        return envelope.loads(value)
    except ProtocolError:
        return value


def _looks_big(payload: Any) -> bool:
    """Whether `payload` may serialize to megabytes (a cheap look, one level deep)."""
    kind = type(payload)
    if kind is str or kind is bytes:
        return len(payload) > BIG_PAYLOAD
    if kind is list or kind is tuple:
        return len(payload) > envelope.BATCH_ITEMS
    if kind is dict:
        if len(payload) > envelope.BATCH_ITEMS:
            return True
        if len(payload) <= 8:
            for value in payload.values():
                inner = type(value)
                if (inner is list or inner is dict) and len(value) > envelope.BATCH_ITEMS:
                    return True
    return False
