"""One side of a session on asyncio: moves frames between a websocket and the protocol core.

A `Link` outlives connections: the client and the server hand it one
websocket at a time (`run`), and it keeps the `Sender`/`Receiver` state in
between. It owns writing (outbox, resends, chunks, acks, pings), reading
(dispatch by frame type), and dead-link detection. Handshakes, reconnects
and who-delivers-to-whom stay in `client.py` and `server.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from wsnb._receipt import Receipt
from wsnb.errors import ProtocolError, Refused
from wsnb.protocol import envelope
from wsnb.protocol.heartbeat import DeadLinkTimer
from wsnb.protocol.session import Outgoing, Receiver, Sender

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection

    from wsnb.timeline import Timeline

Deliver = Callable[[int, Any], Awaitable[None] | None]

#: Frames whose serialized text is over this many bytes are sent as chunks
#: (the peer's max_size permitting).
DEFAULT_CHUNK_SIZE = 512 * 1024
FRAME_OVERHEAD = 256


_ACK_PREFIX = '{"type":"ack","upto":'
_ACK_PREFIXES = (_ACK_PREFIX, _ACK_PREFIX.encode())
_CLOSE_BRACES = ("}", b"}")


def now_ms() -> int:
    return int(time.time() * 1000)


def chunk_chars(chunk_size: int, peer_max_size: int) -> int:
    """Characters per slice so a chunk frame stays under the peer's `max_size` bytes.

    A character is at most 4 UTF-8 bytes and JSON escaping at most doubles ASCII.
    """
    return max(1, min(chunk_size, (peer_max_size - FRAME_OVERHEAD) // 4))


class Link:
    """Reliable delivery for one session, over one websocket at a time."""

    def __init__(
        self,
        *,
        timeline: Timeline,
        deliver: Deliver,
        raw: bool = False,
        secret: bytes | None = None,
        peer: str = "",
        max_outbox: int = 10_000,
        max_outbox_bytes: int = 64 * 1024 * 1024,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compress_min: int | None = None,
        max_message: int = 64 * 1024 * 1024,
        replay_window_ms: int = 300_000,
        workers: int = 0,
        process_delay: Callable[[], float] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.timeline = timeline
        self.deliver = deliver
        self.raw = raw
        self.secret = secret
        self.peer = peer
        self.chunk_size = chunk_size
        self.compress_min = compress_min
        self.max_message = max_message
        self.replay_window_ms = replay_window_ms
        self.workers = workers
        self.process_delay = process_delay
        self.on_change = on_change or (lambda: None)
        self.sender = Sender(max_outbox, max_outbox_bytes)
        self.receiver = Receiver(max_held=max_outbox)
        self.peer_max_size = 1 << 20
        self.heartbeat_ms = 0
        self.send_pings = False
        self.ws: Connection | None = None
        self.rtt_ms: float | None = None
        self.answer_pings = True
        self.last_received = 0.0
        self.last_written: Outgoing | None = None
        self.counters = dict.fromkeys(
            ("sent", "written", "acked", "resent", "nacked", "received", "duplicates"), 0)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._assembler = envelope.ChunkAssembler(
            max_chunks=-(-max_message // 1024), max_chars=max_message)
        self._deadlink: DeadLinkTimer | None = None

    # ----- sending ---------------------------------------------------------

    @property
    def buffered_amount(self) -> int:
        """Bytes not yet written plus bytes written and not acked."""
        return self.sender.held_bytes

    def has_room(self, size: int) -> bool:
        return self.sender.has_room(size)

    async def wait_room(self, size: int) -> None:
        """Wait until the outbox takes a message of `size` bytes (backpressure)."""
        while not self.sender.has_room(size):
            self._room.clear()
            await self._room.wait()

    def enqueue(self, data: str | bytes, *, z: int = 0, queued: bool = False,
                wake: bool = True) -> Receipt:
        """Accept serialized payload `data` into the outbox; the writer sends it when open."""
        now = time.monotonic()
        binary = isinstance(data, bytes)
        out = self.sender.add(data, now, z=z, binary=binary)  # type: ignore[arg-type]
        out.handle = receipt = Receipt(out.id)
        self.counters["sent"] += 1
        self.timeline.record("sent", direction="out", id=out.id, size=out.size, peer=self.peer)
        if queued:
            self.timeline.record("queued", direction="out", id=out.id, size=out.size,
                                 peer=self.peer, detail="not READY: held in outbox")
        if wake:  # the caller writes it itself (write_now) when the writer is idle
            self._wake.set()
        return receipt

    def _settled(self) -> None:
        self._room.set()
        self.on_change()

    def fail_all(self, error: Exception, reason: str) -> None:
        """Drop everything held (the user closed); each receipt fails with `error`."""
        for out in self.sender.clear():
            self.timeline.record("dropped", direction="out", id=out.id, size=out.size,
                                 peer=self.peer, detail=reason)
            out.handle._settle("dropped", error)
        self._settled()

    def _frame_for(self, out: Outgoing) -> list[str | bytes]:
        if self.raw:
            return [out.data]
        text = envelope.encode_msg(out.id, out.data, ts=now_ms(), z=out.z, secret=self.secret)
        limit = chunk_chars(self.chunk_size, self.peer_max_size)
        if len(text) <= limit:
            return [text]
        return envelope.split_chunks(text, out.id, limit)  # type: ignore[return-value]

    def _is_big(self, out: Outgoing) -> bool:
        """Whether `out` goes as a chunk series (then it is written alone, in the background)."""
        return len(out.data) + FRAME_OVERHEAD > chunk_chars(self.chunk_size, self.peer_max_size)

    def _take_batch(self) -> list[Outgoing]:
        """Up to 256 small messages (64 KiB) from the front of the outbox, in id order."""
        sender = self.sender
        batch: list[Outgoing] = []
        size = 0
        while sender.unsent and len(batch) < 256 and size < 64 * 1024:
            if self._is_big(sender.unsent[0]):
                break
            out = sender.unsent.popleft()
            batch.append(out)
            size += out.size
        return batch

    async def _writer(self, ws: Connection) -> None:
        sender = self.sender
        while True:
            if not sender.unsent:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.raw or len(sender.unsent) == 1 or self._is_big(sender.unsent[0]):
                await self._write(ws, sender.unsent.popleft())
            else:
                await self._write_batch(ws, self._take_batch())

    async def _write_batch(self, ws: Connection, batch: list[Outgoing]) -> None:
        """Several messages, one transport write: one syscall instead of one per frame."""
        framed = [(out, self._frame_for(out)) for out in batch]
        try:
            async with self._write_lock, ws.send_context():
                protocol = ws.protocol
                for _, frames in framed:
                    for frame in frames:
                        protocol.send_text(frame.encode())
                ws.transport.write(b"".join(protocol.data_to_send()))
        except BaseException:
            self.sender.unsent.extendleft(reversed(batch))  # not written: keep them, in order
            raise
        now = time.monotonic()
        record = self.timeline.record
        for out, frames in framed:
            self.sender.written(out, now, expect_ack=True)
            kind = "resent" if out.writes > 1 or out.renumbered else "written"
            self.counters[kind] += 1
            detail = f"{len(frames)} chunks" if len(frames) > 1 else ""
            if out.renumbered:
                detail = "resent in a new session: at-least-once"
            record(kind, direction="out", id=out.id, size=out.size, peer=self.peer,
                   detail=detail)
            receipt: Receipt = out.handle
            if receipt.state == "queued":
                receipt.state = "written"
        self.last_written = batch[-1]

    async def write_now(self) -> None:
        """Write queued messages from the caller's task when the writer is idle.

        Saves the hop to the writer task on the latency path; while messages
        are in flight, writes a batch in one syscall. A chunked message is left
        to the writer task, so `send` returns its receipt at once. Taking
        messages and locking happen without yielding, so id order holds.
        """
        ws, sender = self.ws, self.sender
        if not sender.unsent:
            return
        if ws is None or self._write_lock.locked() or self._is_big(sender.unsent[0]):
            self._wake.set()
            return
        try:
            if sender.inflight and not self.raw:
                if len(sender.unsent) >= 32:  # streaming: one syscall for many frames
                    await self._write_batch(ws, self._take_batch())
            else:
                await self._write(ws, sender.unsent.popleft())
        except (ConnectionClosed, OSError):
            pass  # kept in the outbox; the connection's reader sees the close
        if sender.unsent:
            self._wake.set()  # the writer flushes the rest when this task yields

    async def _write(self, ws: Connection, out: Outgoing) -> None:
        frames = self._frame_for(out)
        receipt: Receipt = out.handle
        try:
            async with self._write_lock:
                if len(frames) == 1:
                    await ws.send(frames[0])
                else:
                    receipt.chunks = (0, len(frames))
                    for done, frame in enumerate(frames, start=1):
                        await ws.send(frame)
                        receipt.chunks = (done, len(frames))
        except BaseException:
            self.sender.unsent.appendleft(out)  # not written: keep it, in order
            raise
        self.sender.written(out, time.monotonic(), expect_ack=not self.raw)
        self.last_written = out
        kind = "resent" if out.writes > 1 or out.renumbered else "written"
        self.counters[kind] += 1
        detail = f"{len(frames)} chunks" if len(frames) > 1 else ""
        if out.renumbered:
            detail = "resent in a new session: at-least-once"
        self.timeline.record(kind, direction="out", id=out.id, size=out.size, peer=self.peer,
                             detail=detail)
        if self.raw:
            receipt._settle("acked")
            self._settled()
        elif receipt.state == "queued":
            receipt.state = "written"

    async def send_control(self, ws: Connection, text: str) -> None:
        """Write a control frame between messages (never inside a chunk series)."""
        async with self._write_lock:
            await ws.send(text)

    async def _acker(self, ws: Connection) -> None:
        receiver = self.receiver
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            upto = receiver.take_ack()
            if upto is not None:
                await self.send_control(ws, f"{_ACK_PREFIX}{upto}}}")

    async def _pinger(self, ws: Connection) -> None:
        interval = self.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            ts = now_ms()
            await self.send_control(ws, f'{{"ts":{ts},"type":"ping"}}')
            self.timeline.record("ping", direction="out", peer=self.peer)

    async def _watchdog(self, ws: Connection) -> None:
        timer = self._deadlink
        assert timer is not None
        while True:
            left = timer.deadline - time.monotonic()
            if left <= 0:
                self.timeline.record(
                    "error", peer=self.peer,
                    detail=f"dead link: nothing received for {timer.bound:.2f} s; closing")
                ws.transport.abort()
                return
            await asyncio.sleep(left)

    # ----- receiving -------------------------------------------------------

    def _ack_settle(self, done: list[Outgoing]) -> None:
        now = time.monotonic()
        record = self.timeline.record
        for out in done:
            latency = (now - out.written_at) * 1000 if out.writes else 0.0
            receipt: Receipt = out.handle
            receipt.latency_ms = latency
            receipt._settle("acked")
            record("acked", direction="in", id=out.id, size=out.size, peer=self.peer,
                   latency_ms=latency)
        self.counters["acked"] += len(done)
        self._settled()

    async def _on_frame(self, ws: Connection, raw: str | bytes) -> None:
        await self._dispatch(ws, raw)
        receiver = self.receiver
        if not self.workers and receiver.wants_ack:
            await self._ack_inline(ws)

    async def _dispatch(self, ws: Connection, raw: str | bytes) -> None:
        self.last_received = now = time.monotonic()
        if self._deadlink is not None:
            self._deadlink.touch(now)
        if self.raw:
            await self._deliver_raw(raw)
            return
        if raw[:21] in _ACK_PREFIXES and raw[-1:] in _CLOSE_BRACES:  # hot path: our acks
            upto = raw[21:-1]
            if upto.isdigit() and len(upto) < 19:
                self._ack_settle(self.sender.ack(upto=int(upto)))
                return
        try:
            frame = envelope.parse_frame(raw)
        except ProtocolError as exc:
            await self._complain(ws, exc)
            return
        kind = frame["type"]
        if kind == "msg":
            await self._on_msg(ws, frame, len(raw))
        elif kind == "ack":
            if "upto" in frame and type(frame["upto"]) is int:
                self._ack_settle(self.sender.ack(upto=frame["upto"]))
            if "id" in frame and type(frame["id"]) is int:
                self._ack_settle(self.sender.ack(id=frame["id"]))
        elif kind == "chunk":
            try:
                text = self._assembler.add(frame)
            except ProtocolError as exc:
                await self._complain(ws, exc)
                return
            if text is not None:
                await self._on_joined(ws, text, frame["id"])
        elif kind == "ping":
            if self.answer_pings:
                await self.send_control(ws, envelope.frame_text("pong", ts=frame["ts"]))
            self.timeline.record("ping", direction="in", peer=self.peer)
        elif kind == "pong":
            rtt = max(0.0, now_ms() - frame["ts"])
            self.rtt_ms = rtt
            self.timeline.record("pong", direction="in", peer=self.peer, latency_ms=rtt)
            self.on_change()
        elif kind == "nack":
            out = self.sender.nack(frame["id"])
            self.counters["nacked"] += 1
            self.timeline.record("nack", direction="in", id=frame["id"], peer=self.peer,
                                 detail=f"{frame['code']}: {frame['reason']}"[:200])
            if out is not None:
                out.handle._settle("refused", Refused(frame["code"], frame["reason"], out.id))
                self._settled()
        elif kind == "error":
            self.timeline.record("error", direction="in", peer=self.peer,
                                 detail=f"peer says {frame['code']}: {frame['reason']}"[:200])
        else:  # handshake frames after the handshake
            await self._complain(ws, ProtocolError("bad_envelope", f"unexpected {kind} frame"))

    async def _on_joined(self, ws: Connection, text: str, chunk_id: int) -> None:
        """A completed chunk series: a ``msg`` frame, refused by the series' id otherwise."""
        try:
            frame = envelope.parse_frame(text)
            if frame["type"] != "msg" or frame["id"] != chunk_id:
                raise ProtocolError("bad_envelope",
                                    f"chunks {chunk_id} must join into msg {chunk_id}")
        except ProtocolError as exc:
            exc.id, exc.frame_type = chunk_id, "chunk"
            await self._complain(ws, exc)
            return
        await self._on_msg(ws, frame, len(text))

    async def _on_msg(self, ws: Connection, frame: dict[str, Any], size: int) -> None:
        if self.workers:
            await self._work.put((frame, size))
        else:
            await self._process(ws, frame, size)

    async def _process(self, ws: Connection, frame: dict[str, Any], size: int) -> None:
        msg_id = frame["id"]
        try:
            if self.secret is not None:
                envelope.verify_msg(frame, self.secret, now_ms=now_ms(),
                                    replay_window_ms=self.replay_window_ms)
            payload = envelope.decode_payload(frame, self.max_message)
        except ProtocolError as exc:  # refused for good: nack (the id counts as consumed)
            await self._complain(ws, exc)
            return
        if self.process_delay is not None:
            await asyncio.sleep(self.process_delay())
        try:
            ready = self.receiver.accept(msg_id, payload, time.monotonic(), size)
        except ProtocolError as exc:  # too far ahead: not delivered, not acked, resent later
            await self._complain(ws, ProtocolError("too_far_ahead", exc.reason))
            return
        if not ready and self.receiver.duplicates > self.counters["duplicates"]:
            self.counters["duplicates"] = self.receiver.duplicates
            self.timeline.record("dropped", direction="in", id=msg_id, peer=self.peer,
                                 detail="duplicate: acked again, not delivered")
        await self._deliver_many(ready)

    def _more_buffered(self, ws: Connection) -> bool:
        """Whether websockets already holds more incoming messages (then acks can batch)."""
        frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
        try:
            return len(frames) > 0  # type: ignore[arg-type]
        except TypeError:
            return True

    async def _ack_inline(self, ws: Connection) -> None:
        """Ack now if due or if the burst is over: no hop to the acker task."""
        receiver = self.receiver
        if not (receiver.ack_due(time.monotonic()) or not self._more_buffered(ws)):
            return
        if self._write_lock.locked():  # a batch or chunk series is being written
            self._ack_wake.set()
            return
        upto = receiver.take_ack()
        if upto is not None:
            await self.send_control(ws, f"{_ACK_PREFIX}{upto}}}")

    async def _deliver_many(self, ready: list[tuple[int, Any]]) -> None:
        record = self.timeline.record
        for msg_id, payload in ready:
            record("received", direction="in", id=msg_id, peer=self.peer)
            result = self.deliver(msg_id, payload)
            if result is not None:
                await result
        self.counters["received"] += len(ready)
        if self.workers and (ready or self.receiver.ack_due(time.monotonic())):
            self._ack_wake.set()  # without workers, _on_frame acks inline (_ack_inline)
        if ready:
            self.on_change()

    async def _deliver_raw(self, raw: str | bytes) -> None:
        payload: Any = raw
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                payload = json.loads(raw)
        self.counters["received"] += 1
        msg_id = self.counters["received"]
        self.timeline.record("received", direction="in", id=msg_id, size=len(raw), peer=self.peer)
        result = self.deliver(msg_id, payload)
        if result is not None:
            await result
        self.on_change()

    async def _complain(self, ws: Connection, exc: ProtocolError) -> None:
        """Answer a bad frame: ``nack`` when it refuses a message, ``error`` otherwise.

        A nacked id counts as consumed, so the messages after it keep flowing.
        """
        self.timeline.record("error", direction="in", id=exc.id, peer=self.peer,
                             detail=f"refused: {exc.code}: {exc.reason}"[:200])
        if exc.frame_type is not None and exc.id is not None:
            text = envelope.frame_text("nack", id=exc.id, code=exc.code, reason=exc.reason)
        else:
            text = envelope.frame_text("error", code=exc.code, reason=exc.reason)
        with contextlib.suppress(ConnectionClosed):
            await self.send_control(ws, text)
        if exc.frame_type is not None and exc.id is not None and exc.id >= 1:
            await self._deliver_many(self.receiver.skip(exc.id, time.monotonic()))

    async def _worker(self, ws: Connection) -> None:
        while True:
            frame, size = await self._work.get()
            await self._process(ws, frame, size)

    # ----- one connection --------------------------------------------------

    async def run(self, ws: Connection, *, heartbeat_ms: int, send_pings: bool,
                  first: Sequence[str | bytes] = ()) -> None:
        """Drive `ws` until it closes; un-acked messages are requeued for the next one."""
        self.ws = ws
        self.last_received = time.monotonic()
        self.heartbeat_ms = heartbeat_ms
        self._deadlink = (DeadLinkTimer(heartbeat_ms, time.monotonic())
                          if heartbeat_ms > 0 and not self.raw else None)
        self._work: asyncio.Queue[tuple[dict[str, Any], int]] = asyncio.Queue()
        if not self.raw:
            self._settle_acks_on_arrival(ws)
        tasks = [asyncio.ensure_future(self._writer(ws))]
        if not self.raw:
            tasks.append(asyncio.ensure_future(self._acker(ws)))
            if send_pings and heartbeat_ms > 0:
                tasks.append(asyncio.ensure_future(self._pinger(ws)))
            if self._deadlink is not None:
                tasks.append(asyncio.ensure_future(self._watchdog(ws)))
            tasks += [asyncio.ensure_future(self._worker(ws)) for _ in range(self.workers)]
        reader = asyncio.ensure_future(self._read(ws, first))
        try:
            done, _ = await asyncio.wait([reader, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    self.timeline.record("error", peer=self.peer,
                                         detail=f"{type(exc).__name__}: {exc}"[:200])
                    ws.transport.abort()
        finally:
            for task in [reader, *tasks]:
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)
            if not ws.transport.is_closing():
                ws.transport.abort()
            self.ws = None
            self._assembler.reset()
            self.sender.requeue()
            self._deadlink = None

    def _settle_acks_on_arrival(self, ws: Connection) -> None:
        """Settle our acks in websockets' data callback instead of the reader task.

        Saves one event-loop hop on the latency path (the awaiting task wakes
        straight from the socket). Only when no earlier frame is still queued,
        so an ack never overtakes a ``nack`` for the same ids.
        """
        original = getattr(ws, "process_event", None)
        frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
        if original is None or frames is None:
            return  # another websockets version: the reader handles acks as usual
        prefix = _ACK_PREFIXES[1]

        def process_event(event: Any) -> None:
            data = getattr(event, "data", b"")
            if (event.fin and data[:21] == prefix and data[-1:] == b"}" and not len(frames)
                    and event.opcode == 1):
                upto = data[21:-1]
                if upto.isdigit() and len(upto) < 19:
                    self.last_received = now = time.monotonic()
                    if self._deadlink is not None:
                        self._deadlink.touch(now)
                    self._ack_settle(self.sender.ack(upto=int(upto)))
                    return
            original(event)

        ws.process_event = process_event  # type: ignore[method-assign]

    async def _read(self, ws: Connection, first: Sequence[str | bytes]) -> None:
        for raw in first:
            await self._on_frame(ws, raw)
        try:
            if self.raw:  # text stays str, binary stays bytes: the user sees the difference
                async for raw in ws:
                    await self._on_frame(ws, raw)
            else:  # our frames are UTF-8 JSON: the parser takes bytes, no decode/encode trip
                recv = ws.recv
                while True:
                    await self._on_frame(ws, await recv(decode=False))
        except ConnectionClosed:
            pass

