"""One connection of a session, client or server side, with no I/O (the wsproto model).

A `Connection` is fed what arrived (`receive_frame`, `receive_life`) and the
time, and is asked what to write (`data_to_send`), what happened (`events`)
and when to wake it next (`next_deadline`, then `tick`). It owns every
decision PROTOCOL.md makes per connection: both handshakes, frame dispatch,
ack validation, resend order, chunk slicing and joining, dead-link and
heartbeat deadlines, backpressure, and what a close means. The asyncio layer
(`wsnb.link`) only moves bytes and arms one timer.

State that outlives the connection lives in a `Session` (outbox, in-flight,
receive window); a connection that is no longer attached (a resume replaced
it) never touches its session again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from wsnb.errors import ProtocolError
from wsnb.protocol import envelope
from wsnb.protocol.close import CloseRule, close_rule, retry_hint
from wsnb.protocol.heartbeat import dead_link_bound
from wsnb.protocol.session import AckViolation, Outgoing, Session

#: Bytes a ``msg`` frame adds around its payload (keys, id, ts, signature).
MSG_OVERHEAD = 160
_ACK_PREFIX = b'{"type":"ack","upto":'


def wall_ms() -> int:
    """Milliseconds since the epoch (``ts`` on the wire is the sender's wall clock)."""
    return int(time.time() * 1000)


class Phase(IntEnum):
    """Where a connection is: before READY, READY, or finished."""

    OPENING = 0
    READY = 1
    CLOSED = 2


@dataclass(frozen=True, slots=True)
class Options:
    """Per-side settings (sizes in UTF-8 bytes, times in seconds unless ``_ms``).

    ``chunk_size`` is in code points. ``max_size`` is the largest frame this
    side accepts (a server advertises it). ``heartbeat_ms`` is what a server
    advertises; a client learns it from ``handshake_ack``. ``raw`` (client
    only) speaks plain frames: no handshake, no acks. A joined message over
    ``offload_bytes`` is handed out as `ToDecode` (parsed off the event loop).
    """

    secret: bytes | None = field(default=None, repr=False)
    raw: bool = False
    chunk_size: int = 512 * 1024
    max_size: int = 1 << 20
    max_message: int = 64 * 1024 * 1024
    replay_window_ms: int = 300_000
    heartbeat_ms: int = 0
    send_pings: bool = True
    watch_dead_link: bool = True
    handshake_timeout: float = 10.0
    final_codes: frozenset[int] = frozenset()
    retry_codes: frozenset[int] = frozenset()
    max_batch: int = 256
    max_batch_bytes: int = 64 * 1024
    offload_bytes: int = 1 << 20


# ----- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeReceived:
    """(server) A valid ``handshake``: call `accept` or `refuse`."""

    token: str | None
    session: str | None
    last_seen: int
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is READY. ``lost`` means a session existed and the peer lost it."""

    session: str
    resumed: bool
    lost: bool
    heartbeat_ms: int
    max_size: int
    durable: bool
    renumbered: int = 0


@dataclass(frozen=True, slots=True)
class Written:
    """Messages handed to the transport (``chunks`` > 1: one message, that many slices)."""

    messages: tuple[Outgoing, ...]
    chunks: int = 1


@dataclass(frozen=True, slots=True)
class ChunkProgress:
    """Slices of one chunked message handed to the transport so far."""

    message: Outgoing
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Acked:
    """The peer confirmed these messages."""

    messages: tuple[Outgoing, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """A message failed for good: nacked by the peer, too large, or the session ended."""

    message: Outgoing
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Delivered:
    """Messages handed to the application, in id order, each exactly once."""

    messages: tuple[tuple[int, Any], ...]


@dataclass(frozen=True, slots=True)
class ToProcess:
    """(defer_processing) A verified message: process it, then call `processed`."""

    id: int
    payload: Any
    size: int


@dataclass(frozen=True, slots=True)
class ToDecode:
    """A big joined message: run `Connection.decode` off the event loop, then `decoded`."""

    id: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A message id already delivered arrived again: acked again, dropped."""

    id: int


@dataclass(frozen=True, slots=True)
class Complained:
    """This side refused one of the peer's frames (``nack`` or ``error`` sent)."""

    code: str
    reason: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class PeerError:
    """The peer sent an ``error`` frame."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A heartbeat ``ping`` arrived (answered unless pings are ignored)."""


@dataclass(frozen=True, slots=True)
class PingSent:
    """This side sent a heartbeat ``ping``."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A ``pong`` arrived: ``rtt_ms`` is the round trip of its ping."""

    rtt_ms: float


@dataclass(frozen=True, slots=True)
class CloseNow:
    """Close the transport with `code` (a close frame; ``abort`` drops TCP at once)."""

    code: int
    reason: str
    abort: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over; `rule` says what the client does next."""

    code: int
    reason: str
    rule: CloseRule
    hint_s: float | None
    by_us: bool


Event = (HandshakeReceived | Ready | Written | ChunkProgress | Acked | Refused | Delivered
         | ToProcess | ToDecode | Duplicate | Complained | PeerError | PingReceived | PingSent
         | PongReceived | CloseNow | Closed)


@dataclass(eq=False)
class _Series:
    """A chunked message being written slice by slice."""

    message: Outgoing
    frames: Iterator[str]
    total: int
    done: int = 0


# ----- the connection -----------------------------------------------------------


@dataclass(eq=False)
class Connection:
    """One connection's protocol state machine (client or server side).

    Create with `client` or `server`. Feed `receive_frame` / `receive_life`,
    then drain `data_to_send` and `events`; call `tick` at `next_deadline`.
    Knobs the owner may change on a live connection: ``defer_processing``
    (server workers: each verified message comes out as `ToProcess`, and
    `processed` puts it back in order), ``ack_hold`` (seconds to hold acks:
    chaos), ``answer_pings``, ``room`` (via `grant`), ``hold_outbox`` (write no
    message but the first ``greeting`` ones: an ``on_open`` hook is running).
    """

    is_client: bool
    options: Options
    session: Session | None
    now: float
    token: str | None = field(default=None, repr=False)
    features: tuple[str, ...] = ("chunk", "z", "upto")
    phase: Phase = Phase.OPENING
    peer_max_size: int = 1 << 20
    heartbeat_ms: int = 0
    rtt_ms: float | None = None
    room: int | None = None
    answer_pings: bool = True
    attached: bool = True
    defer_processing: bool = False
    ack_hold: float = 0.0
    hold_outbox: bool = False
    greeting: int = 0
    _events: list[Event] = field(default_factory=list)
    _control: list[str] = field(default_factory=list)
    _series: _Series | None = None
    _last_life: float = 0.0
    _bound: float = float("inf")
    _next_ping: float = float("inf")
    _open_deadline: float = float("inf")
    _assembler: envelope.ChunkAssembler | None = None
    _had_session: bool = False

    # --- construction ---------------------------------------------------------

    @classmethod
    def client(cls, session: Session, options: Options, now: float,
               token: str | None = None) -> Connection:
        """A client connection whose transport just opened: the handshake is queued."""
        conn = cls(True, options, session, now, token=token)
        conn._last_life = now
        conn._setup_assembler()
        if options.raw:
            conn.phase = Phase.READY
            session.sender.requeue()
            return conn
        conn._had_session = session.id is not None
        conn._control.append(envelope.handshake_frame(
            token, session=session.id, last_seen=session.receiver.settled,
            features=conn.features))
        conn._open_deadline = now + options.handshake_timeout
        return conn

    @classmethod
    def server(cls, options: Options, now: float) -> Connection:
        """A server connection whose transport just opened: waiting for ``handshake``."""
        conn = cls(False, options, None, now)
        conn._last_life = now
        conn._open_deadline = now + options.handshake_timeout
        conn.heartbeat_ms = options.heartbeat_ms
        conn._setup_assembler()
        return conn

    def _setup_assembler(self) -> None:
        opts = self.options
        slice_min = max(1, envelope.slice_chars(opts.chunk_size, envelope.MIN_MAX_SIZE))
        self._assembler = envelope.ChunkAssembler(
            max_chunks=-(-opts.max_message // slice_min), max_bytes=opts.max_message)

    # --- what the driver reads ------------------------------------------------

    def events(self) -> list[Event]:
        """What happened since the last call, in order."""
        out, self._events = self._events, []
        return out

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def backlogged(self) -> bool:
        """Messages wait for the application (`grant`): stop reading from the transport."""
        return self.session is not None and bool(self.session.receiver.ready)

    @property
    def writing(self) -> bool:
        """Whether frames are waiting to be written."""
        if self._control:
            return True
        if self.phase is not Phase.READY or self.session is None or not self.attached:
            return False
        if self.hold_outbox and not self.greeting:
            return self._series is not None
        return self._series is not None or bool(self.session.sender.unsent)

    def next_deadline(self) -> float | None:
        """When `tick` must run next (None: nothing scheduled)."""
        if self.phase is Phase.CLOSED:
            return None
        deadline = min(self._open_deadline, self._next_ping, self._last_life + self._bound)
        if self.session is not None and self.session.receiver.ack_deadline is not None:
            deadline = min(deadline, self.session.receiver.ack_deadline)
        return None if deadline == float("inf") else deadline

    # --- time ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run what is due at `now`: handshake deadline, dead link, ping, delayed ack."""
        self.now = now
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.OPENING and now >= self._open_deadline:
            self._close(4408, "handshake not received in time" if not self.is_client
                        else f"no handshake_ack within {self.options.handshake_timeout:g} s",
                        abort=self.is_client)
            return
        if now >= self._last_life + self._bound:
            self._close(1006, f"dead link: nothing received for {self._bound:.2f} s",
                        abort=True)
            return
        if now >= self._next_ping:
            self._control.append(f'{{"ts":{wall_ms()},"type":"ping"}}')
            self._events.append(PingSent())
            interval = self.heartbeat_ms / 1000
            self._next_ping = max(self._next_ping + interval, now + interval / 2)
        self._queue_ack(now, force=False)

    @property
    def last_life(self) -> float:
        """When anything last arrived (the dead-link and idle clocks start here)."""
        return self._last_life

    def receive_life(self, now: float) -> None:
        """Bytes arrived (a partial frame, a WebSocket ping, anything): the link lives."""
        self._last_life = now

    # --- receiving ----------------------------------------------------------

    def receive_frame(self, raw: bytes | str, now: float) -> None:
        """One complete WebSocket text frame arrived."""
        self._last_life = self.now = now
        if self.phase is Phase.CLOSED:
            return
        if self.options.raw:
            self._deliver_raw(raw)
            return
        if self.phase is Phase.OPENING:
            self._receive_opening(raw)
            return
        if raw[:21] == _ACK_PREFIX and raw[-1:] == b"}":  # hot path: our own acks
            upto = raw[21:-1]
            if upto.isdigit() and len(upto) < 17:
                self._on_ack(int(upto), None)
                return
        try:
            frame = envelope.parse_frame(raw)
        except ProtocolError as exc:
            self._complain(exc)
            return
        kind = frame["type"]
        if kind == "msg":
            self._on_msg(frame, raw if isinstance(raw, bytes) else None, len(raw))
        elif kind == "ack":
            cover, one = frame.get("upto"), frame.get("id")
            self._on_ack(cover if type(cover) is int else None,
                         one if type(one) is int else None)
        elif kind == "chunk":
            self._on_chunk(frame)
        elif kind == "ping":
            self._events.append(PingReceived())
            if self.answer_pings:
                self._control.append(envelope.frame_text("pong", ts=frame["ts"]))
        elif kind == "pong":
            self.rtt_ms = max(0.0, wall_ms() - frame["ts"])
            self._events.append(PongReceived(self.rtt_ms))
        elif kind == "nack":
            self._on_nack(frame)
        elif kind == "error":
            self._events.append(PeerError(frame["code"], frame["reason"][:200]))
        else:  # a handshake frame after the handshake
            self._complain(ProtocolError("bad_envelope", f"unexpected {kind} frame"))

    def receive_binary(self, data: bytes, now: float) -> None:
        """A binary frame: raw mode delivers it; the wsnb protocol answers ``error``."""
        self._last_life = self.now = now
        if self.options.raw:
            self._deliver_raw(data)
        elif self.phase is Phase.READY:
            self._complain(ProtocolError("bad_envelope", "binary frames are not part of the "
                                         "wsnb protocol (send JSON text)"))

    def _receive_opening(self, raw: bytes | str) -> None:
        try:
            frame = envelope.parse_frame(raw)
        except ProtocolError as exc:
            if self.is_client:
                self._violation(f"bad frame before handshake_ack: {exc}")
            else:
                self._control.append(envelope.frame_text("error", code=exc.code,
                                                         reason=exc.reason))
                self._close(1002, f"bad handshake: {exc.code}")
            return
        kind = frame["type"]
        if self.is_client:
            if kind == "ping":
                self._control.append(envelope.frame_text("pong", ts=frame["ts"]))
            elif kind == "error":
                self._close(1002, f"server refused the handshake: {frame['code']}: "
                            f"{frame['reason']}"[:120])
            elif kind == "handshake_ack":
                self._on_handshake_ack(frame)
            else:
                self._violation(f"expected handshake_ack, got {kind}")
        elif kind == "handshake" and self._open_deadline != float("inf"):
            self._open_deadline = float("inf")  # the server layer decides now
            self._events.append(HandshakeReceived(
                frame["token"], frame["session"], frame["last_seen"],
                tuple(frame.get("features", ()))))
        elif kind == "pong" and self._open_deadline == float("inf"):
            pass  # allowed before READY
        elif self._open_deadline == float("inf"):  # a frame before our handshake_ack
            reason = f"{kind} sent before handshake_ack (wait for READY)"
            self._control.append(envelope.frame_text("error", code="not_ready", reason=reason))
            self._close(1002, reason)
        else:
            self._control.append(envelope.frame_text(
                "error", code="bad_envelope", reason="first frame must be a handshake"))
            self._close(1002, "bad handshake: bad_envelope")

    def _on_handshake_ack(self, frame: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        if frame["v"] != envelope.VERSION:
            self._violation(f"server speaks version {frame['v']}, not 1")
            return
        if frame["max_size"] < envelope.MIN_MAX_SIZE:
            self._violation(f"handshake_ack max_size {frame['max_size']} is below "
                            f"{envelope.MIN_MAX_SIZE} bytes")
            return
        resumed = bool(frame["resumed"]) and frame["session"] == session.id
        renumbered = 0
        if resumed and frame["last_acked"] < session.sender.resolved_upto:
            # The server acked more than it now has: its store went back in time (a
            # lagging replica, a commit lost to a power cut). Those messages are gone
            # from both sides; say so, and start a new session instead of stalling.
            had = session.sender.resolved_upto
            session.id = None
            self._events.append(Complained(
                "peer_lost_acked", f"the server resumed at id {frame['last_acked']} but had "
                f"acked up to {had}: {had - frame['last_acked']} acked message(s) lost; "
                "starting a new session"))
            self._close(1011, "server lost acked messages")
            return
        if resumed:
            try:
                done = session.sender.resume(frame["last_acked"], "handshake_ack last_acked")
            except AckViolation as exc:
                self._violation(exc.reason)
                return
            if done:
                self._events.append(Acked(tuple(done)))
        else:
            renumbered = len(session.sender.renumber())
            session.receiver.reset()
        session.id = frame["session"]
        self.peer_max_size = frame["max_size"]
        self.heartbeat_ms = frame["heartbeat_ms"]
        self._start_ready()
        self._events.append(Ready(session.id, resumed, self._had_session and not resumed,
                                  frame["heartbeat_ms"], frame["max_size"],
                                  frame.get("durable", False), renumbered))

    def _start_ready(self) -> None:
        self.phase = Phase.READY
        self._open_deadline = float("inf")
        if self.heartbeat_ms > 0 and self.options.watch_dead_link:
            self._bound = dead_link_bound(self.heartbeat_ms)
            if self.options.send_pings:
                self._next_ping = self.now + self.heartbeat_ms / 1000

    # --- server handshake decisions --------------------------------------------

    def accept(self, session: Session, *, resumed: bool, last_seen: int, durable: bool = False,
               max_size: int | None = None) -> None:
        """(server) Take `session` over: ``handshake_ack`` is queued, resends follow it.

        Any older connection of the session is detached first: nothing it
        does afterwards touches the session.
        """
        if session.owner is not None and session.owner is not self:
            session.owner.detach()
        session.owner = self
        self.session = session
        if resumed and last_seen < session.sender.resolved_upto:
            self._events.append(Complained(
                "peer_lost_acked", f"the client resumed at id {last_seen} but had acked up "
                f"to {session.sender.resolved_upto}: its store went back in time; "
                f"{session.sender.resolved_upto - last_seen} acked message(s) lost"))
        if resumed:
            try:
                done = session.sender.resume(last_seen, "handshake last_seen")
            except AckViolation as exc:
                self._violation(exc.reason)
                return
            if done:
                self._events.append(Acked(tuple(done)))
        else:
            session.sender.requeue()
        assert session.id is not None
        session.connections += 1
        session.closed_at = None
        ack: dict[str, Any] = {
            "type": "handshake_ack", "v": envelope.VERSION, "session": session.id,
            "resumed": resumed, "last_acked": session.receiver.settled,
            "heartbeat_ms": self.options.heartbeat_ms,
            "max_size": max_size if max_size is not None else self.options.max_size}
        if durable:
            ack["durable"] = True
        self._control.append(envelope.dumps(ack))
        self._start_ready()
        self._events.append(Ready(session.id, resumed, False, self.options.heartbeat_ms,
                                  ack["max_size"], durable))

    def refuse(self, code: int, reason: str) -> None:
        """(server) Refuse the handshake with close `code`."""
        self._close(code, reason)

    # --- dispatch -------------------------------------------------------------

    def _on_ack(self, upto: int | None, one: int | None) -> None:
        session = self.session
        if session is None or not self.attached:
            return
        try:
            done = session.sender.ack(id=one, upto=upto)
        except AckViolation as exc:
            self._violation(exc.reason)
            return
        if done:
            self._events.append(Acked(tuple(done)))

    def _on_nack(self, frame: dict[str, Any]) -> None:
        session = self.session
        if session is None or not self.attached:
            return
        try:
            out = session.sender.nack(frame["id"])
        except AckViolation as exc:
            self._violation(exc.reason)
            return
        if out is not None:
            self._events.append(Refused(out, frame["code"], frame["reason"][:200]))
            if self._series is not None and self._series.message is out:
                self._series = None  # stop writing the slices of a refused message

    def _on_chunk(self, frame: dict[str, Any]) -> None:
        assert self._assembler is not None
        try:
            text = self._assembler.add(frame)
        except ProtocolError as exc:
            self._complain(exc)
            return
        if text is None:
            return
        raw = text.encode("utf-8")
        if len(raw) > self.options.offload_bytes:
            self._events.append(ToDecode(frame["id"], raw))  # parsed off the event loop
        else:
            self.decoded(frame["id"], self.decode(frame["id"], raw), len(raw))

    def decode(self, chunk_id: int, raw: bytes) -> Any:
        """Parse, verify and decode a joined chunk series; returns the payload or the
        `ProtocolError` that refuses it. Pure and thread-safe: `ToDecode` runs it in a
        worker thread so a big message never stalls heartbeats."""
        try:
            joined = envelope.parse_frame(raw)
            if joined["type"] != "msg" or joined["id"] != chunk_id:
                raise ProtocolError("bad_envelope", f"chunks {chunk_id} must join into msg "
                                    f"{chunk_id}")
            return self._payload(joined, raw)
        except ProtocolError as exc:
            exc.id, exc.frame_type = chunk_id, "chunk"
            return exc

    def decoded(self, id: int, result: Any, size: int) -> None:
        """The outcome of `decode` (a payload, or the `ProtocolError` that refuses it)."""
        if isinstance(result, ProtocolError):
            self._complain(result)
        elif self.defer_processing:
            self._events.append(ToProcess(id, result, size))
        else:
            self.processed(id, result, size)

    def _payload(self, frame: dict[str, Any], raw: bytes | None) -> Any:
        opts = self.options
        if opts.secret is not None:
            session_id = self.session.id if self.session is not None else None
            envelope.verify_msg(frame, opts.secret, session=session_id or "", now_ms=wall_ms(),
                                replay_window_ms=opts.replay_window_ms, raw=raw)
        return envelope.decode_payload(frame, opts.max_message)

    def _on_msg(self, frame: dict[str, Any], raw: bytes | None, size: int) -> None:
        session = self.session
        if session is None or not self.attached:
            return
        if frame["z"] == 1 and raw is not None and size > self.options.offload_bytes // 16:
            self._events.append(ToDecode(frame["id"], raw))  # inflating may take long
            return
        try:
            payload = self._payload(frame, raw)
        except ProtocolError as exc:  # refused for good: nack (the id counts as consumed)
            self._complain(exc)
            return
        if self.defer_processing:
            self._events.append(ToProcess(frame["id"], payload, size))
        else:
            self.processed(frame["id"], payload, size)

    def processed(self, id: int, payload: Any, size: int = 0) -> None:
        """A message finished processing (directly, or after `ToProcess`): order it.

        Work that finishes after the transport closed still counts while this
        connection owns the session (nothing newer took it over), so slow
        workers never livelock a client that keeps being cut.
        """
        session = self.session
        if session is None or not self.attached:
            return
        try:
            fresh = session.receiver.accept(id, payload, self.now, size)
        except ProtocolError as exc:  # too far ahead: not delivered, not acked, resent later
            self._complain(ProtocolError("too_far_ahead", exc.reason))
            return
        if not fresh:
            self._events.append(Duplicate(id))
        self._deliver()

    def commit(self, upto: int, now: float) -> None:
        """(durable session) A store recorded deliveries up to `upto`: ack them."""
        self.now = now
        session = self.session
        if session is None or not self.attached:
            return
        session.receiver.commit(upto, now)
        self._queue_ack(now, force=not self.ack_hold)

    def grant(self, n: int | None) -> None:
        """The application can take `n` more messages (None: no limit); deliver what waits."""
        self.room = n
        self._deliver()

    def _deliver(self) -> None:
        session = self.session
        if session is None:
            return
        receiver = session.receiver
        if not receiver.ready or self.room == 0:
            return
        if self.ack_hold:
            receiver.ack_delay, receiver.ack_every = self.ack_hold, 1 << 30
        taken = receiver.take(self.now, self.room)
        if self.room is not None:
            self.room -= len(taken)
        if taken:
            self._events.append(Delivered(tuple(taken)))

    def _deliver_raw(self, raw: bytes | str) -> None:
        session = self.session
        assert session is not None
        receiver = session.receiver
        receiver.last_released += 1
        receiver.ready.append((receiver.last_released, raw))
        self._deliver()
        receiver.take_ack()  # raw mode has no acks

    def _complain(self, exc: ProtocolError) -> None:
        """Answer a bad frame: ``nack`` when it refuses a message, ``error`` otherwise.

        A nacked id counts as consumed, so the messages after it keep flowing.
        """
        self._events.append(Complained(exc.code, exc.reason[:200], exc.id))
        if exc.frame_type is not None and exc.id is not None:
            self._control.append(envelope.frame_text("nack", id=exc.id, code=exc.code,
                                                     reason=exc.reason))
            if self.session is not None and self.attached:
                self.session.receiver.skip(exc.id)
                self._deliver()
        else:
            self._control.append(envelope.frame_text("error", code=exc.code, reason=exc.reason))

    def _violation(self, reason: str) -> None:
        """The peer broke the protocol: report, resolve nothing, close with 1002."""
        self._events.append(Complained("protocol_violation", reason[:200]))
        self._close(1002, reason[:120])

    def _close(self, code: int, reason: str, *, abort: bool = False) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._events.append(CloseNow(code, reason, abort))

    # --- sending --------------------------------------------------------------

    def _queue_ack(self, now: float, *, force: bool) -> None:
        session = self.session
        if session is None or not self.attached or self.options.raw:
            return
        if self.phase is not Phase.READY:  # a client sends nothing but handshake (and pong)
            return
        receiver = session.receiver
        if self.ack_hold:
            receiver.ack_delay, receiver.ack_every = self.ack_hold, 1 << 30
        if receiver.wants_ack and (force or receiver.ack_due(now)):
            upto = receiver.take_ack()
            if upto is not None:
                self._control.append(f'{{"type":"ack","upto":{upto}}}')

    def end_of_input(self, now: float) -> None:
        """A burst of input was processed: ack now (latency) rather than at the deadline."""
        self._queue_ack(now, force=not self.ack_hold)

    def data_to_send(self, now: float, *, messages: bool = True) -> list[str | bytes]:
        """Frames to write now, in order: control frames, then one batch of messages.

        With ``messages=False`` (the transport's buffer is full) only control
        frames. A chunked message gives one slice per call, so pings and acks
        interleave. Messages returned are counted as written (`Written`).
        """
        self.now = now
        frames: list[str | bytes] = []
        if self._control:
            frames, self._control = self._control, []  # type: ignore[assignment]
        if not messages or self.phase is not Phase.READY or not self.attached:
            return frames
        session = self.session
        assert session is not None
        if self._series is not None:
            self._next_slice(frames, now)
            return frames
        sender = session.sender
        if not sender.unsent or (self.hold_outbox and not self.greeting):
            return frames
        batch: list[Outgoing] = []
        size = 0
        opts = self.options
        limit = min(opts.max_batch, self.greeting) if self.hold_outbox else opts.max_batch
        while sender.unsent and len(batch) < limit and size < opts.max_batch_bytes:
            out = sender.unsent[0]
            if not out.saved:  # durable session: a store has not recorded it yet
                break
            if not opts.raw and self._is_big(out):
                if batch:
                    break
                sender.take()
                self._start_series(out, now)
                self._next_slice(frames, now)
                return frames
            sender.take()
            frames.append(self._frame_for(out))
            batch.append(out)
            size += out.size
        if self.hold_outbox:
            self.greeting -= len(batch)
        for out in batch:
            sender.written(out, now, expect_ack=not opts.raw)
        self._events.append(Written(tuple(batch)))
        return frames

    def _frame_for(self, out: Outgoing) -> str | bytes:
        if self.options.raw:
            return out.data
        session = self.session
        assert session is not None
        return envelope.encode_msg(out.id, out.data, ts=wall_ms(), z=out.z,
                                   secret=self.options.secret, session=session.id or "")

    def _is_big(self, out: Outgoing) -> bool:
        return (out.size + MSG_OVERHEAD > self.peer_max_size
                or len(out.data) + MSG_OVERHEAD > self.options.chunk_size)

    def _start_series(self, out: Outgoing, now: float) -> None:
        text = self._frame_for(out)
        assert isinstance(text, str)
        bounds = envelope.plan_slices(text, self.options.chunk_size,
                                      self.peer_max_size - envelope.CHUNK_OVERHEAD)
        if len(bounds) < 2:  # a frame just under the limits: still a series of two
            bounds = [(0, len(text) // 2), (len(text) // 2, len(text))]
        self._series = _Series(out, envelope.iter_planned_chunks(text, out.id, bounds),
                               len(bounds))

    def _next_slice(self, frames: list[str | bytes], now: float) -> None:
        series = self._series
        assert series is not None and self.session is not None
        frames.append(next(series.frames))
        series.done += 1
        self._events.append(ChunkProgress(series.message, series.done, series.total))
        if series.done == series.total:
            self._series = None
            self.session.sender.written(series.message, now)
            self._events.append(Written((series.message,), series.total))

    # --- the end --------------------------------------------------------------

    def connection_lost(self, now: float, code: int | None, reason: str, *,
                        by_us: bool = False) -> None:
        """The transport closed. In-flight messages go back to the outbox (if attached)."""
        self.now = now
        self.phase = Phase.CLOSED
        code = 1006 if code is None else code
        rule = close_rule(code)
        if code in self.options.final_codes:
            rule = CloseRule(rule.words, reconnect=False, auth=rule.auth)
        elif code in self.options.retry_codes:
            rule = CloseRule(rule.words, reconnect=True)
        session = self.session
        if session is not None and self.attached:
            if self._series is not None:  # half written: resent whole, before later ids
                session.sender.unsent.appendleft(self._series.message)
                self._series = None
            session.sender.requeue()
            session.closed_at = now
            if rule.fail_largest and not self.options.raw and self.is_client:
                held = list(session.sender.unsent)
                if held:
                    culprit = max(held, key=lambda out: out.size)
                    session.sender.forget(culprit.id)
                    self._events.append(Refused(culprit, "too_large",
                                                f"peer closed with {code}: message too big"))
        if self._assembler is not None:
            self._assembler.reset()
        hint = retry_hint(reason) if code == 4429 else None
        self._events.append(Closed(code, reason, rule, hint, by_us))

    def detach(self) -> None:
        """A newer connection took the session over: never touch it again."""
        self.attached = False
