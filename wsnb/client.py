"""The reliable asyncio client: readyState, READY, heartbeats, reconnect, outbox, acks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from wsnb._receipt import Receipt
from wsnb._secret import TRANSPORT_LOGGER, Secret, masked_url, optional_secret, safe_url
from wsnb.errors import AuthError, Backpressure, HandshakeTimeout, NotOpen, ProtocolError, Refused
from wsnb.link import DEFAULT_CHUNK_SIZE, Link
from wsnb.loop import LoopChoice, call_on, choose_loop, on_own_loop
from wsnb.protocol import envelope
from wsnb.protocol.backoff import Backoff, ReconnectPolicy
from wsnb.protocol.heartbeat import dead_link_bound
from wsnb.timeline import Timeline

WhenClosed = Literal["queue", "raise", "drop"]


class ReadyState(IntEnum):
    """The browser's WebSocket.readyState."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: Close codes in words (RFC 6455 and PROTOCOL.md).
CLOSE_CODES = {
    1000: "normal closure",
    1001: "going away (server shutting down, or the endpoint is leaving)",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "abnormal closure (no close frame: dead link, cut or crash)",
    1007: "invalid payload data",
    1008: "policy violation (bad token)",
    1009: "message too big",
    1011: "server error",
    1012: "service restart",
    1013: "try again later",
    4401: "token refused",
    4408: "handshake not received in time",
    4429: "too many connections or messages",
}


def describe_close(code: int | None, reason: str = "") -> str:
    """``"1006 abnormal closure (...)"`` plus the peer's reason, if any."""
    if code is None:
        return "not closed"
    words = CLOSE_CODES.get(code, "application code" if code >= 4000 else "unknown code")
    if not reason or reason.lower() in words:
        return f"{code} {words}"
    return f"{code} {words}: {reason}"


