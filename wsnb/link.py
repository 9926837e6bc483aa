"""The asyncio driver of one `Connection`: moves bytes, arms one timer, records events.

A `Link` sits between a `wsnb.transport.WebSocketProtocol` (bytes) and a
`wsnb.protocol.connection.Connection` (decisions). It feeds what arrives,
writes what the connection asks while the transport accepts more, pauses
reading while the application is behind (backpressure), and wakes the
connection at its `next_deadline`. Events that are the same on both sides
(written, acked, refused, pings, complaints) are recorded on the timeline
and settle receipts here; the rest go to the owner (`Client` or `Server`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsnb._receipt import Receipt
from wsnb.errors import Refused as RefusedError
from wsnb.protocol.connection import (
    Acked,
    ChunkProgress,
    CloseNow,
    Complained,
    Connection,
    Duplicate,
    Event,
    PeerError,
    PingReceived,
    PingSent,
    PongReceived,
    Refused,
    ToDecode,
    Written,
)

if TYPE_CHECKING:
    from wsnb.timeline import Timeline
    from wsnb.transport import WebSocketProtocol

#: Slices or batches written per turn of the event loop before yielding to others.
WRITES_PER_TURN = 8


class Link:
    """Drives `conn` over one WebSocket until it closes."""

    def __init__(self, conn: Connection, *, timeline: Timeline, peer: str,
                 on_event: Callable[[Event], None], raw_ping_s: float | None = None,
                 accept_frame: Callable[[Link], bool] | None = None) -> None:
        self.conn = conn
        self.accept_frame = accept_frame  # the server's rate limit and chaos: False drops it
        self.session: Any = None  # the owner's session object (server)
        self.timeline = timeline
        self.peer = peer
        self.on_event = on_event
        self.ws: WebSocketProtocol | None = None
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.raw_ping_s = raw_ping_s
        self.rtt_ms: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._soon: asyncio.Handle | None = None
        self._ping_sent: dict[bytes, float] = {}
        self._jobs: set[asyncio.Task[None]] = set()

    # --- transport callbacks ---------------------------------------------------------

    def on_open(self, ws: WebSocketProtocol) -> None:
        self.ws = ws
        if self.raw_ping_s:
            self._raw_ping()
        self.pump()

    def on_life(self) -> None:
        self.conn.receive_life(self.loop.time())

    def on_text(self, data: bytes) -> None:
        if self.accept_frame is not None and not self.accept_frame(self):
            return
        if self.conn.options.raw:
            try:
                self.conn.receive_frame(data.decode("utf-8"), self.loop.time())
            except UnicodeDecodeError:
                if self.ws is not None:
                    self.ws.close(1007, "text frame is not UTF-8")
            return
        self.conn.receive_frame(data, self.loop.time())

    def on_binary(self, data: bytes) -> None:
        self.conn.receive_binary(data, self.loop.time())

    def on_pong(self, data: bytes) -> None:
        sent = self._ping_sent.pop(data, None)
        if sent is not None:
            self.rtt_ms = (self.loop.time() - sent) * 1000
            self.timeline.record("pong", direction="in", peer=self.peer, latency_ms=self.rtt_ms,
                                 detail="WebSocket pong")
            self.on_event(PongReceived(self.rtt_ms))

    def on_input_done(self) -> None:
        self.conn.end_of_input(self.loop.time())
        self.pump()

    def on_writable(self) -> None:
        self.pump()

    def on_closed(self, code: int | None, reason: str, by_us: bool) -> None:
        self.conn.connection_lost(self.loop.time(), code, reason, by_us=by_us)
        for timer in (self._timer, self._soon):
            if timer is not None:
                timer.cancel()
        self._timer = self._soon = None
        self._handle(self.conn.events())
        if not self.closed.done():
            self.closed.set_result(None)

    # --- the pump -------------------------------------------------------------------

    def kick(self) -> None:
        """New messages are in the outbox: write now when idle, else batch on the next turn."""
        sender = self.conn.session.sender if self.conn.session is not None else None
        if sender is not None and not sender.inflight and len(sender.unsent) == 1:
            self.pump()
        elif self._soon is None:
            self._soon = self.loop.call_soon(self._pump_soon)

    def _pump_soon(self) -> None:
        self._soon = None
        self.pump()

    def pump(self) -> None:
        """Hand events out, write what is due, pause or resume reading, re-arm the timer."""
        ws, conn = self.ws, self.conn
        self._handle(conn.events())
        if ws is None:
            return
        now = self.loop.time()
        for _ in range(WRITES_PER_TURN):
            frames = conn.data_to_send(now, messages=ws.writable)
            if frames:
                ws.send(frames)
            self._handle(conn.events())
            if not (ws.writable and conn.writing):
                break
        else:
            if self._soon is None:  # more to write: let other tasks run first
                self._soon = self.loop.call_soon(self._pump_soon)
        if conn.backlogged:
            ws.pause_reading()
        else:
            ws.resume_reading()
        self._arm()

    def _arm(self) -> None:
        deadline = self.conn.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, float("inf")
            return
        if self._timer is not None and self._timer_at <= deadline:
            return  # an earlier wake-up is armed; it re-arms for the later one
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self.conn.tick(self.loop.time())
        self.pump()

    def _raw_ping(self) -> None:
        if self.ws is None or self.closed.done() or not self.raw_ping_s:
            return
        data = str(self.loop.time()).encode()
        self._ping_sent = {data: self.loop.time()}  # one outstanding ping at a time
        self.ws.ping(data)
        self.timeline.record("ping", direction="out", peer=self.peer, detail="WebSocket ping")
        self.loop.call_later(self.raw_ping_s, self._raw_ping)

    # --- events both sides share ------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        if not events:
            return
        record = self.timeline.record
        peer = self.peer
        now = self.loop.time()
        for event in events:
            kind = type(event)
            if kind is Acked:
                assert isinstance(event, Acked)
                for out in event.messages:
                    latency = (now - out.written_at) * 1000 if out.writes else 0.0
                    receipt: Receipt = out.handle
                    if receipt is not None:
                        receipt.latency_ms = latency
                        receipt._settle("acked")
                    record("acked", direction="in", id=out.id, size=out.size, peer=peer,
                           latency_ms=latency)
                self.on_event(event)
            elif kind is Written:
                assert isinstance(event, Written)
                raw = self.conn.options.raw
                for out in event.messages:
                    resent = out.writes > 1 or out.renumbered
                    detail = f"{event.chunks} chunks" if event.chunks > 1 else ""
                    if out.renumbered:
                        detail = "resent in a new session: at-least-once"
                    record("resent" if resent else "written", direction="out", id=out.id,
                           size=out.size, peer=peer, detail=detail)
                    receipt = out.handle
                    if receipt is not None:
                        receipt.id = out.id
                        receipt.at_least_once |= out.renumbered
                        if raw:
                            receipt._settle("written")
                        elif receipt.state == "queued":
                            receipt.state = "written"
                self.on_event(event)
            elif kind is ChunkProgress:
                assert isinstance(event, ChunkProgress)
                if event.message.handle is not None:
                    event.message.handle.chunks = (event.done, event.total)
            elif kind is Refused:
                assert isinstance(event, Refused)
                out = event.message
                record("nack", direction="in", id=out.id, size=out.size, peer=peer,
                       detail=f"{event.code}: {event.reason}"[:200])
                if out.handle is not None:
                    out.handle._settle("refused", RefusedError(event.code, event.reason, out.id))
                self.on_event(event)
            elif kind is Duplicate:
                assert isinstance(event, Duplicate)
                record("dropped", direction="in", id=event.id, peer=peer,
                       detail="duplicate: acked again, not delivered")
            elif kind is Complained:
                assert isinstance(event, Complained)
                record("error", direction="in", id=event.id, peer=peer,
                       detail=f"refused: {event.code}: {event.reason}"[:200])
                self.on_event(event)
            elif kind is PeerError:
                assert isinstance(event, PeerError)
                record("error", direction="in", peer=peer,
                       detail=f"peer says {event.code}: {event.reason}"[:200])
            elif kind is ToDecode:
                assert isinstance(event, ToDecode)
                self._decode_later(event)
            elif kind is PingReceived:
                record("ping", direction="in", peer=peer)
            elif kind is PingSent:
                record("ping", direction="out", peer=peer)
            elif kind is PongReceived:
                assert isinstance(event, PongReceived)
                self.rtt_ms = event.rtt_ms
                record("pong", direction="in", peer=peer, latency_ms=event.rtt_ms)
                self.on_event(event)
            elif kind is CloseNow:
                assert isinstance(event, CloseNow)
                if event.code == 1006 or event.abort:
                    record("error", peer=peer, detail=f"{event.reason}; closing"[:200])
                if self.ws is not None:
                    if event.abort:
                        self.ws.abort()
                    else:  # the error or nack that explains the close goes first
                        self.ws.send(self.conn.data_to_send(now, messages=False))
                        self.ws.close(event.code, event.reason)
                self.on_event(event)
            else:
                self.on_event(event)

    def _decode_later(self, event: ToDecode) -> None:
        """Parse a big joined message in a worker thread; the loop keeps its heartbeats."""
        conn = self.conn

        async def run() -> None:
            result = await asyncio.to_thread(conn.decode, event.id, event.raw)
            conn.decoded(event.id, result, len(event.raw))
            self.pump()

        task = self.loop.create_task(run())
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # --- commands ---------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a clean close (`closed` resolves when the transport is gone)."""
        if self.ws is not None:
            self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop TCP now, as a network fault would."""
        if self.ws is not None:
            self.ws.abort()
