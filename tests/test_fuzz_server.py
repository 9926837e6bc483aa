"""Fuzz the reference server over a real socket: issue 2, point 10 (server half).

The server must never die, and must answer every frame (or close with a
documented code). After each fuzz frame a ping must still get its pong.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wsnb
from wsnb.protocol.envelope import FRAME_TYPES

DOCUMENTED_CLOSE_CODES = {1000, 1001, 1002, 1007, 1009, 1011, 1012, 4401, 4408, 4429}
ANSWER_TYPES = {"error", "nack", "ack", "pong", "ping", "msg", "chunk"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["type", "id", "v", "z", "d", "s", "ts", "i", "n", "data", "upto",
                               "code", "reason", "token", "session", "last_seen"])
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(FRAME_TYPES) + ["", "msg ", "MSG"])},
    optional={"id": st.integers(-3, 2**64) | json_values, "v": st.integers(0, 3) | json_values,
              "z": st.integers(-1, 2) | json_values, "d": json_values,
              "ts": st.integers(0, 2**45) | json_values,
              "i": st.integers(-1, 5), "n": st.integers(-1, 10**9) | json_values,
              "data": st.text(max_size=50), "upto": st.integers(-5, 10**6) | json_values},
).flatmap(lambda base: st.dictionaries(field_names, json_values, max_size=3).map(
    lambda extra: {**extra, **base}))
wire_inputs = (
    st.text(max_size=200)
    | st.binary(max_size=200)
    | frames.map(json.dumps)
    | frames.map(lambda f: json.dumps(f).encode())
)


class Session:
    """A hand-driven connection that reconnects when the server closes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws = None
        self.pings = 0
        self.closes: list[int] = []
        self.open()

    def open(self) -> None:
        if self.ws is not None:
            self.ws.__exit__(None, None, None)
        self.ws = connect(self.url, open_timeout=5, compression=None).__enter__()
        self.ws.send(json.dumps({"type": "handshake", "v": 1, "token": "demo",
                                 "session": None, "last_seen": 0}))
        assert json.loads(self.ws.recv(timeout=5))["type"] == "handshake_ack"

    def probe(self, data: str | bytes) -> None:
        try:
            self.ws.send(data)
            self.pings += 1
            self.ws.send(json.dumps({"type": "ping", "ts": self.pings}))
            for _ in range(200):
                frame = json.loads(self.ws.recv(timeout=5))
                assert isinstance(frame, dict) and frame.get("type") in ANSWER_TYPES, frame
                if frame["type"] == "pong" and frame["ts"] == self.pings:
                    return
            raise AssertionError("no pong after 200 frames")
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            assert code in DOCUMENTED_CLOSE_CODES, f"closed with {code}"
            self.closes.append(code)
            self.open()


@pytest.fixture(scope="module")
def fuzz_target():
    server = wsnb.Server(port=0, token="demo", heartbeat_ms=60_000, loop="thread",
                         max_size=4096)
    wsnb.run(server.start())
    session = Session(server.url)
    yield server, session
    session.ws.__exit__(None, None, None)
    print(f"fuzz: server closed the connection {len(session.closes)} times: {session.closes}")
    wsnb.run(server.close())


@settings(max_examples=2000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=wire_inputs)
def test_server_answers_every_frame_and_survives(fuzz_target, data: str | bytes) -> None:
    server, session = fuzz_target
    session.probe(data)


def test_server_still_serves_after_fuzzing(fuzz_target) -> None:
    server, _ = fuzz_target

    async def check() -> None:
        client = wsnb.Client(server.url, token="demo")
        await client.connect(timeout=5)
        await (await client.send({"after": "fuzz"})).wait(5)
        await client.close()

    wsnb.run(check())
    assert server.delivered[-1] == {"after": "fuzz"}
