"""The model test: the Connection that production runs, over a simulated hostile network.

Hypothesis drives one client and one server `Connection` (the objects
`wsnb.link` drives in production) through sends both ways, partial
deliveries, cuts, half-open links that the server notices late, resumes,
delayed acks, a slow application and lying acks. Afterwards the network
heals and the invariants of PROTOCOL.md are checked: every message
delivered exactly once and in id order both ways, nothing acked before it
was written, and a lie never resolves anything.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsnb.protocol.connection import (
    Acked,
    CloseNow,
    Complained,
    Connection,
    Delivered,
    Event,
    HandshakeReceived,
    Options,
    Ready,
)
from wsnb.protocol.session import Receiver, Sender, Session

OPTS = Options(chunk_size=48, heartbeat_ms=1000, max_size=4096)


@dataclass
class World:
    """Both sides, the wire between them, and what each application saw."""

    now: float = 0.0
    client_session: Session = field(default_factory=lambda: Session(Sender(), Receiver()))
    server_sessions: dict[str, Session] = field(default_factory=dict)
    client: Connection | None = None
    server: Connection | None = None
    stale_server: Connection | None = None  # a half-open connection the server still holds
    c2s: deque[str | bytes] = field(default_factory=deque)
    s2c: deque[str | bytes] = field(default_factory=deque)
    got_by_server: list[int] = field(default_factory=list)
    got_by_client: list[int] = field(default_factory=list)
    sent_by_client: int = 0
    sent_by_server: int = 0
    lies_caught: int = 0
    room: int | None = None
    sessions_made: int = 0

    # --- plumbing -------------------------------------------------------------

    def server_state(self) -> Session | None:
        return self.server.session if self.server is not None else None

    def connect(self) -> None:
        self.c2s.clear()
        self.s2c.clear()
        self.client = Connection.client(self.client_session, OPTS, self.now, token="t")
        self.client.grant(self.room)
        self.server = Connection.server(OPTS, self.now)
        self.pump()

    def cut(self, server_notices: bool) -> None:
        """The TCP connection dies; the server may not notice (half-open)."""
        if self.client is not None:
            self.client.connection_lost(self.now, 1006, "")
            self.handle_client(self.client.events())
        if self.server is not None:
            if server_notices:
                self.server.connection_lost(self.now, 1006, "")
                self.server.events()
            else:
                self.stale_server = self.server
        self.client = self.server = None
        self.c2s.clear()
        self.s2c.clear()

    def pump(self, turns: int = 2) -> None:
        """Let each side write at most `turns` times (a chunk series can be cut midway)."""
        for _ in range(turns):
            moved = False
            if self.client is not None:
                self.handle_client(self.client.events())
            if self.client is not None:
                frames = self.client.data_to_send(self.now)
                self.c2s.extend(frames)
                moved |= bool(frames)
                self.handle_client(self.client.events())
            if self.server is not None:
                self.handle_server(self.server.events())
            if self.server is not None:
                frames = self.server.data_to_send(self.now)
                self.s2c.extend(frames)
                moved |= bool(frames)
                self.handle_server(self.server.events())
            if not moved:
                return

    def handle_client(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Delivered):
                self.got_by_client.extend(int(p) for _, p in event.messages)
            elif isinstance(event, Acked):
                for out in event.messages:
                    assert out.writes >= 1, "acked before it was written"
                    assert int(out.data) in self.got_by_server, "acked but never delivered"
            elif isinstance(event, CloseNow):
                self.cut(server_notices=True)
                return

    def handle_server(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, HandshakeReceived):
                self.admit(event)
            elif isinstance(event, Delivered):
                self.got_by_server.extend(int(p) for _, p in event.messages)
            elif isinstance(event, Acked):
                for out in event.messages:
                    assert out.writes >= 1
                    assert int(out.data) in self.got_by_client
            elif isinstance(event, CloseNow):
                self.cut(server_notices=True)
                return
            elif isinstance(event, Ready):
                pass

    def admit(self, hello: HandshakeReceived) -> None:
        assert self.server is not None
        session = self.server_sessions.get(hello.session or "")
        if session is None:
            self.sessions_made += 1
            session = Session(Sender(), Receiver(), id=f"S{self.sessions_made}")
            self.server_sessions[session.id or ""] = session
            resumed = False
        else:
            resumed = True
        old = self.stale_server
        if old is not None:  # the resume closes the old connection and waits for it
            old.connection_lost(self.now, 1006, "replaced")
            old.events()
            old.detach()
            self.stale_server = None
        self.server.accept(session, resumed=resumed, last_seen=hello.last_seen)

    def deliver(self, to_server: bool, count: int) -> None:
        queue = self.c2s if to_server else self.s2c
        for _ in range(min(count, len(queue))):
            conn = self.server if to_server else self.client
            if conn is None:
                return
            conn.receive_frame(queue.popleft(), self.now)
            conn.end_of_input(self.now)
            self.pump()

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for conn in (self.client, self.server):
            if conn is not None:
                conn.tick(self.now)
        self.pump()

    def lie(self, by: int) -> None:
        """The server side of the wire claims an ack for ids never written."""
        if self.client is None or not self.client.ready:
            return
        claim = self.client_session.sender.max_written + by
        before = self.client_session.sender.pending
        self.client.receive_frame(f'{{"type":"ack","upto":{claim}}}', self.now)
        events = self.client.events()
        assert not any(isinstance(e, Acked) for e in events), "a lie resolved something"
        assert any(isinstance(e, Complained) and e.code == "protocol_violation"
                   for e in events)
        assert any(isinstance(e, CloseNow) and e.code == 1002 for e in events)
        assert self.client_session.sender.pending == before
        self.lies_caught += 1
        self.handle_client(events)


ACTIONS = st.one_of(
    st.tuples(st.just("send_client"), st.integers(1, 120)),
    st.tuples(st.just("send_server"), st.integers(1, 120)),
    st.tuples(st.just("to_server"), st.integers(1, 6)),
    st.tuples(st.just("to_client"), st.integers(1, 6)),
    st.tuples(st.just("cut"), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.05, 0.2, 1.0])),
    st.tuples(st.just("lie"), st.integers(1, 1_000_000)),
    st.tuples(st.just("app"), st.sampled_from([None, 0, 1, 3])),
)


def payload(n: int, size: int) -> str:
    """JSON text of the number n, padded with spaces so some messages need chunks."""
    return json.dumps(n) + " " * size


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, max_size=60))
def test_exactly_once_in_order_both_ways_under_attack(actions: list[tuple[str, Any]]) -> None:
    world = World()
    world.connect()
    for action, arg in actions:
        if action == "send_client":
            world.sent_by_client += 1
            world.client_session.sender.add(payload(world.sent_by_client, arg), world.now)
        elif action == "send_server":
            state = world.server_state()
            # The server's application sends to a session its client has learned of.
            if state is not None and state.id == world.client_session.id:
                world.sent_by_server += 1
                state.sender.add(payload(world.sent_by_server, arg), world.now)
        elif action in ("to_server", "to_client"):
            world.deliver(action == "to_server", arg)
        elif action == "cut":
            world.cut(server_notices=arg)
        elif action == "tick":
            world.tick(arg)
        elif action == "lie":
            world.lie(arg)
        elif action == "app":
            world.room = arg
            if world.client is not None:
                world.client.grant(arg)
        if world.client is None:
            world.connect()
        world.pump()
    # Heal: the application reads everything, the network delivers everything.
    world.room = None
    for _ in range(200):
        if world.client is None or not world.client.ready and not world.c2s and not world.s2c:
            world.cut(server_notices=True)
            world.connect()
        world.client.grant(None)  # type: ignore[union-attr]
        world.pump(50)
        world.deliver(True, 1_000)
        world.deliver(False, 1_000)
        world.tick(0.2)
        done_c = len(world.got_by_server) == world.sent_by_client
        done_s = len(world.got_by_client) == world.sent_by_server
        if done_c and done_s and not world.c2s and not world.s2c:
            break
    assert world.got_by_server == list(range(1, world.sent_by_client + 1))
    assert world.got_by_client == list(range(1, world.sent_by_server + 1))


def test_a_dead_link_is_declared_after_the_bound_and_not_before() -> None:
    world = World()
    world.connect()
    world.deliver(True, 10)
    world.deliver(False, 10)
    client = world.client
    assert client is not None and client.ready
    bound = (2 * 1000 + 500) / 1000
    client.tick(world.now + bound - 0.01)
    assert not any(isinstance(e, CloseNow) for e in client.events())
    client.receive_life(world.now + bound - 0.01)  # a byte of a big frame arrived
    client.tick(world.now + bound + 0.5)
    assert not any(isinstance(e, CloseNow) for e in client.events())
    client.tick(world.now + 2 * bound)
    closes = [e for e in client.events() if isinstance(e, CloseNow)]
    assert closes and closes[0].abort and "dead link" in closes[0].reason


def test_an_old_connection_never_touches_a_session_it_lost() -> None:
    world = World()
    world.connect()
    world.deliver(True, 10)
    world.deliver(False, 10)
    old = world.server
    assert old is not None
    world.cut(server_notices=False)  # half-open: the server still holds `old`
    world.connect()
    world.deliver(True, 10)  # the resume replaces and detaches the old connection
    state = world.server_state()
    assert state is not None and not old.attached
    state.sender.add(payload(1, 0), world.now)
    world.sent_by_server = 1
    world.pump()
    old.connection_lost(world.now, 1006, "late cleanup")  # the old cleanup runs late
    old.receive_frame('{"type":"ack","upto":1}', world.now)
    world.deliver(False, 10)
    assert world.got_by_client == [1]
