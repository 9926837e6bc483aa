"""The reference server: sessions, acks, resume, limits, heartbeats, and chaos knobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import secrets
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsnb._receipt import Receipt
from wsnb._secret import TRANSPORT_LOGGER, Secret, optional_secret
from wsnb.errors import ProtocolError
from wsnb.link import DEFAULT_CHUNK_SIZE, Link
from wsnb.loop import LoopChoice, choose_loop, on_own_loop
from wsnb.protocol import envelope
from wsnb.timeline import Timeline

Handler = Callable[["ServerSession", Any], Awaitable[None] | None]


@dataclass(eq=False)
class ServerSession:
    """A client's session on the server; survives reconnects until `session_ttl` after the last."""

    id: str
    token_hash: str
    link: Link
    connection: ServerConnection | None = None
    closed_at: float | None = None
    connections: int = 0
    delivered: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        state = "connected" if self.connection is not None else "disconnected"
        return f"<ServerSession {self.id[:8]}… {state} pending={self.link.sender.pending}>"


def _hash_token(token: str | None) -> str:
    return hashlib.sha256(("wsnb-token:" + (token or "")).encode()).hexdigest()


class Server:
    """A wsnb protocol server on loopback for tutorials, tests and debugging clients.

    Delivers each client message to `handler` (and `delivered`) exactly once,
    in id order, even with ``workers=N`` processing out of order internally.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | Secret | None = None,
        secret: str | bytes | Secret | None = None,
        heartbeat_ms: int = 15_000,
        handler: Handler | None = None,
        workers: int = 0,
        process_delay: tuple[float, float] | None = None,
        handshake_delay: float = 0.0,
        max_size: int = 1 << 20,
        max_message: int = 64 * 1024 * 1024,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        handshake_timeout: float = 5.0,
        session_ttl: float = 300.0,
        replay_window_ms: int = 300_000,
        max_unacked: int = 10_000,
        max_sessions_per_token: int = 1_000,
        keep_delivered: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
        idle_timeout: float | None = None,
        idle_close_code: int | None = 1001,
        answer_pings: bool = True,
        close_frames: bool = True,
        throttle: tuple[int, float] | None = None,
        rate_limit: tuple[int, float] | None = None,
        max_connections_per_token: int | None = None,
        allowed_origins: Iterable[str] | None = None,
        open_timeout: float = 10.0,
        drop_rate: float = 0.0,
        ack_delay: float = 0.0,
        timeline: Timeline | None = None,
        loop: LoopChoice = "auto",
        seed: int | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if heartbeat_ms < 0:
            raise ValueError(f"heartbeat_ms must be >= 0 (0 = off), got {heartbeat_ms}")
        if rate_limit is not None and not (rate_limit[0] >= 1 and rate_limit[1] > 0):
            raise ValueError(f"rate_limit must be (n >= 1, seconds > 0), got {rate_limit}")
        if max_connections_per_token is not None and max_connections_per_token < 1:
            raise ValueError(f"max_connections_per_token must be >= 1, got "
                             f"{max_connections_per_token}")
        if not 0 <= drop_rate <= 1 or ack_delay < 0:
            raise ValueError(f"drop_rate must be in [0, 1] and ack_delay >= 0, got "
                             f"{drop_rate}, {ack_delay}")
        self.host = host
        self.port = port
        self._token = optional_secret(token)
        self._secret = optional_secret(secret)
        self.heartbeat_ms = heartbeat_ms
        self.handler = handler
        self.workers = workers
        self.process_delay = process_delay
        self.handshake_delay = handshake_delay
        self.max_size = max_size
        self.max_message = max_message
        self.chunk_size = chunk_size
        self.handshake_timeout = handshake_timeout
        self.session_ttl = session_ttl
        self.replay_window_ms = replay_window_ms
        self.max_unacked = max_unacked
        self.max_sessions_per_token = max_sessions_per_token
        self.ssl = ssl
        # Misbehaviours on purpose, so clients and wsnb.doctor can be tested against them:
        self.idle_timeout = idle_timeout  # close connections silent for this long
        self.idle_close_code = idle_close_code  # None: drop TCP without a close frame
        self.answer_pings = answer_pings  # False: ignore WebSocket and wsnb pings
        self.close_frames = close_frames  # False: answer a close by dropping TCP
        self.throttle = throttle  # (n, seconds): more connections than n per window get HTTP 429
        self._recent_connects: list[float] = []
        # Hardening (all off by default): over n frames per `seconds` on one connection
        # closes it with 4429 and a "retry after N s" hint; live connections per token;
        # browser Origins allowed (HTTP 403 otherwise; requests without Origin, i.e. not
        # from a browser, pass); seconds to complete the HTTP upgrade (slowloris).
        self.rate_limit = rate_limit
        self.max_connections_per_token = max_connections_per_token
        self.allowed_origins = (None if allowed_origins is None else
                                frozenset(o.lower().rstrip("/") for o in allowed_origins))
        self.open_timeout = open_timeout
        # Chaos: drop an incoming frame and the TCP connection with probability drop_rate
        # (what a lost frame looks like over TCP); hold each ack back ack_delay seconds.
        self.drop_rate = drop_rate
        self.ack_delay = ack_delay
        self._slots: dict[ServerConnection, str] = {}  # connection -> token hash
        self._live_per_token: dict[str, int] = {}
        self.timeline = timeline if timeline is not None else Timeline()
        self.delivered: list[Any] = []
        self.keep_delivered = keep_delivered
        self.sessions: dict[str, ServerSession] = {}
        self.connections: set[ServerConnection] = set()
        self.refused_handshakes = 0
        self._loop = choose_loop(loop)
        self._rng = random.Random(seed)
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Future[None] | None = None

    # ----- lifecycle --------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl else 'ws'}://{host}:{self.port}"

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return (f"<wsnb.Server {self.url} {state} sessions={len(self.sessions)} "
                f"connections={len(self.connections)}>")

    @on_own_loop
    async def start(self) -> Server:
        """Listen; with ``port=0`` the OS picks a port, then kept across restarts."""
        if self._server is None:
            self._server = await serve(
                self._handle, self.host, self.port, process_request=self._process_request,
                max_size=self.max_size, ping_interval=None, compression=None, backlog=4096,
                close_timeout=1, server_header="wsnb", ssl=self.ssl,
                open_timeout=self.open_timeout,
                logger=TRANSPORT_LOGGER,
            )
            self.port = self._server.sockets[0].getsockname()[1]
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.ensure_future(self._reap_sessions())
        return self

    @on_own_loop
    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop listening and close every connection (1001 by default)."""
        await self._stop(code, reason)
        if self._reaper is not None:
            self._reaper.cancel()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    @on_own_loop
    async def restart(self, keep_sessions: bool = True) -> None:
        """Close every connection with 1012 and listen again on the same port.

        ``keep_sessions=False`` forgets every session, as a crashed server would.
        """
        server, self._server = self._server, None
        closing = None
        if server is not None:
            server.close(close_connections=False)  # stop accepting now
            closing = asyncio.gather(*(ws.close(1012, "service restart")
                                       for ws in list(self.connections)),
                                     return_exceptions=True)
        if not keep_sessions:
            self.sessions.clear()
        self.timeline.record("chaos", detail=f"server restart (keep_sessions={keep_sessions})")
        await self.start()  # listen again at once: reconnects never meet a closed port
        if closing is not None:
            await closing
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 3)

    async def _stop(self, code: int, reason: str) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=False)
        await asyncio.gather(*(ws.close(code, reason) for ws in list(self.connections)),
                             return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 3)
        for task in [t for t in self._tasks if t.get_name().startswith("wsnb-conn")]:
            task.cancel()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- sending to clients --------------------------------------------------

    @on_own_loop
    async def send(self, session_id: str, payload: Any) -> Receipt:
        """Send `payload` to one session reliably (held and replayed across reconnects)."""
        session = self.sessions.get(session_id)
        if session is None:
            raise KeyError(f"no session {session_id[:8]}…")
        text = envelope.payload_text(payload, canonical=self._secret is not None)
        data, z = envelope.maybe_compress(text, 64 * 1024)
        await session.link.wait_room(len(data))
        return session.link.enqueue(data, z=z, queued=session.connection is None)

    async def broadcast(self, payload: Any) -> list[Receipt]:
        """Send `payload` to every live session; one receipt each."""
        return [await self.send(sid, payload) for sid in list(self.sessions)]

    # ----- one connection ---------------------------------------------------

    def _new_link(self, session_id: str) -> tuple[Link, list[Any]]:
        delivered: list[Any] = []
        delay = None
        if self.process_delay is not None:
            lo, hi = self.process_delay
            delay = lambda: self._rng.uniform(lo, hi)  # noqa: E731

        def deliver(msg_id: int, payload: Any) -> Awaitable[None] | None:
            self.delivered.append(payload)
            if self.keep_delivered is not None and len(self.delivered) > self.keep_delivered:
                del self.delivered[: len(self.delivered) - self.keep_delivered]
            session = self.sessions.get(session_id)
            if self.handler is None or session is None:
                return None  # no coroutine to create and await on the hot path
            return call_handler(msg_id, session, payload)

        async def call_handler(msg_id: int, session: ServerSession, payload: Any) -> None:
            try:
                assert self.handler is not None
                result = self.handler(session, payload)
                if result is not None:
                    await result
            except Exception as exc:  # a handler bug is shown, never kills the session
                self.timeline.record("error", id=msg_id, peer=session_id[:8],
                                     detail=f"handler raised {type(exc).__name__}: {exc}"[:200])

        link = Link(
            timeline=self.timeline, deliver=deliver,
            secret=self._secret.as_bytes() if self._secret else None,
            peer=session_id[:8], max_outbox=self.max_unacked,
            chunk_size=self.chunk_size, max_message=self.max_message,
            replay_window_ms=self.replay_window_ms, workers=self.workers,
            process_delay=delay,
        )
        link.receiver.max_held = self.max_unacked
        link._assembler.max_chunks = -(-self.max_message // max(1, self.max_size // 8))
        self._guard(link)
        return link, delivered

    def _guard(self, link: Link) -> None:
        """Install the per-connection rate limit and the chaos knobs on a session's link."""
        if self.rate_limit is None and not self.drop_rate and not self.ack_delay:
            return
        on_frame, send_control = link._on_frame, link.send_control
        window: dict[str, Any] = {"ws": None, "start": 0.0, "count": 0}

        async def guarded(ws: ServerConnection, raw: str | bytes) -> None:
            if self.rate_limit is not None:
                limit, seconds = self.rate_limit
                now = time.monotonic()
                if window["ws"] is not ws or now - window["start"] >= seconds:
                    window.update(ws=ws, start=now, count=0)
                window["count"] += 1
                if window["count"] > limit:
                    if window["count"] == limit + 1:  # close once; ignore what is still queued
                        retry = max(1, math.ceil(window["start"] + seconds - now))
                        reason = (f"too many messages (over {limit} in {seconds:g} s); "
                                  f"retry after {retry} s")
                        self.timeline.record("close", peer=link.peer, detail=f"4429 {reason}")
                        await ws.close(4429, reason)
                    return
            if self.drop_rate and self._rng.random() < self.drop_rate:
                self.timeline.record("chaos", peer=link.peer,
                                     detail=f"dropped a frame and the connection "
                                            f"(drop={self.drop_rate:g})")
                ws.transport.abort()
                return
            await on_frame(ws, raw)

        late: set[asyncio.Task[None]] = set()

        async def send_later(ws: ServerConnection, text: str) -> None:
            await asyncio.sleep(self.ack_delay)
            with contextlib.suppress(ConnectionClosed):
                await send_control(ws, text)

        async def delayed(ws: ServerConnection, text: str) -> None:
            if not text.startswith('{"type":"ack"'):
                await send_control(ws, text)
                return
            task = asyncio.ensure_future(send_later(ws, text))  # never stall the reader
            late.add(task)
            task.add_done_callback(late.discard)

        link._on_frame = guarded  # type: ignore[method-assign]
        if self.ack_delay:
            link.send_control = delayed  # type: ignore[method-assign]

    def _process_request(self, ws: ServerConnection, request: Any) -> Any:
        origin = request.headers.get("Origin")
        if (self.allowed_origins is not None and origin is not None
                and origin.lower().rstrip("/") not in self.allowed_origins):
            self.timeline.record("error", detail=f"origin refused: HTTP 403 ({origin[:100]!r})")
            return ws.respond(403, "Origin not allowed\n")
        if self.throttle is None:
            return None
        limit, window = self.throttle
        now = time.monotonic()
        self._recent_connects = [t for t in self._recent_connects if now - t < window]
        self._recent_connects.append(now)
        if len(self._recent_connects) > limit:
            self.timeline.record("error", detail="connection throttled: HTTP 429")
            return ws.respond(429, f"Too many connections; retry after {window:g} s\n")
        return None

    def _misbehave(self, ws: ServerConnection) -> None:
        """Install the misbehaviours asked for (no pongs, no close frames)."""
        if self.answer_pings and self.close_frames:
            return
        from websockets.frames import Opcode

        protocol = ws.protocol
        send_frame = protocol.send_frame

        def filtered(frame: Any) -> None:
            if frame.opcode is Opcode.PONG and not self.answer_pings:
                return
            if frame.opcode is Opcode.CLOSE and not self.close_frames:
                ws.transport.abort()
                return
            send_frame(frame)

        protocol.send_frame = filtered  # type: ignore[method-assign]

    async def _idle_watch(self, ws: ServerConnection, link: Link) -> None:
        assert self.idle_timeout is not None
        while True:
            left = link.last_received + self.idle_timeout - time.monotonic()
            if left <= 0:
                self.timeline.record("close", peer=link.peer, detail="idle timeout")
                if self.idle_close_code is None:
                    ws.transport.abort()
                else:
                    await ws.close(self.idle_close_code, "idle timeout")
                return
            await asyncio.sleep(left)

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"wsnb-conn-{id(ws)}")
        self.connections.add(ws)
        self._misbehave(ws)
        try:
            await self._serve_connection(ws)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)
            token_hash = self._slots.pop(ws, None)
            if token_hash is not None:
                self._live_per_token[token_hash] -= 1
                if not self._live_per_token[token_hash]:
                    del self._live_per_token[token_hash]

    async def _serve_connection(self, ws: ServerConnection) -> None:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.handshake_timeout)
        except TimeoutError:
            self.refused_handshakes += 1
            self.timeline.record("close", detail="4408 handshake not received in time")
            await ws.close(4408, "handshake not received in time")
            return
        try:
            hello = envelope.parse_frame(raw)
            if hello["type"] != "handshake":
                raise ProtocolError("bad_envelope", "first frame must be a handshake")
        except ProtocolError as exc:
            self.refused_handshakes += 1
            await ws.send(envelope.frame_text("error", code=exc.code, reason=exc.reason))
            await ws.close(1002, f"bad handshake: {exc.code}")
            return
        token = hello.get("token")
        if self._token is not None and not (isinstance(token, str) and self._token == token):
            self.refused_handshakes += 1
            self.timeline.record("close", detail="4401 token refused")
            await ws.close(4401, "token refused")
            return
        if not self._take_slot(ws, hello, _hash_token(token)):
            reason = (f"too many connections for this token (limit "
                      f"{self.max_connections_per_token}); retry after 5 s")
            self.timeline.record("close", detail=f"4429 {reason}")
            await ws.close(4429, reason)
            return
        session = self._session_for(hello, _hash_token(token))
        if session is None:
            await ws.close(4429, "too many sessions for this token; retry after 5 s")
            return
        if self.handshake_delay:
            await asyncio.sleep(self.handshake_delay)  # a server that is slow to become ready
        old = session.connection
        if old is not None:  # the client came back before we noticed the old link died
            old.transport.abort()
        link = session.link
        resumed = hello.get("session") == session.id
        if resumed:
            link._ack_settle(link.sender.resume(hello.get("last_seen", 0)))
        session.connection = ws
        session.connections += 1
        session.closed_at = None
        ack = {"type": "handshake_ack", "v": envelope.VERSION, "session": session.id,
               "resumed": resumed, "last_acked": link.receiver.last_delivered,
               "heartbeat_ms": self.heartbeat_ms, "max_size": self.max_size}
        await ws.send(envelope.dumps(ack))
        self.timeline.record("state", state="READY", peer=session.id[:8],
                             detail="resumed" if resumed else "new session")
        link.answer_pings = self.answer_pings
        idle = (asyncio.ensure_future(self._idle_watch(ws, link))
                if self.idle_timeout is not None else None)
        try:
            await link.run(ws, heartbeat_ms=self.heartbeat_ms, send_pings=True)
        finally:
            if idle is not None:
                idle.cancel()
            if session.connection is ws:
                session.connection = None
                session.closed_at = time.monotonic()
            code = ws.close_code if ws.close_code is not None else 1006
            self.timeline.record("close", peer=session.id[:8],
                                 detail=f"{code} {ws.close_reason or ''}".strip())

    def _take_slot(self, ws: ServerConnection, hello: dict[str, Any], token_hash: str) -> bool:
        """Count `ws` against its token's `max_connections_per_token`; False when full."""
        limit = self.max_connections_per_token
        if limit is None:
            return True
        live = self._live_per_token.get(token_hash, 0)
        wanted = hello.get("session")
        old = self.sessions.get(wanted) if isinstance(wanted, str) else None
        if old is not None and old.connection is not None and old.token_hash == token_hash:
            live -= 1  # a resume replaces its own stale connection
        if live >= limit:
            return False
        self._live_per_token[token_hash] = self._live_per_token.get(token_hash, 0) + 1
        self._slots[ws] = token_hash
        return True

    def _session_for(self, hello: dict[str, Any], token_hash: str) -> ServerSession | None:
        wanted = hello.get("session")
        session = self.sessions.get(wanted) if isinstance(wanted, str) else None
        if session is not None and secrets.compare_digest(session.token_hash, token_hash):
            return session  # never resume a session created with another token
        owned = sum(1 for s in self.sessions.values() if s.token_hash == token_hash)
        if owned >= self.max_sessions_per_token:
            self._expire_sessions(force=True)
            owned = sum(1 for s in self.sessions.values() if s.token_hash == token_hash)
            if owned >= self.max_sessions_per_token:
                return None
        session_id = secrets.token_urlsafe(18)  # 144 random bits
        link, delivered = self._new_link(session_id)
        session = ServerSession(session_id, token_hash, link, delivered=delivered)
        self.sessions[session_id] = session
        return session

    def _expire_sessions(self, force: bool = False) -> None:
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            if session.connection is None and session.closed_at is not None and (
                    force and now - session.closed_at > 0 or
                    now - session.closed_at > self.session_ttl):
                del self.sessions[sid]

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(self.session_ttl, 5.0))
            self._expire_sessions()
