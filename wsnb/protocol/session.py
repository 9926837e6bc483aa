"""Reliable delivery state of one session: no I/O, clock passed in.

`Sender` owns the outbox (not yet written) and the in-flight messages (written,
not yet acked), in id order; `Receiver` owns the dedupe and reorder buffer and
decides when to ack; `Session` is both plus what a store must keep to resume.
Rules (PROTOCOL.md, "Delivery guarantees"):

- ids start at 1 and grow by 1 per message per session;
- after a reconnect the sender forgets what the peer says it has and resends
  the rest, in id order, before anything new (`requeue`, `resume`);
- a lost session renumbers what is left from 1, in the old order (`renumber`);
- the receiver delivers each id once, in order, holding early ids until the
  gap fills, and re-acks duplicates at once;
- a nacked id counts as consumed (`Receiver.skip`), so one refused message
  never stalls the ones after it;
- an ack, ``last_acked`` or ``last_seen`` above the highest id written to a
  connection of the session is a lie (`AckViolation`): nothing is resolved.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from wsnb.errors import ProtocolError


class AckViolation(ProtocolError):
    """The peer acknowledged an id that was never written to it (PROTOCOL.md 1.1)."""

    def __init__(self, what: str, claimed: int, written: int) -> None:
        super().__init__("ack_violation", f"{what} {claimed} is above the highest id written "
                         f"({written}): nothing was resolved")
        self.claimed = claimed
        self.written = written


@dataclass(slots=True, eq=False)
class Outgoing:
    """One message the sender holds until it is acked (or refused)."""

    id: int
    data: str  # serialized payload (base64 text when z == 1); raw mode: the frame itself
    z: int
    size: int  # bytes counted by buffered_amount
    accepted_at: float
    written_at: float = float("nan")
    writes: int = 0  # > 1 means it was resent
    renumbered: bool = False  # resent across a lost session: at-least-once
    binary: bool = False  # raw mode: send as a binary frame
    handle: Any = None  # the I/O layer's receipt
    saved: bool = True  # False until a durable store recorded it: not written before


class Sender:
    """Outbox + in-flight messages of one session, bounded by count and bytes."""

    def __init__(self, max_messages: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("Sender limits must be >= 1")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.next_id = 1
        self.unsent: deque[Outgoing] = deque()
        self.inflight: dict[int, Outgoing] = OrderedDict()  # O(1) pop from the front
        self.held_bytes = 0
        self.max_written = 0  # highest id written to any connection of this session

    @property
    def pending(self) -> int:
        """Messages held: not written yet, or written and not acked."""
        return len(self.unsent) + len(self.inflight)

    def has_room(self, size: int) -> bool:
        """Whether a message of `size` bytes fits now (an empty outbox takes anything)."""
        if self.pending == 0:
            return True
        return self.pending < self.max_messages and self.held_bytes + size <= self.max_bytes

    def add(self, data: str, now: float, *, z: int = 0, size: int | None = None,
            binary: bool = False, handle: Any = None, saved: bool = True) -> Outgoing:
        """Accept a message into the outbox and give it the next id.

        ``saved=False`` (durable sessions): nothing from this message on is
        written until the store recorded it and the owner sets ``out.saved``.
        """
        out = Outgoing(self.next_id, data, z, len(data) if size is None else size, now,
                       binary=binary, handle=handle, saved=saved)
        self.next_id += 1
        self.unsent.append(out)
        self.held_bytes += out.size
        return out

    def take(self) -> Outgoing | None:
        """The next message to write, in id order, or None."""
        return self.unsent.popleft() if self.unsent else None

    def written(self, out: Outgoing, now: float, *, expect_ack: bool = True) -> None:
        """`out` was handed to the socket; without acks (raw mode) it is forgotten now."""
        out.writes += 1
        out.written_at = now
        if out.id > self.max_written:
            self.max_written = out.id
        if expect_ack:
            self.inflight[out.id] = out
        else:
            self.held_bytes -= out.size

    def check_ack(self, value: int, what: str = "ack") -> None:
        """Raise `AckViolation` if `value` names an id never written."""
        if value > self.max_written:
            raise AckViolation(what, value, self.max_written)

    def ack(self, id: int | None = None, upto: int | None = None) -> list[Outgoing]:
        """Forget acked messages and return them (ids written and already acked are ignored).

        Raises `AckViolation`, resolving nothing, for an id above `max_written`.
        """
        if upto is not None and upto > self.max_written:
            raise AckViolation("ack upto", upto, self.max_written)
        if id is not None and id > self.max_written:
            raise AckViolation("ack id", id, self.max_written)
        done: list[Outgoing] = []
        if upto is not None:
            while self.inflight:
                first = next(iter(self.inflight))
                if first > upto:
                    break
                done.append(self.inflight.pop(first))
            # After a reconnect, acked ids may sit in the outbox again.
            while self.unsent and self.unsent[0].id <= upto:
                done.append(self.unsent.popleft())
        if id is not None:
            out = self.inflight.pop(id, None)
            if out is not None:
                done.append(out)
        for out in done:
            self.held_bytes -= out.size
        return done

    def nack(self, id: int) -> Outgoing | None:
        """The peer refused `id` for good: forget it and return it."""
        if id > self.max_written:
            raise AckViolation("nack id", id, self.max_written)
        return self.forget(id)

    def forget(self, id: int) -> Outgoing | None:
        """Drop message `id` wherever it is held (refused for good); return it."""
        out = self.inflight.pop(id, None)
        if out is None:
            for index, candidate in enumerate(self.unsent):
                if candidate.id == id:
                    out = candidate
                    del self.unsent[index]
                    break
        if out is not None:
            self.held_bytes -= out.size
        return out

    def requeue(self) -> list[Outgoing]:
        """The connection dropped: in-flight messages go back to the front, in id order."""
        back = list(self.inflight.values())
        self.inflight.clear()
        self.unsent.extendleft(reversed(back))
        return back

    def resume(self, last_acked: int, what: str = "last_acked") -> list[Outgoing]:
        """The peer already has every id ≤ `last_acked`: forget those.

        Raises `AckViolation` (nothing forgotten) for a claim above `max_written`.
        """
        self.check_ack(last_acked, what)
        self.requeue()
        return self.ack(upto=last_acked)

    def renumber(self) -> list[Outgoing]:
        """The session was lost: number what is left from 1, in the old order."""
        self.requeue()
        for new_id, out in enumerate(self.unsent, start=1):
            out.id = new_id
            if out.writes:
                out.renumbered = True
        self.next_id = len(self.unsent) + 1
        self.max_written = 0
        return list(self.unsent)

    def clear(self) -> list[Outgoing]:
        """Drop everything (the client was closed); return what was dropped."""
        dropped = list(self.inflight.values()) + list(self.unsent)
        self.inflight.clear()
        self.unsent.clear()
        self.held_bytes = 0
        return dropped

    @property
    def resolved_upto(self) -> int:
        """Every id up to this one was acked or refused: the peer said it has them."""
        first = self.next_id
        if self.inflight:
            first = min(first, next(iter(self.inflight)))
        if self.unsent:
            first = min(first, self.unsent[0].id)
        return first - 1

    def pending_ids(self) -> list[int]:
        """Every held id, in id order (in flight first, then not yet written)."""
        return [*self.inflight, *(out.id for out in self.unsent)]


_SKIPPED = object()


class Receiver:
    """Delivers each incoming id once, in order, and decides when to ack.

    Messages move from the reorder buffer (`held`, early ids) to `ready` (in
    order, not yet taken by the application) to delivered (`take`). Only
    delivered ids are acked, so an application that stops taking stops the
    acks, and the sender feels backpressure; nothing acked is ever dropped.
    Acks go out within `ack_delay` seconds of the first unacked delivery or
    every `ack_every` deliveries, whichever first (PROTOCOL.md: 100 ms / 64).
    """

    def __init__(self, max_held: int = 10_000, ack_every: int = 64,
                 ack_delay: float = 0.1, max_held_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.held_bytes = 0
        self._held_size: dict[int, int] = {}
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        self.last_released = 0  # highest id moved, in order, to `ready`
        self.last_delivered = 0  # highest id the application has taken
        self.held: dict[int, Any] = {}
        self.ready: deque[tuple[int, Any]] = deque()
        self.pending_acks = 0
        self.ack_deadline: float | None = None
        self.duplicates = 0
        self._ack_now = False
        # Durable sessions: a delivery is acked only once a store has recorded it
        # (`commit`); until then a crash must bring the message again.
        self.hold_acks = False
        self.committed = 0  # highest id a store has recorded as delivered

    @property
    def settled(self) -> int:
        """Highest id the peer may forget: committed when durable, else delivered."""
        return self.committed if self.hold_acks else self.last_delivered

    def restore(self, last_delivered: int) -> None:
        """Start from a stored session: every id <= `last_delivered` was delivered and committed."""
        self.reset()
        self.last_released = self.last_delivered = self.committed = last_delivered

    def reset(self) -> None:
        """A new session starts: ids restart at 1."""
        self.last_released = self.last_delivered = self.committed = 0
        self.held.clear()
        self.ready.clear()
        self._held_size.clear()
        self.held_bytes = 0
        self.pending_acks = 0
        self.ack_deadline = None
        self._ack_now = False

    def accept(self, id: int, payload: Any, now: float, size: int = 0) -> bool:
        """Take message `id` (`size` bytes); False if it is a duplicate (acked again, dropped).

        Early ids wait in the reorder buffer, bounded by `max_held` ids and
        `max_held_bytes`; past either bound `ProtocolError` says so and the
        message is neither delivered nor acked (the sender resends it later).
        """
        if id <= self.last_released or id in self.held:
            self.duplicates += 1
            self._ack_now = True  # the sender lost our ack: tell it again now
            return False
        if id - self.last_released > self.max_held:
            raise ProtocolError(
                "too_large",
                f"id {id} is more than {self.max_held} ahead of {self.last_released}", id)
        early = id != self.last_released + 1
        if early and self.held_bytes + size > self.max_held_bytes:
            raise ProtocolError(
                "too_large", f"reorder buffer full ({self.held_bytes} bytes held waiting for "
                f"id {self.last_released + 1})", id)
        if not early:
            self.ready.append((id, payload))
            self.last_released = id
            if self.held:
                self._release()
            return True
        self.held[id] = payload
        if size:
            self._held_size[id] = size
            self.held_bytes += size
        return True

    def skip(self, id: int) -> None:
        """`id` was refused (nacked): count it as consumed so later ids can flow."""
        if id <= self.last_released or id in self.held:
            return
        if id - self.last_released > self.max_held:
            return  # far beyond anything the peer may have in flight: nothing to unblock
        self.held[id] = _SKIPPED
        self._release()

    def _release(self) -> None:
        held, sizes, ready = self.held, self._held_size, self.ready
        nxt = self.last_released + 1
        while nxt in held:
            ready.append((nxt, held.pop(nxt)))
            if sizes:
                self.held_bytes -= sizes.pop(nxt, 0)
            nxt += 1
        self.last_released = nxt - 1

    def take(self, now: float, room: int | None = None) -> list[tuple[int, Any]]:
        """Hand up to `room` ready messages (all with None) to the application, in order."""
        ready = self.ready
        out: list[tuple[int, Any]] = []
        last = self.last_delivered
        while ready and (room is None or len(out) < room or ready[0][1] is _SKIPPED):
            item = ready.popleft()
            last = item[0]
            if item[1] is not _SKIPPED:
                out.append(item)
        moved = last - self.last_delivered
        if moved:
            self.last_delivered = last
            if not self.hold_acks:
                self._owe(moved, now)
        return out

    def commit(self, upto: int, now: float) -> None:
        """(durable) A store recorded every delivery up to `upto`: those may be acked now."""
        upto = min(upto, self.last_delivered)
        if upto > self.committed:
            moved, self.committed = upto - self.committed, upto
            self._owe(moved, now)

    def _owe(self, moved: int, now: float) -> None:
        if self.pending_acks == 0:
            self.ack_deadline = now + self.ack_delay
        self.pending_acks += moved

    @property
    def wants_ack(self) -> bool:
        """Whether anything is waiting to be acked (deliveries or a duplicate)."""
        return bool(self.pending_acks) or self._ack_now

    def ack_due(self, now: float) -> bool:
        """Whether an ack should go out now."""
        if self._ack_now:
            return True
        if not self.pending_acks:
            return False
        return self.pending_acks >= self.ack_every or (
            self.ack_deadline is not None and now >= self.ack_deadline)

    def take_ack(self) -> int | None:
        """The ``upto`` to send now (clears what is pending), or None if nothing to ack."""
        if not self.pending_acks and not self._ack_now:
            return None
        self.pending_acks = 0
        self.ack_deadline = None
        self._ack_now = False
        return self.settled


@dataclass(eq=False)
class Session:
    """What one side keeps across connections: its id, both directions' state.

    This is what a session store must keep to resume (`wsnb.store`): the id
    and token binding, the ids delivered (`receiver.committed`), the un-acked
    messages still owed (`sender`), and when its last connection closed.
    """

    sender: Sender
    receiver: Receiver
    id: str | None = None
    token_hash: str = ""
    closed_at: float | None = None
    connections: int = 0
    owner: Any = None  # the connection that holds the session now (server side)
