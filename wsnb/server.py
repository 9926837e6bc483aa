"""The reference server: sessions, acks, resume, limits, heartbeats, and chaos knobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import math
import random
import secrets
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from wsnb._receipt import Receipt
from wsnb._secret import Secret, optional_secret
from wsnb.client import DEFAULT_CHUNK_SIZE
from wsnb.link import Link
from wsnb.loop import LoopChoice, choose_loop, on_own_loop
from wsnb.protocol import envelope
from wsnb.protocol.close import hint_reason
from wsnb.protocol.connection import (
    Acked,
    Closed,
    CloseNow,
    Connection,
    Delivered,
    Event,
    HandshakeReceived,
    Options,
    Ready,
    Refused,
    ToProcess,
)
from wsnb.protocol.session import Receiver, Sender, Session
from wsnb.store import (
    Apply,
    Change,
    MemoryStore,
    Outcome,
    StaleSession,
    Store,
    StoredSession,
    StoreError,
    store_from_url,
)
from wsnb.store.base import pending_of, to_session
from wsnb.timeline import Timeline
from wsnb.transport import WebSocketProtocol, serve

Handler = Callable[["ServerSession", Any], Awaitable[None] | None]


@dataclass(eq=False)
class ServerSession:
    """A client's session on the server; survives reconnects until `session_ttl` after the last.

    `state` is the protocol state (outbox, in-flight, receive window); `link`
    is the live connection's driver, None while the client is away.
    """

    id: str
    token_hash: str
    state: Session
    link: Link | None = None
    handler_busy: bool = False
    generation: int = 0  # the store's fencing generation this process holds
    recorded_upto: int = 0  # the delivery mark of the last change queued for the store

    @property
    def closed_at(self) -> float | None:
        return self.state.closed_at

    @property
    def connections(self) -> int:
        return self.state.connections

    @property
    def connected(self) -> bool:
        return self.link is not None

    def __repr__(self) -> str:
        state = "connected" if self.link is not None else "disconnected"
        return f"<ServerSession {self.id[:8]}… {state} pending={self.state.sender.pending}>"


def _hash_token(token: str | None) -> str:
    return hashlib.sha256(("wsnb-token:" + (token or "")).encode()).hexdigest()


class Server:
    """A wsnb protocol server on loopback for tutorials, tests and debugging clients.

    Delivers each client message to `handler` (and `delivered`) exactly once,
    in id order, even with ``workers=N`` processing out of order internally,
    while the session lives in this process.

    ``store`` keeps sessions where they outlive the process (`wsnb.store`):
    ``"sqlite:///abs/path.db"`` or ``"redis://host:port/db"``. Then a delivery
    is acked only after the store recorded it, outgoing messages are recorded
    before they are written, and a restarted server (or another worker on the
    same store) resumes the session: nothing lost or repeated. ``apply(tx,
    session_id, id, payload)`` runs inside the commit that records each
    delivery (exactly-once effects); `handler` still runs at delivery and is
    at-least-once across a crash. ``log_delivered`` appends every delivered
    message to the store's log (`Store.delivered`).
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
        store: str | Store | None = None,
        apply: Apply | None = None,
        log_delivered: bool = False,
        reuse_port: bool = False,
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
        self._slots: dict[WebSocketProtocol, str] = {}  # connection -> token hash
        self._live_per_token: dict[str, int] = {}
        self.timeline = timeline if timeline is not None else Timeline()
        self.delivered: list[Any] = []
        self.keep_delivered = keep_delivered
        self.sessions: dict[str, ServerSession] = {}
        self.connections: set[WebSocketProtocol] = set()
        self._links: dict[WebSocketProtocol, Link] = {}
        self.refused_handshakes = 0
        self._loop = choose_loop(loop)
        self._rng = random.Random(seed)
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Future[None] | None = None
        self._rate: dict[Link, list[float]] = {}
        self.store = store_from_url(store)  # a bad URL fails here, naming it
        self._stored = not isinstance(self.store, MemoryStore)
        if apply is not None and not self._stored:
            raise ValueError("apply= needs a store (sqlite:// or redis://): it runs inside "
                             "the store's commit")
        self.store.apply = apply
        self.store.session_ttl = session_ttl
        self.log_delivered = log_delivered
        self.reuse_port = reuse_port  # several processes listen on one port (wsnb serve --workers)
        self._store_open = False
        # Deliveries of this turn of the loop, per session, recorded as one change at its end.
        self._unrecorded: dict[ServerSession, tuple[Link, int, int, list[tuple[int, Any]]]] = {}

    # ----- lifecycle --------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl else 'ws'}://{host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this server runs on."""
        return self._loop

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return (f"<wsnb.Server {self.url} {state} sessions={len(self.sessions)} "
                f"connections={len(self.connections)}>")

    @on_own_loop
    async def start(self) -> Server:
        """Listen; with ``port=0`` the OS picks a port, then kept across restarts."""
        if not self._store_open:
            await self.store.open()
            self._store_open = True
        if self._server is None:
            self._server = await serve(
                self._open, self.host, self.port, ssl=self.ssl, max_size=self.max_size,
                process_request=self._process_request, open_timeout=self.open_timeout,
                reuse_port=self.reuse_port)
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
        if self._store_open:
            self._store_open = False
            with contextlib.suppress(StoreError):
                await self.store.close()

    @on_own_loop
    async def restart(self, keep_sessions: bool = True) -> None:
        """Close every connection with 1012 and listen again on the same port.

        ``keep_sessions=False`` forgets every session held in this process, as
        a crashed server would (a durable store still has them: clients resume).
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting now
        links = list(self._links.values())
        for link in links:
            link.close(1012, "service restart")
        if not keep_sessions:
            self.sessions.clear()
        self.timeline.record("chaos", detail=f"server restart (keep_sessions={keep_sessions})")
        await self.start()  # listen again at once: reconnects never meet a closed port
        await self._wait_closed(links)

    async def _wait_closed(self, links: list[Link]) -> None:
        if links:
            await asyncio.wait([link.closed for link in links], timeout=3)

    async def _stop(self, code: int, reason: str) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        links = list(self._links.values())
        for link in links:
            link.close(code, reason)
        for proto in list(self.connections):  # still in the upgrade
            if proto not in self._links:
                proto.abort()
        await self._wait_closed(links)

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- knobs that act on live sessions -----------------------------------

    def set_processing(self, workers: int, process_delay: tuple[float, float] | None = None,
                       ) -> None:
        """Process messages with `workers` concurrent workers (each waiting a random
        `process_delay`), so they finish out of order; delivery stays in id order.
        Takes effect on live connections at once."""
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.process_delay = process_delay if workers else None
        for link in self._links.values():
            link.conn.defer_processing = workers > 0

    # ----- sending to clients --------------------------------------------------

    @on_own_loop
    async def send(self, session_id: str, payload: Any) -> Receipt:
        """Send `payload` to one session reliably (held and replayed across reconnects)."""
        session = self.sessions.get(session_id)
        if session is None:
            raise KeyError(f"no session {session_id[:8]}…")
        text = envelope.payload_text(payload, canonical=self._secret is not None)
        data, z = envelope.maybe_compress(text, 64 * 1024)
        size = envelope.utf8_size(data)
        sender = session.state.sender
        while not sender.has_room(size):
            await asyncio.sleep(0.01)  # bounded by the client's acks; see Client for events
        out = sender.add(data, time.monotonic(), z=z, size=size, saved=not self._stored)
        out.handle = receipt = Receipt(out.id)
        if self._stored:  # recorded before it is written: a restart resends it, same id
            outcome = await self.store.enqueue(Change(session.id, session.generation,
                                                      outgoing=(pending_of(out),)))
            if outcome.error is not None:  # the session is rebuilt from the store next time
                self._store_failed(session, outcome.error)
                raise outcome.error
            out.saved = True
        self.timeline.record("sent", direction="out", id=out.id, size=size, peer=session_id[:8])
        if session.link is None:
            self.timeline.record("queued", direction="out", id=out.id, size=size,
                                 peer=session_id[:8], detail="client away: held in outbox")
        else:
            session.link.kick()
        return receipt

    async def broadcast(self, payload: Any) -> list[Receipt]:
        """Send `payload` to every live session; one receipt each."""
        return [await self.send(sid, payload) for sid in list(self.sessions)]

    # ----- connections --------------------------------------------------------

    def _options(self) -> Options:
        return Options(
            secret=self._secret.as_bytes() if self._secret else None,
            chunk_size=self.chunk_size, max_size=self.max_size, max_message=self.max_message,
            replay_window_ms=self.replay_window_ms, heartbeat_ms=self.heartbeat_ms,
            send_pings=self.heartbeat_ms > 0, handshake_timeout=self.handshake_timeout)

    def _open(self, proto: WebSocketProtocol) -> Link:
        """An upgraded connection: a `Link` waiting for the handshake frame."""
        proto.answer_pings = self.answer_pings
        proto.close_frames = self.close_frames
        conn = Connection.server(self._options(), self._loop.time())
        conn.answer_pings = self.answer_pings
        conn.defer_processing = self.workers > 0
        conn.ack_hold = self.ack_delay
        link: Link
        link = Link(conn, timeline=self.timeline, peer=proto.peer,
                    on_event=lambda event: self._on_event(link, event),
                    accept_frame=self._admit_frame if (self.rate_limit or self.drop_rate)
                    else None)
        self.connections.add(proto)
        self._links[proto] = link
        link.closed.add_done_callback(lambda _: self._gone(proto, link))
        if self.idle_timeout is not None:
            self._spawn(self._idle_watch(link))
        return link

    def _gone(self, proto: WebSocketProtocol, link: Link) -> None:
        self.connections.discard(proto)
        self._links.pop(proto, None)
        self._rate.pop(link, None)
        token_hash = self._slots.pop(proto, None)
        if token_hash is not None:
            self._live_per_token[token_hash] -= 1
            if not self._live_per_token[token_hash]:
                del self._live_per_token[token_hash]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, link: Link, event: Event) -> None:
        kind = type(event)
        if kind is Delivered:
            assert isinstance(event, Delivered)
            self._deliver(link, event)
        elif kind is Acked or kind is Refused:
            if self._stored and link.session is not None:
                ids = tuple(out.id for out in event.messages) if isinstance(event, Acked) \
                    else (event.message.id,) if isinstance(event, Refused) else ()
                session = link.session
                self.store.submit(Change(session.id, session.generation, forget=ids))
        elif kind is ToProcess:
            assert isinstance(event, ToProcess)
            self._spawn(self._process_later(link, event))
        elif kind is HandshakeReceived:
            assert isinstance(event, HandshakeReceived)
            self._spawn(self._admit(link, event))
        elif kind is Ready:
            assert isinstance(event, Ready)
            self.timeline.record("state", state="READY", peer=event.session[:8],
                                 detail="resumed" if event.resumed else "new session")
        elif kind is CloseNow:
            assert isinstance(event, CloseNow)
            if link.session is None:  # refused before READY: bad, late or refused handshake
                self.refused_handshakes += 1
                self.timeline.record("close", peer=link.peer,
                                     detail=f"{event.code} {event.reason}".strip())
        elif kind is Closed:
            assert isinstance(event, Closed)
            session = link.session
            peer = session.id[:8] if session is not None else link.peer
            self.timeline.record("close", peer=peer,
                                 detail=f"{event.code} {event.reason}".strip())
            if session is not None and session.link is link:
                session.link = None
                if self._stored:
                    self.store.submit(Change(session.id, session.generation,
                                             closed_at=time.time()))

    def _deliver(self, link: Link, event: Delivered) -> None:
        session = link.session
        assert session is not None
        record = self.timeline.record
        peer = session.id[:8]
        for msg_id, payload in event.messages:
            record("received", direction="in", id=msg_id, peer=peer)
            self.delivered.append(payload)
        if self.keep_delivered is not None and len(self.delivered) > self.keep_delivered:
            del self.delivered[: len(self.delivered) - self.keep_delivered]
        if self._stored:
            self._record_delivery(link, session, event)
        elif self.log_delivered and isinstance(self.store, MemoryStore):
            self.store.append_log(session.id, event.messages)
        if self.handler is None:
            return
        if inspect.iscoroutinefunction(self.handler):
            session.handler_busy = True
            link.conn.grant(0)
            self._spawn(self._run_handler(session, event.messages))
            return
        for msg_id, payload in event.messages:
            self._call_handler(session, msg_id, payload)

    def _record_delivery(self, link: Link, session: ServerSession, event: Delivered) -> None:
        """Record the delivery (and `apply` effects) in the store; ack once it is stored.

        Deliveries of one turn of the event loop (a burst of frames) become one
        change per session, queued at the end of the turn.
        """
        upto = session.state.receiver.last_delivered
        held = self._unrecorded.get(session)
        if held is not None and held[0] is link:
            held[3].extend(event.messages)
            self._unrecorded[session] = (link, held[1], upto, held[3])
        else:
            if held is not None:  # another connection's deliveries go first, in order
                self._queue_delivery(session, *self._unrecorded.pop(session))
            if not self._unrecorded:
                self._loop.call_soon(self._record_turn)
            self._unrecorded[session] = (link, session.recorded_upto, upto, list(event.messages))
        session.recorded_upto = upto

    def _record_turn(self) -> None:
        """Queue this turn's deliveries for the store (one change per session)."""
        held, self._unrecorded = self._unrecorded, {}
        for session, (link, start, upto, messages) in held.items():
            self._queue_delivery(session, link, start, upto, messages)

    def _queue_delivery(self, session: ServerSession, link: Link, start: int, upto: int,
                        messages: list[tuple[int, Any]]) -> None:
        future = self.store.enqueue(Change(session.id, session.generation, delivered_from=start,
                                           delivered_upto=upto, messages=tuple(messages),
                                           log=self.log_delivered))
        future.add_done_callback(lambda done: self._committed(link, session, upto, done))

    def _committed(self, link: Link, session: ServerSession, upto: int,
                   done: asyncio.Future[Outcome]) -> None:
        outcome = done.result()
        if outcome.error is not None:
            self._store_failed(session, outcome.error, link)
            return
        for msg_id, why in outcome.effect_errors:
            self.timeline.record("error", id=msg_id, peer=session.id[:8],
                                 detail=f"apply raised {why}"[:200])
        session.state.receiver.commit(upto, self._loop.time())
        if session.link is link and not link.closed.done():
            link.conn.commit(upto, self._loop.time())
            link.pump()

    def _store_failed(self, session: ServerSession, error: Exception,
                      link: Link | None = None) -> None:
        """A commit failed: forget the session here and close its link; never ack it.

        The store holds the truth: the client's next handshake rebuilds the
        session from it, and changes queued after the failure are refused as
        out of sequence, so no gap is ever recorded.
        """
        link = link or session.link
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        if isinstance(error, StaleSession):
            code, reason = 1012, "session taken over by another server process"
        else:
            code, reason = 1011, "session store unavailable"
        self.timeline.record("error", peer=session.id[:8], detail=f"{code} {reason}: {error}"[:300])
        if link is not None and not link.closed.done():
            link.close(code, reason)

    def _call_handler(self, session: ServerSession, msg_id: int, payload: Any) -> Any:
        try:
            assert self.handler is not None
            return self.handler(session, payload)
        except Exception as exc:  # a handler bug is shown, never kills the session
            self.timeline.record("error", id=msg_id, peer=session.id[:8],
                                 detail=f"handler raised {type(exc).__name__}: {exc}"[:200])
            return None

    async def _run_handler(self, session: ServerSession,
                           messages: tuple[tuple[int, Any], ...]) -> None:
        for msg_id, payload in messages:
            try:
                result = self._call_handler(session, msg_id, payload)
                if result is not None:
                    await result
            except Exception as exc:
                self.timeline.record("error", id=msg_id, peer=session.id[:8],
                                     detail=f"handler raised {type(exc).__name__}: {exc}"[:200])
        session.handler_busy = False
        if session.link is not None:
            session.link.conn.grant(1)
            session.link.pump()

    async def _process_later(self, link: Link, event: ToProcess) -> None:
        if self.process_delay is not None:
            lo, hi = self.process_delay
            await asyncio.sleep(self._rng.uniform(lo, hi))
        link.conn.processed(event.id, event.payload, event.size)
        link.pump()

    def _admit_frame(self, link: Link) -> bool:
        """Rate limit and chaos drop, checked for every frame after the handshake
        (False: ignore it)."""
        if not link.conn.ready:
            return True
        if self.rate_limit is not None:
            limit, seconds = self.rate_limit
            now = time.monotonic()
            window = self._rate.setdefault(link, [now, 0])
            if now - window[0] >= seconds:
                window[0], window[1] = now, 0
            window[1] += 1
            if window[1] > limit:
                if window[1] == limit + 1:  # close once; ignore what is still queued
                    retry = max(1, math.ceil(window[0] + seconds - now))
                    reason = hint_reason(f"too many messages (over {limit} in {seconds:g} s)",
                                         retry)
                    self.timeline.record("close", peer=link.peer, detail=f"4429 {reason}")
                    link.pump()  # answers to the frames within the allowance go first
                    link.close(4429, reason)
                return False
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.timeline.record("chaos", peer=link.peer, detail=f"dropped a frame and the "
                                 f"connection (drop={self.drop_rate:g})")
            link.abort()
            return False
        return True

    def _process_request(self, ws: ServerProtocol, request: Request) -> Response | None:
        origin = request.headers.get("Origin")
        if (self.allowed_origins is not None and origin is not None
                and origin.lower().rstrip("/") not in self.allowed_origins):
            self.timeline.record("error", detail=f"origin refused: HTTP 403 ({origin[:100]!r})")
            return ws.reject(403, "Origin not allowed\n")
        if self.throttle is None:
            return None
        limit, window = self.throttle
        now = time.monotonic()
        self._recent_connects = [t for t in self._recent_connects if now - t < window]
        self._recent_connects.append(now)
        if len(self._recent_connects) > limit:
            self.timeline.record("error", detail="connection throttled: HTTP 429")
            response = ws.reject(429, f"Too many connections; retry after {window:g} s\n")
            response.headers["Retry-After"] = str(math.ceil(window))
            return response
        return None

    async def _idle_watch(self, link: Link) -> None:
        assert self.idle_timeout is not None
        while not link.closed.done():
            left = link.conn.last_life + self.idle_timeout - self._loop.time()
            if left <= 0:
                self.timeline.record("close", peer=link.peer, detail="idle timeout")
                if self.idle_close_code is None:
                    link.abort()
                else:
                    link.close(self.idle_close_code, "idle timeout")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), left)

    async def _admit(self, link: Link, hello: HandshakeReceived) -> None:
        """Decide a handshake: token, limits, session; resume waits for the old connection."""
        conn, proto = link.conn, link.ws
        assert proto is not None
        if self._token is not None and not (isinstance(hello.token, str)
                                            and self._token == hello.token):
            conn.refuse(4401, "token refused")
            link.pump()
            return
        token_hash = _hash_token(hello.token)
        if not self._take_slot(proto, hello, token_hash):
            reason = hint_reason(f"too many connections for this token (limit "
                                 f"{self.max_connections_per_token})", 5)
            conn.refuse(4429, reason)
            link.pump()
            return
        session, refusal = self._session_for(hello, token_hash)
        if session is None:
            conn.refuse(4429, refusal)
            link.pump()
            return
        if self.handshake_delay:
            await asyncio.sleep(self.handshake_delay)  # a server that is slow to become ready
        old = session.link
        if old is not None and old is not link:
            # A half-open link the server had not noticed: close it and let it finish
            # closing before this connection takes the session over (PROTOCOL.md 1.1).
            old.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(old.closed), 5)
            old.conn.detach()
        if self._stored:
            try:
                session = await self._claim(session, hello, token_hash)
            except StoreError as exc:
                self.timeline.record("error", peer=link.peer, detail=f"1011 {exc}"[:200])
                conn.refuse(1011, "session store unavailable")
                link.pump()
                return
        if link.closed.done():
            return
        resumed = hello.session == session.id and session.state.connections > 0
        session.link = link
        link.session = session
        conn.accept(session.state, resumed=resumed, last_seen=hello.last_seen,
                    durable=self.store.durable)
        if session.handler_busy:
            conn.grant(0)
        elif self.handler is not None and inspect.iscoroutinefunction(self.handler):
            conn.grant(1)
        link.pump()

    async def _claim(self, fresh: ServerSession, hello: HandshakeReceived,
                     token_hash: str) -> ServerSession:
        """(store) Take the named session over from the store, or record `fresh` there.

        The store is the truth: a session held in memory is rebuilt from it
        (another worker may have moved it on); receipts of messages still
        pending carry over.
        """
        store = self.store
        self._record_turn()  # what was delivered so far is in the store before the claim
        wanted = hello.session
        record = None
        if wanted:
            found = await store.load(wanted)
            if found is not None and secrets.compare_digest(found.token_hash, token_hash):
                record = await store.claim(wanted)
            else:
                why = "token differs" if found is not None else store.why_missing(wanted)
                self.timeline.record("state", peer=wanted[:8],
                                     detail=f"cannot resume: {why}; new session")
        if record is None:
            if fresh.id == wanted:  # held only in memory, gone from the store
                fresh = self._new_session(token_hash)
            record = await store.claim(fresh.id, create=StoredSession(
                fresh.id, fresh.id, token_hash))
            if record is None:
                raise StoreError(f"{store.url}: could not create session {fresh.id[:8]}…")
            fresh.generation = record.generation
            if record.generation > 1:  # a fresh id that already existed: never
                raise StoreError(f"{store.url}: session id collision")
            fresh.state.receiver.hold_acks = True
            return fresh
        old = self.sessions.get(record.key)
        state = to_session(record, Sender(self.max_unacked), Receiver(max_held=self.max_unacked))
        if old is not None:
            handles = {out.id: out.handle for out in
                       (*old.state.sender.inflight.values(), *old.state.sender.unsent)}
            for out in state.sender.unsent:
                out.handle = handles.get(out.id)
        if fresh is not old and self.sessions.get(fresh.id) is fresh:
            del self.sessions[fresh.id]  # the placeholder _session_for made
        session = ServerSession(record.key, record.token_hash, state,
                                generation=record.generation,
                                recorded_upto=record.last_delivered)
        self.sessions[record.key] = session
        return session

    def _take_slot(self, proto: WebSocketProtocol, hello: HandshakeReceived,
                   token_hash: str) -> bool:
        """Count `proto` against its token's `max_connections_per_token`; False when full."""
        limit = self.max_connections_per_token
        if limit is None:
            return True
        live = self._live_per_token.get(token_hash, 0)
        old = self.sessions.get(hello.session) if hello.session else None
        if old is not None and old.link is not None and old.token_hash == token_hash:
            live -= 1  # a resume replaces its own stale connection
        if live >= limit:
            return False
        self._live_per_token[token_hash] = self._live_per_token.get(token_hash, 0) + 1
        self._slots[proto] = token_hash
        return True

    def _session_for(self, hello: HandshakeReceived, token_hash: str,
                     ) -> tuple[ServerSession | None, str]:
        """The session to resume, or a new one; (None, 4429 reason) at the limit.

        A session is never evicted younger than `session_ttl` (PROTOCOL.md 1.1).
        """
        wanted = hello.session
        session = self.sessions.get(wanted) if wanted else None
        if session is not None and secrets.compare_digest(session.token_hash, token_hash):
            return session, ""  # never resume a session created with another token
        owned = [s for s in self.sessions.values() if s.token_hash == token_hash]
        if len(owned) >= self.max_sessions_per_token:
            self._expire_sessions()
            owned = [s for s in self.sessions.values() if s.token_hash == token_hash]
            if len(owned) >= self.max_sessions_per_token:
                now = time.monotonic()
                waits = [s.closed_at + self.session_ttl - now for s in owned
                         if s.link is None and s.closed_at is not None]
                retry = max(1, math.ceil(min(waits))) if waits else 5
                return None, hint_reason(f"too many sessions for this token (limit "
                                         f"{self.max_sessions_per_token})", retry)
        return self._new_session(token_hash), ""

    def _new_session(self, token_hash: str) -> ServerSession:
        session_id = self.store.new_key()  # 144 random bits (+ the store's epoch)
        state = Session(Sender(self.max_unacked), Receiver(max_held=self.max_unacked),
                        id=session_id, token_hash=token_hash)
        session = ServerSession(session_id, token_hash, state)
        self.sessions[session_id] = session
        return session

    def _expire_sessions(self) -> None:
        """Forget sessions whose last connection closed more than `session_ttl` ago."""
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            closed_at = session.closed_at
            if session.link is None and closed_at is not None and \
                    now - closed_at > self.session_ttl:
                del self.sessions[sid]

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(self.session_ttl, 5.0))
            self._expire_sessions()
            if self._stored:
                with contextlib.suppress(StoreError):
                    await self.store.expire(time.time() - self.session_ttl)
