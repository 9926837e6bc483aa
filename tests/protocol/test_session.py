"""Reliable delivery without I/O (PROTOCOL.md "Delivery guarantees"): Sender and Receiver.

The clock is a float passed as ``now``; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsnb.errors import ProtocolError
from wsnb.protocol.session import AckViolation, Outgoing, Sender
from wsnb.protocol.session import Receiver as CoreReceiver


class Receiver(CoreReceiver):
    """The core receiver with an application that takes everything at once:
    `accept` and `skip` return what became deliverable (as `take` hands it out)."""

    def accept(self, id: int, payload: Any, now: float,  # type: ignore[override]
               size: int = 0) -> list[tuple[int, Any]]:
        super().accept(id, payload, now, size)
        return self.take(now)

    def skip(self, id: int, now: float = 0.0) -> list[tuple[int, Any]]:  # type: ignore[override]
        super().skip(id)
        return self.take(now)


def ids(outs: Any) -> list[int]:
    return [o.id for o in outs]


def fill(sender: Sender, n: int, now: float = 0.0) -> list[Outgoing]:
    return [sender.add(f"m{i}", now) for i in range(1, n + 1)]


def write_all(sender: Sender, now: float = 1.0) -> list[Outgoing]:
    written = []
    while (out := sender.take()) is not None:
        sender.written(out, now)
        written.append(out)
    return written


# --------------------------------------------------------------------------- Sender


class TestSender:
    def test_ids_start_at_one_and_grow(self) -> None:
        s = Sender()
        outs = fill(s, 3, now=5.0)
        assert ids(outs) == [1, 2, 3]
        assert s.next_id == 4
        assert [o.data for o in outs] == ["m1", "m2", "m3"]
        assert all(o.accepted_at == 5.0 and o.writes == 0 and not o.renumbered for o in outs)

    def test_add_options(self) -> None:
        s = Sender()
        handle = object()
        out = s.add("QUJD", 1.0, z=1, size=100, binary=True, handle=handle)
        assert (out.z, out.size, out.binary, out.handle) == (1, 100, True, handle)
        assert s.held_bytes == 100

    def test_take_in_order_then_none(self) -> None:
        s = Sender()
        fill(s, 3)
        assert ids(iter(s.take, None)) == [1, 2, 3]
        assert s.take() is None

    def test_take_from_empty(self) -> None:
        assert Sender().take() is None

    def test_written_goes_inflight(self) -> None:
        s = Sender()
        fill(s, 2)
        out = s.take()
        assert out is not None
        s.written(out, 7.5)
        assert list(s.inflight) == [1]
        assert out.writes == 1 and out.written_at == 7.5
        assert s.pending == 2  # one in flight, one unsent
        assert ids(s.unsent) == [2]

    def test_written_without_ack_is_forgotten(self) -> None:
        s = Sender()
        out = s.add("abcd", 0.0)
        assert s.take() is out
        s.written(out, 1.0, expect_ack=False)
        assert s.inflight == {} and s.pending == 0 and s.held_bytes == 0
        assert out.writes == 1

    def test_ack_by_id(self) -> None:
        s = Sender()
        fill(s, 3)
        write_all(s)
        done = s.ack(id=2)
        assert ids(done) == [2]
        assert list(s.inflight) == [1, 3]
        assert s.held_bytes == 4  # "m1" + "m3"

    def test_ack_unknown_id_ignored(self) -> None:
        s = Sender()
        fill(s, 2)
        write_all(s)
        assert s.ack(id=0) == [] and s.ack() == []
        assert s.pending == 2 and s.held_bytes == 4

    def test_ack_above_what_was_written_is_a_violation_resolving_nothing(self) -> None:
        s = Sender()
        fill(s, 3)
        s.written(s.take(), 1.0)  # type: ignore[arg-type]
        for claim in ({"id": 99}, {"upto": 2}, {"upto": 1_000_000}):
            with pytest.raises(AckViolation):
                s.ack(**claim)
        with pytest.raises(AckViolation):
            s.resume(1_000_000)
        with pytest.raises(AckViolation):
            s.nack(3)
        assert s.pending == 3 and list(s.inflight) == [1] and ids(s.unsent) == [2, 3]

    def test_ack_twice(self) -> None:
        s = Sender()
        fill(s, 1)
        write_all(s)
        assert ids(s.ack(id=1)) == [1]
        assert s.ack(id=1) == [] and s.ack(upto=1) == []
        assert s.held_bytes == 0

    def test_ack_upto(self) -> None:
        s = Sender()
        fill(s, 5)
        write_all(s)
        assert ids(s.ack(upto=3)) == [1, 2, 3]
        assert list(s.inflight) == [4, 5]
        assert ids(s.ack(upto=3)) == []
        assert ids(s.ack(upto=5)) == [4, 5]
        assert s.pending == 0 and s.held_bytes == 0

    def test_ack_upto_below_everything(self) -> None:
        s = Sender()
        fill(s, 2)
        write_all(s)
        assert s.ack(upto=0) == []
        assert s.pending == 2

    def test_ack_upto_does_not_touch_unwritten_before_reconnect(self) -> None:
        s = Sender()
        fill(s, 4)
        for _ in range(3):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        s.requeue()  # a reconnect: acks may now cover messages back in the outbox
        assert ids(s.ack(upto=3)) == [1, 2, 3]
        assert ids(s.unsent) == [4]

    def test_ack_upto_and_id_together(self) -> None:
        s = Sender()
        fill(s, 4)
        write_all(s)
        assert sorted(ids(s.ack(id=4, upto=2))) == [1, 2, 4]
        assert list(s.inflight) == [3]

    def test_held_bytes_accounting(self) -> None:
        s = Sender()
        s.add("a" * 10, 0.0)
        s.add("b" * 20, 0.0, size=25)
        s.add("c", 0.0)
        assert s.held_bytes == 36 and s.pending == 3
        write_all(s)
        assert s.held_bytes == 36  # in flight is still held
        s.ack(id=2)
        assert s.held_bytes == 11
        s.nack(3)
        assert s.held_bytes == 10
        s.requeue()
        assert s.held_bytes == 10
        s.ack(upto=1)
        assert s.held_bytes == 0 and s.pending == 0

    def test_has_room_empty_takes_anything(self) -> None:
        s = Sender(max_messages=1, max_bytes=10)
        assert s.has_room(10**12)
        s.add("x" * 1000, 0.0)  # an oversize message still goes alone
        assert s.held_bytes == 1000
        assert not s.has_room(0)

    def test_has_room_by_count(self) -> None:
        s = Sender(max_messages=3, max_bytes=10**9)
        fill(s, 2)
        assert s.has_room(1)
        s.add("x", 0.0)
        assert not s.has_room(1)
        write_all(s)
        assert not s.has_room(1)  # in flight counts too
        s.ack(id=1)
        assert s.has_room(1)

    def test_has_room_by_bytes(self) -> None:
        s = Sender(max_messages=100, max_bytes=10)
        s.add("123456", 0.0)
        assert s.has_room(4)
        assert not s.has_room(5)
        write_all(s)
        assert s.has_room(4) and not s.has_room(5)
        s.ack(upto=1)
        assert s.has_room(10**9)  # empty again

    @pytest.mark.parametrize("kw", [{"max_messages": 0}, {"max_bytes": 0}, {"max_messages": -1}])
    def test_limits_validated(self, kw: dict[str, int]) -> None:
        with pytest.raises(ValueError, match="limits"):
            Sender(**kw)

    def test_nack_inflight(self) -> None:
        s = Sender()
        fill(s, 3)
        write_all(s)
        out = s.nack(2)
        assert out is not None and out.id == 2
        assert list(s.inflight) == [1, 3]
        assert s.nack(2) is None

    def test_nack_unsent(self) -> None:
        s = Sender()
        fill(s, 3)
        out = s.forget(2)
        assert out is not None and out.id == 2
        assert ids(s.unsent) == [1, 3]
        assert s.held_bytes == 4

    def test_nack_unknown(self) -> None:
        s = Sender()
        fill(s, 1)
        assert s.forget(5) is None
        assert s.pending == 1 and s.held_bytes == 2

    def test_requeue_puts_inflight_first_in_id_order(self) -> None:
        s = Sender()
        fill(s, 5)
        for _ in range(3):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        back = s.requeue()
        assert ids(back) == [1, 2, 3]
        assert s.inflight == {}
        assert ids(s.unsent) == [1, 2, 3, 4, 5]
        assert s.pending == 5

    def test_requeue_after_out_of_order_acks(self) -> None:
        s = Sender()
        fill(s, 6)
        for _ in range(4):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        s.ack(id=2)
        s.ack(id=3)
        assert ids(s.requeue()) == [1, 4]
        assert ids(s.unsent) == [1, 4, 5, 6]

    def test_requeue_nothing_inflight(self) -> None:
        s = Sender()
        fill(s, 2)
        assert s.requeue() == []
        assert ids(s.unsent) == [1, 2]

    def test_resent_messages_count_writes(self) -> None:
        s = Sender()
        fill(s, 2)
        write_all(s, 1.0)
        s.requeue()
        written = write_all(s, 2.0)
        assert [o.writes for o in written] == [2, 2]
        assert all(o.written_at == 2.0 for o in written)

    def test_resume_drops_acked_keeps_order(self) -> None:
        s = Sender()
        fill(s, 6)
        for _ in range(4):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        done = s.resume(2)
        assert ids(done) == [1, 2]
        assert ids(s.unsent) == [3, 4, 5, 6]
        assert s.inflight == {}
        assert s.held_bytes == 8
        assert s.next_id == 7  # the session goes on: new ids continue

    def test_resume_zero_keeps_everything(self) -> None:
        s = Sender()
        fill(s, 3)
        write_all(s)
        assert s.resume(0) == []
        assert ids(s.unsent) == [1, 2, 3]

    def test_resume_everything_acked(self) -> None:
        s = Sender()
        fill(s, 3)
        for _ in range(3):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        assert ids(s.resume(3)) == [1, 2, 3]
        assert s.pending == 0 and s.held_bytes == 0

    def test_renumber_from_one_keeps_order(self) -> None:
        s = Sender()
        fill(s, 6)
        for _ in range(3):
            s.written(s.take(), 1.0)  # type: ignore[arg-type]
        s.ack(upto=2)  # ids 3 (written) and 4..6 (not) remain
        left = s.renumber()
        assert ids(left) == [1, 2, 3, 4]
        assert [o.data for o in left] == ["m3", "m4", "m5", "m6"]
        assert [o.renumbered for o in left] == [True, False, False, False]
        assert ids(s.unsent) == [1, 2, 3, 4] and s.inflight == {}
        assert s.next_id == 5
        assert s.add("new", 2.0).id == 5
        assert s.held_bytes == 4 * 2 + 3

    def test_renumber_empty(self) -> None:
        s = Sender()
        fill(s, 2)
        write_all(s)
        s.ack(upto=2)
        assert s.renumber() == []
        assert s.next_id == 1

    def test_clear(self) -> None:
        s = Sender()
        fill(s, 4)
        s.written(s.take(), 1.0)  # type: ignore[arg-type]
        dropped = s.clear()
        assert sorted(ids(dropped)) == [1, 2, 3, 4]
        assert s.pending == 0 and s.held_bytes == 0 and s.inflight == {} and not s.unsent
        assert s.take() is None
        assert s.add("x", 2.0).id == 5  # ids never go back within a session


# --------------------------------------------------------------------------- Receiver


class TestReceiver:
    def test_in_order_delivery(self) -> None:
        r = Receiver()
        assert r.accept(1, "a", 0.0) == [(1, "a")]
        assert r.accept(2, "b", 0.0) == [(2, "b")]
        assert r.last_delivered == 2 and r.held == {}

    def test_payloads_passed_through(self) -> None:
        r = Receiver()
        obj = {"x": [1]}
        assert r.accept(1, obj, 0.0)[0][1] is obj
        assert r.accept(2, None, 0.0) == [(2, None)]  # None is a payload, not "skipped"

    def test_duplicate_not_delivered_forces_ack(self) -> None:
        r = Receiver(ack_every=100, ack_delay=10.0)
        r.accept(1, "a", 0.0)
        r.accept(2, "b", 0.0)
        assert r.take_ack() == 2
        assert not r.ack_due(0.0)
        assert r.accept(1, "a", 0.0) == []
        assert r.duplicates == 1
        assert r.ack_due(0.0)  # at once, not after ack_delay: the sender lost our ack
        assert r.take_ack() == 2
        assert not r.ack_due(0.0)
        assert r.take_ack() is None

    def test_duplicate_before_anything_acks_zero(self) -> None:
        r = Receiver()
        r.accept(3, "c", 0.0)  # held
        assert r.accept(3, "c", 0.0) == []
        assert r.duplicates == 1
        assert r.ack_due(0.0)
        assert r.take_ack() == 0

    def test_reorder_buffer_holds_until_gap_fills(self) -> None:
        r = Receiver()
        assert r.accept(3, "c", 0.0) == []
        assert r.accept(2, "b", 0.0) == []
        assert sorted(r.held) == [2, 3]
        assert r.last_delivered == 0
        assert r.accept(1, "a", 0.0) == [(1, "a"), (2, "b"), (3, "c")]
        assert r.held == {} and r.last_delivered == 3
        assert r.accept(5, "e", 0.0) == []
        assert r.accept(4, "d", 0.0) == [(4, "d"), (5, "e")]

    def test_held_ids_do_not_count_for_acks(self) -> None:
        r = Receiver(ack_every=2)
        r.accept(2, "b", 0.0)
        r.accept(3, "c", 0.0)
        assert not r.ack_due(100.0)
        assert r.take_ack() is None

    def test_skip_unblocks_later_ids(self) -> None:
        r = Receiver()
        assert r.accept(1, "a", 0.0) == [(1, "a")]
        assert r.accept(3, "c", 0.0) == []
        assert r.accept(4, "d", 0.0) == []
        assert r.skip(2, 0.0) == [(3, "c"), (4, "d")]
        assert r.last_delivered == 4 and r.held == {}

    def test_skip_next_and_early(self) -> None:
        r = Receiver()
        assert r.skip(2, 0.0) == []  # early: held as consumed
        assert r.skip(1, 0.0) == []  # now 1 and 2 are both consumed
        assert r.last_delivered == 2
        assert r.accept(3, "c", 0.0) == [(3, "c")]

    def test_skipped_id_arriving_again_is_duplicate(self) -> None:
        r = Receiver()
        r.skip(2, 0.0)
        assert r.accept(2, "b", 0.0) == []
        assert r.duplicates == 1
        assert r.accept(1, "a", 0.0) == [(1, "a")]  # 2 stays skipped
        assert r.last_delivered == 2

    def test_skip_delivered_or_held_is_noop(self) -> None:
        r = Receiver()
        r.accept(1, "a", 0.0)
        r.accept(3, "c", 0.0)
        assert r.skip(1, 0.0) == []
        assert r.skip(3, 0.0) == []
        assert r.accept(2, "b", 0.0) == [(2, "b"), (3, "c")]  # 3 was not replaced

    def test_skip_counts_for_ack(self) -> None:
        r = Receiver(ack_every=1)
        r.skip(1, 0.0)
        assert r.ack_due(0.0) and r.take_ack() == 1

    def test_too_far_ahead(self) -> None:
        r = Receiver(max_held=5)
        assert r.accept(5, "e", 0.0) == []  # exactly max_held ahead is fine
        with pytest.raises(ProtocolError) as info:
            r.accept(6, "f", 0.0)
        assert info.value.code == "too_large" and info.value.id == 6
        assert 6 not in r.held
        for i in range(1, 5):
            r.accept(i, str(i), 0.0)
        assert r.last_delivered == 5
        assert r.accept(10, "j", 0.0) == []  # the window moved
        with pytest.raises(ProtocolError):
            r.accept(11, "k", 0.0)

    def test_ack_every(self) -> None:
        r = Receiver(ack_every=3, ack_delay=10.0)
        r.accept(1, "a", 0.0)
        r.accept(2, "b", 0.0)
        assert not r.ack_due(0.0)
        r.accept(3, "c", 0.0)
        assert r.ack_due(0.0)
        assert r.take_ack() == 3
        assert not r.ack_due(0.0)
        assert r.pending_acks == 0 and r.ack_deadline is None

    def test_ack_every_counts_a_burst(self) -> None:
        r = Receiver(ack_every=3, ack_delay=10.0)
        r.accept(3, "c", 0.0)
        r.accept(2, "b", 0.0)
        r.accept(1, "a", 0.0)  # releases three at once
        assert r.ack_due(0.0) and r.take_ack() == 3

    def test_ack_delay_on_fake_clock(self) -> None:
        r = Receiver(ack_every=64, ack_delay=0.1)
        r.accept(1, "a", 100.0)
        assert r.ack_deadline == 100.0 + 0.1
        assert not r.ack_due(100.0)
        assert not r.ack_due(100.09)
        assert r.ack_due(100.0 + 0.1)  # exactly at the deadline
        assert r.ack_due(101.0)
        assert r.take_ack() == 1

    def test_ack_deadline_set_by_first_unacked_delivery(self) -> None:
        r = Receiver(ack_every=64, ack_delay=0.1)
        r.accept(1, "a", 0.0)
        r.accept(2, "b", 0.09)  # does not push the deadline
        assert r.ack_due(0.1)
        assert r.take_ack() == 2
        r.accept(3, "c", 5.0)  # a new deadline after the ack
        assert not r.ack_due(5.05)
        assert r.ack_due(5.1)

    def test_protocol_defaults(self) -> None:
        r = Receiver()
        assert (r.ack_every, r.ack_delay) == (64, 0.1)
        for i in range(1, 64):
            r.accept(i, i, 0.0)
        assert not r.ack_due(0.0)
        r.accept(64, 64, 0.0)
        assert r.ack_due(0.0)

    def test_nothing_to_ack(self) -> None:
        r = Receiver()
        assert not r.ack_due(10**9)
        assert r.take_ack() is None

    def test_reset(self) -> None:
        r = Receiver(ack_every=100)
        r.accept(1, "a", 0.0)
        r.accept(3, "c", 0.0)
        r.accept(1, "a", 0.0)  # duplicate: ack forced
        r.reset()
        assert r.last_delivered == 0 and r.held == {}
        assert r.pending_acks == 0 and r.ack_deadline is None
        assert not r.ack_due(10**9) and r.take_ack() is None
        assert r.accept(1, "new", 0.0) == [(1, "new")]  # ids restart at 1


# --------------------------------------------------------------------------- model


# A sender and a receiver over a channel that loses, duplicates and reorders frames,
# with disconnects at random moments. After a reconnect the sender resumes from what
# the receiver (the server's session) says it has. Delivery must be exactly-once, in order.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 3)),     # the app sends k messages
        st.tuples(st.just("write"), st.integers(1, 4)),    # the writer puts k frames on the wire
        st.tuples(st.just("deliver"), st.integers(0, 50)),  # frame at index i arrives
        st.tuples(st.just("drop"), st.integers(0, 50)),     # frame at index i is lost
        st.tuples(st.just("dup"), st.integers(0, 50)),      # frame at index i is duplicated
        st.tuples(st.just("ack_in"), st.integers(0, 50)),   # ack at index i arrives
        st.tuples(st.just("ack_drop"), st.integers(0, 50)),  # ack at index i is lost
        st.tuples(st.just("tick"), st.integers(0, 200)),     # the clock advances (ms)
        st.tuples(st.just("disconnect"), st.just(0)),
    ),
    max_size=120,
)


class Model:
    def __init__(self, ack_every: int, max_messages: int) -> None:
        self.now = 0.0
        self.sender = Sender(max_messages=max_messages)
        self.receiver = Receiver(max_held=10_000, ack_every=ack_every, ack_delay=0.1)
        self.wire: list[tuple[int, str]] = []  # sender -> receiver: (id, payload)
        self.acks: list[tuple[str, int]] = []  # receiver -> sender: ("upto"|"id", n)
        self.sent: list[str] = []
        self.delivered: list[tuple[int, str]] = []
        self.refused = 0

    def send(self, k: int) -> None:
        for _ in range(k):
            payload = f"p{len(self.sent) + 1}"
            if not self.sender.has_room(len(payload)):
                self.refused += 1  # backpressure: the app would wait; this one is not sent
                continue
            self.sender.add(payload, self.now)
            self.sent.append(payload)

    def write(self, k: int) -> None:
        for _ in range(k):
            out = self.sender.take()
            if out is None:
                return
            self.sender.written(out, self.now)
            self.wire.append((out.id, out.data))

    def deliver(self, i: int) -> None:
        if not self.wire:
            return
        msg_id, payload = self.wire.pop(i % len(self.wire))
        ready = self.receiver.accept(msg_id, payload, self.now)
        for got_id, _ in ready:
            self.acks.append(("id", got_id))  # some peers ack one by one
        self.delivered.extend(ready)
        self.maybe_ack()

    def maybe_ack(self) -> None:
        if self.receiver.ack_due(self.now):
            upto = self.receiver.take_ack()
            assert upto is not None
            self.acks.append(("upto", upto))

    def ack_in(self, i: int) -> None:
        if not self.acks:
            return
        form, n = self.acks.pop(i % len(self.acks))
        assert n <= self.receiver.last_delivered
        done = self.sender.ack(**{form: n})
        for out in done:  # the sender only forgets what the receiver has
            assert out.id <= self.receiver.last_delivered

    def disconnect(self) -> None:
        self.wire.clear()  # what was on the wire of the old connection is gone
        self.acks.clear()
        self.sender.resume(self.receiver.last_delivered)  # handshake_ack.last_acked

    def step(self, op: str, arg: int) -> None:
        if op == "send":
            self.send(arg)
        elif op == "write":
            self.write(arg)
        elif op == "deliver":
            self.deliver(arg)
        elif op == "drop" and self.wire:
            self.wire.pop(arg % len(self.wire))
        elif op == "dup" and self.wire:
            self.wire.append(self.wire[arg % len(self.wire)])
        elif op == "ack_in":
            self.ack_in(arg)
        elif op == "ack_drop" and self.acks:
            self.acks.pop(arg % len(self.acks))
        elif op == "tick":
            self.now += arg / 1000
            self.maybe_ack()
        elif op == "disconnect":
            self.disconnect()

    def check_invariants(self) -> None:
        got = [i for i, _ in self.delivered]
        assert got == list(range(1, len(got) + 1))  # in order, no gaps, no repeats
        assert self.receiver.last_delivered == len(got)
        held = list(self.sender.inflight.values()) + list(self.sender.unsent)
        assert self.sender.held_bytes == sum(o.size for o in held)
        unsent = [o.id for o in self.sender.unsent]
        inflight = list(self.sender.inflight)
        assert unsent == sorted(unsent) and inflight == sorted(inflight)
        assert not unsent or not inflight or max(inflight) < min(unsent)
        # the sender still holds every message the receiver has not delivered
        kept = {o.id for o in held}
        assert set(range(self.receiver.last_delivered + 1, len(self.sent) + 1)) <= kept

    def drain(self) -> None:
        """A clean connection at the end: everything left gets through. Bounded."""
        for _ in range(3):
            self.disconnect()
            self.write(len(self.sent) + 1)
            while self.wire:
                self.deliver(0)
            self.now += 1.0
            self.maybe_ack()
            while self.acks:
                self.ack_in(0)
            if self.sender.pending == 0:
                return


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(1, 5), st.integers(1, 30))
def test_model_exactly_once_in_order(ops: list[tuple[str, int]], ack_every: int,
                                     max_messages: int) -> None:
    m = Model(ack_every=ack_every, max_messages=max_messages)
    for op, arg in ops:
        m.step(op, arg)
        m.check_invariants()
    m.drain()
    m.check_invariants()
    assert m.sender.pending == 0 and m.sender.held_bytes == 0
    assert [p for _, p in m.delivered] == m.sent  # exactly once, in order
    assert m.receiver.held == {}


def test_model_smoke_lossy_run() -> None:
    """A fixed, busy schedule: loss, duplicates, reordering and two disconnects."""
    m = Model(ack_every=2, max_messages=50)
    script = [("send", 3), ("write", 3), ("drop", 0), ("dup", 0), ("deliver", 1),
              ("deliver", 0), ("send", 3), ("write", 4), ("deliver", 2), ("disconnect", 0),
              ("write", 4), ("dup", 1), ("deliver", 3), ("deliver", 0), ("ack_drop", 0),
              ("tick", 150), ("send", 2), ("write", 4), ("deliver", 0), ("disconnect", 0),
              ("write", 10), ("deliver", 0), ("deliver", 0)]
    for op, arg in script:
        m.step(op, arg)
        m.check_invariants()
    m.drain()
    assert [p for _, p in m.delivered] == m.sent == [f"p{i}" for i in range(1, 9)]
    assert m.receiver.duplicates > 0


def test_reorder_buffer_is_bounded_in_bytes() -> None:
    receiver = Receiver(max_held_bytes=1000)
    receiver.accept(2, "a", 0.0, size=600)
    with pytest.raises(ProtocolError, match="reorder buffer full"):
        receiver.accept(3, "b", 0.0, size=600)
    assert receiver.held_bytes == 600
    assert receiver.accept(1, "first", 0.0, size=600) == [(1, "first"), (2, "a")]
    assert receiver.held_bytes == 0
    assert receiver.accept(3, "b", 0.0, size=600) == [(3, "b")]