def check_url(url: str) -> str:
    """Accept only ``ws://`` and ``wss://`` URLs; explain the fix otherwise."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        fixed = ("wss" if scheme == "https" else "ws") + url[len(scheme):]
        raise ValueError(
            f"{scheme}:// is not a WebSocket URL: only the handshake is HTTP; use {fixed}")
    if scheme not in ("ws", "wss"):
        raise ValueError(f"WebSocket URLs start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"WebSocket URL has no host: {url!r}")
    return url


class Client:
    """A WebSocket client that keeps its promises across the connection's whole life.

    ``protocol="wsnb"`` speaks docs/protocol.md (handshake, acks, resume);
    ``protocol="raw"`` talks to any server with plain frames. Public
    coroutines may be awaited from any event loop or thread.
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
        on_message: Callable[[Any], Awaitable[None] | None] | None = None,
        timeline: Timeline | None = None,
        loop: LoopChoice = "auto",
        seed: int | None = None,
        name: str = "client",
    ) -> None:
        self._url = Secret(check_url(url))  # a query string may carry a token
        if protocol not in ("wsnb", "raw"):
            raise ValueError(f'protocol must be "wsnb" or "raw", not {protocol!r}')
        if when_closed not in ("queue", "raise", "drop"):
            raise ValueError(f'when_closed must be "queue", "raise" or "drop", not {when_closed!r}')
        if when_full not in ("wait", "raise"):
            raise ValueError(f'when_full must be "wait" or "raise", not {when_full!r}')
        secure = urlsplit(url).scheme.lower() == "wss"
        if ssl is not None and not secure:
            raise ValueError("ssl= is only for wss:// URLs")
        self._ssl: ssl_module.SSLContext | bool | None = (
            ssl if ssl is not None else (True if secure else None))
        self._token = optional_secret(token)
        self._secret = optional_secret(secret)
        self.protocol = protocol
        self.backoff = backoff or Backoff()
        self.when_closed: WhenClosed = when_closed
        self.when_full = when_full
        self.max_message = max_message
        self.compress_min = compress_min
        self.heartbeat = heartbeat
        self.handshake_timeout = handshake_timeout
        self.open_timeout = open_timeout
        self.compression = compression
        self.raw_ping_interval = raw_ping_interval
        self.on_message = on_message
        self.name = name
        self.timeline = timeline if timeline is not None else Timeline()
        self._loop = choose_loop(loop)
        self._rng = random.Random(seed)
        self.link = Link(
            timeline=self.timeline,
            deliver=self._deliver,
            raw=protocol == "raw",
            secret=self._secret.as_bytes() if self._secret else None,
            peer=name,
            max_outbox=max_outbox,
            max_outbox_bytes=max_outbox_bytes,
            chunk_size=chunk_size,
            max_message=max_message,
            on_change=self._notify,
        )
        self.ready_state = ReadyState.CLOSED
        self.ready = False
        self.session_id: str | None = None
        self.resumed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_error = ""
        self.reconnects = 0
        self.attempt = 0
        self.next_retry_at: float | None = None
        self.server_heartbeat_ms = 0
        self.handshake_response: Any = None  # websockets Response of the last upgrade
        self.inbox: deque[Any] = deque(maxlen=max_inbox)
        self.inbox_dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stop_error: Exception | None = None
        self._changed = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._ws: Any = None

    # ----- what users look at ---------------------------------------------

    @property
    def url(self) -> str:
        """The server URL, with credentials and token-like query values masked."""
        return safe_url(str(self._url.reveal()))

    @url.setter
    def url(self, url: str) -> None:
        self._url = Secret(check_url(url))

    def __repr__(self) -> str:
        ready = " READY" if self.ready else ""
        return (f"<wsnb.Client {masked_url(self.url)} {self.ready_state.name}{ready} "
                f"protocol={self.protocol} pending={self.link.sender.pending}>")

    @property
    def buffered_amount(self) -> int:
        """Bytes not yet written plus bytes not yet acked (the browser's bufferedAmount)."""
        return self.link.buffered_amount

    @property
    def pending(self) -> int:
        """Messages sent and not yet acked (or, in raw mode, not yet written)."""
        return self.link.sender.pending

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time from the last ping/pong."""
        return self.link.rtt_ms

    @property
    def counters(self) -> dict[str, int]:
        """sent, written, acked, resent, nacked, received, duplicates, reconnects, pending."""
        return {**self.link.counters, "reconnects": self.reconnects, "pending": self.pending,
                "dropped": self.timeline.counts().get("dropped", 0)}

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
        """Start connecting (and reconnecting); return once READY (OPEN in raw mode)."""
        if self._task is None or self._task.done():
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

    def _serialize(self, payload: Any) -> tuple[str | bytes, int]:
        if self.protocol == "raw":
            if isinstance(payload, (bytes, bytearray, memoryview)):
                return bytes(payload), 0
            if isinstance(payload, str):
                return payload, 0
            return envelope.payload_text(payload), 0
        text = envelope.payload_text(payload, canonical=self._secret is not None)
        if len(text) > self.max_message:
            raise ValueError(f"payload is {len(text)} characters serialized; the limit is "
                             f"max_message={self.max_message}")
        return envelope.maybe_compress(text, self.compress_min)

    async def send(self, payload: Any) -> Receipt:
        """Accept `payload` into the outbox; ``await`` the receipt to wait for its ack.

        Raises `TypeError`/`ValueError` naming the bad value's path for
        non-JSON payloads (nothing is sent), `NotOpen` with
        ``when_closed="raise"`` while not READY, `Backpressure` with
        ``when_full="raise"`` while the outbox is full; otherwise waits for room.
        """
        data, z = self._serialize(payload)
        return await call_on(self._loop, self._enqueue(data, z))

    async def _enqueue(self, data: str | bytes, z: int) -> Receipt:
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
        size = len(data)
        if not self.link.has_room(size):
            if self.when_full == "raise":
                raise Backpressure(
                    f"outbox full: {self.pending} messages, {self.buffered_amount} bytes held "
                    f"(limits {self.link.sender.max_messages} messages, "
                    f"{self.link.sender.max_bytes} bytes)")
            await self.link.wait_room(size)
        receipt = self.link.enqueue(data, z=z, queued=not self.ready, wake=not self.ready)
        if self.ready:
            await self.link.write_now()
        return receipt

    @on_own_loop
    async def recv(self, timeout: float | None = None) -> Any:
        """The next message from the server, in order, exactly once."""
        await self._wait(lambda: bool(self.inbox), timeout,
                         what="a message")
        return self.inbox.popleft()

    @on_own_loop
    async def drain(self, timeout: float | None = 10.0) -> None:
        """Wait until every sent message is acked (written, in raw mode)."""
        await self._wait(lambda: self.link.sender.pending == 0, timeout,
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
        """Close for good: no reconnect; un-acked messages are dropped and their receipts fail."""
        self._closing = True
        self._close_requested.set()
        if self._task is not None and not self._task.done():
            self._set_state(ReadyState.CLOSING)
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code, reason), 2)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.link.fail_all(NotOpen("client closed before the message was acked"),
                           "client closed by the user")
        if self.close_code != code or self.ready_state != ReadyState.CLOSED:
            self.close_code, self.close_reason = code, reason
            self.timeline.record("close", peer=self.name, detail=describe_close(code, reason))
        self._set_ready(False)
        self._set_state(ReadyState.CLOSED)

    def panel(self, **kwargs: Any) -> Any:
        """All panels for this client in one widget (`wsnb.Dashboard`)."""
        from wsnb.widgets import Dashboard

        return Dashboard(self, **kwargs)

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def disconnect_now(self) -> None:
        """Drop the transport abruptly, as a network fault would (reconnect follows)."""
        ws = self._ws
        if ws is not None:
            self._loop.call_soon_threadsafe(ws.transport.abort)

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

    def _deliver(self, msg_id: int, payload: Any) -> Awaitable[None] | None:
        if self.on_message is not None:
            return self.on_message(payload)
        if len(self.inbox) == self.inbox.maxlen:
            self.inbox_dropped += 1
            self.timeline.record("dropped", direction="in", peer=self.name,
                                 detail="inbox full (max_inbox): oldest unread message dropped")
        self.inbox.append(payload)
        return None

    async def _supervise(self) -> None:
        policy = ReconnectPolicy(self.backoff, self._rng)
        try:
            while not self._closing:
                self.next_retry_at = None
                self._set_state(ReadyState.CONNECTING)
                code, reason, hint = await self._connect_once(policy)
                self._set_ready(False)
                if self._closing:
                    break
                self.close_code, self.close_reason = code, reason
                self.timeline.record("close", peer=self.name, detail=describe_close(code, reason))
                if code in (4401, 1008):
                    self._stop_error = AuthError(f"server refused the token: "
                                                 f"{describe_close(code, reason)}")
                elif code == 1009 and not self.link.raw:
                    self._fail_too_big()
                delay = policy.on_close(code, time.monotonic(), hint)
                self.attempt = policy.attempt
                if delay is None:
                    self._set_state(ReadyState.CLOSED, detail="not reconnecting")
                    if self._stop_error is None:
                        self._stop_error = NotOpen(f"closed: {describe_close(code, reason)}")
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
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.timeline.record("error", peer=self.name, detail=self.last_error[:200])
            self._stop_error = exc
            self._set_state(ReadyState.CLOSED)
            self._notify()

    def _fail_too_big(self) -> None:
        held = list(self.link.sender.inflight.values()) + list(self.link.sender.unsent)
        if not held:
            return
        culprit = max(held, key=lambda out: out.size)
        self.link.sender.nack(culprit.id)
        self.timeline.record("nack", direction="in", id=culprit.id, size=culprit.size,
                             peer=self.name, detail="too_large: server closed with 1009")
        culprit.handle._settle("refused", Refused("too_large", "server closed with 1009",
                                                  culprit.id))

    def _attempt_timeout(self, configured: float) -> float:
        """Once the server's heartbeat is known, an attempt silent for longer is on a dead link."""
        if self.server_heartbeat_ms <= 0:
            return configured
        return min(configured, max(1.0, dead_link_bound(self.server_heartbeat_ms)))

    async def _connect_once(self, policy: ReconnectPolicy) -> tuple[int, str, float | None]:
        """One connection's life; returns (close code, reason, retry hint seconds)."""
        raw = self.link.raw
        try:
            ws = await ws_connect(
                str(self._url.reveal()),
                ssl=self._ssl,
                open_timeout=self._attempt_timeout(self.open_timeout),
                ping_interval=self.raw_ping_interval if raw else None,
                ping_timeout=self.raw_ping_interval if raw else None,
                close_timeout=2,
                max_size=self.max_message + 4096,
                compression=self.compression,
                user_agent_header="wsnb",
                logger=TRANSPORT_LOGGER,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.last_error = f"upgrade refused: HTTP {status}"
            self.timeline.record("error", peer=self.name, detail=self.last_error)
            if status in (401, 403):
                self._stop_error = AuthError(self.last_error)
                return 4401, self.last_error, None
            return 1006, self.last_error, None
        except ssl_module.SSLCertVerificationError as exc:
            self.last_error = f"TLS certificate verification failed: {exc.verify_message}"
            self.timeline.record("error", peer=self.name, detail=self.last_error)
            return 1015, self.last_error, None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.last_error = f"cannot connect: {type(exc).__name__}: {exc}"[:300]
            self.timeline.record("error", peer=self.name, detail=self.last_error)
            return 1006, self.last_error, None
        self._ws = ws
        self.handshake_response = ws.response
        self._set_state(ReadyState.OPEN)
        try:
            first: list[str | bytes] = []
            heartbeat_ms = 0
            if not raw:
                heartbeat_ms, first = await self._handshake(ws)
            self.last_error = ""
            policy.on_ready(time.monotonic())
            self._set_ready(True)
            await self.link.run(ws, heartbeat_ms=heartbeat_ms if self.heartbeat else 0,
                                send_pings=self.heartbeat, first=first)
        except (HandshakeTimeout, ProtocolError) as exc:
            self.last_error = str(exc)
            self.timeline.record("error", peer=self.name, detail=self.last_error[:200])
            ws.transport.abort()
            return (4408 if isinstance(exc, HandshakeTimeout) else 1002), self.last_error, None
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._set_ready(False)
        if ws.close_code is None:  # aborted locally: wait for the transport to finish closing
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 1)
        code = ws.close_code if ws.close_code is not None else 1006
        hint = None
        if code == 4429:
            with contextlib.suppress(ValueError):
                hint = float(ws.close_reason.rsplit("retry after ", 1)[-1].rstrip(" s"))
        return code, ws.close_reason or "", hint

    async def _handshake(self, ws: Any) -> tuple[int, list[str | bytes]]:
        link = self.link
        hello = {
            "type": "handshake", "v": envelope.VERSION,
            "token": self._token.reveal() if self._token else None,
            "session": self.session_id, "last_seen": link.receiver.last_delivered,
            "features": ["chunk", "z", "upto"],
        }
        await ws.send(envelope.dumps(hello))
        timeout = self._attempt_timeout(self.handshake_timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(ws.recv(), max(left, 0))
            except TimeoutError:
                raise HandshakeTimeout(f"no handshake_ack within {timeout:g} s") from None
            frame = envelope.parse_frame(raw)
            if frame["type"] == "ping":
                await ws.send(envelope.frame_text("pong", ts=frame["ts"]))
                continue
            if frame["type"] == "error":
                raise ProtocolError(frame["code"], f"server refused the handshake: "
                                    f"{frame['reason']}")
            if frame["type"] != "handshake_ack":
                raise ProtocolError("bad_envelope", f"expected handshake_ack, got {frame['type']}")
            if frame["v"] != envelope.VERSION:
                raise ProtocolError("version", f"server speaks version {frame['v']}, not 1")
            break
        resumed = frame["resumed"] and frame["session"] == self.session_id
        if resumed:
            link._ack_settle(link.sender.resume(frame["last_acked"]))
        else:
            if self.session_id is not None:
                self.timeline.record("error", peer=self.name, detail=(
                    "session lost on the server: un-acked messages renumbered and resent "
                    "(at-least-once across the lost session)"))
            link.sender.renumber()
            link.receiver.reset()
        self.session_id = frame["session"]
        self.resumed = resumed
        link.peer_max_size = frame["max_size"]
        self.server_heartbeat_ms = frame["heartbeat_ms"]
        return frame["heartbeat_ms"], []
