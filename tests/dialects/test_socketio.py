"""The Socket.IO dialect against a real python-socketio server (ASGI on uvicorn, loopback).

The server pings every 0.25 s and drops a client that does not answer within
0.5 s: the heartbeat, the connect-before-events order across reconnects,
acks both ways, connect_error, and floods are all checked against it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import wsnb
from wsnb.client import ReadyState
from wsnb.dialects import socketio as sio_dialect

socketio = pytest.importorskip("socketio", reason="python-socketio is in the test extra")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is in the test extra")
from engineio import packet as eio_packet  # noqa: E402

PING_INTERVAL, PING_TIMEOUT = 0.25, 0.5


class Harness:
    """One python-socketio server and what its handlers saw, in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", ping_interval=PING_INTERVAL,
                                        ping_timeout=PING_TIMEOUT, logger=False,
                                        engineio_logger=False)
        self.log: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()
        self.url = ""

    def add(self, *entry: Any) -> None:
        self.log.append(entry)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def waiter() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(waiter(), timeout)

    def events(self, name: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == name]

    def eio_socket(self, sid: str) -> Any:
        return self.sio.eio._get_socket(self.sio.manager.eio_sid_from_sid(sid, "/"))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with serve() as h:
        yield h


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Harness]:
    """A python-socketio server on uvicorn, port 0; its handlers log into `Harness.log`."""
    h = Harness()
    sio = h.sio

    @sio.event
    async def connect(sid: str, environ: dict, auth: Any) -> None:
        h.add("connect", sid, auth)
        if isinstance(auth, dict) and auth.get("token") == "bad":
            raise socketio.exceptions.ConnectionRefusedError("token refused")

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        h.add("disconnect", sid)

    @sio.on("chat")
    async def chat(sid: str, *args: Any) -> None:
        h.add("chat", sid, args)

    @sio.on("echo")
    async def echo(sid: str, *args: Any) -> tuple[Any, ...]:
        h.add("echo", sid, args)
        return args  # a tuple: the ack's arguments

    @sio.on("connect", namespace="/room")
    async def room_connect(sid: str, environ: dict, auth: Any) -> None:
        h.add("room-connect", sid, auth)

    @sio.on("chat", namespace="/room")
    async def room_chat(sid: str, *args: Any) -> str:
        h.add("room-chat", sid, args)
        return "room-ok"

    config = uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    for _ in range(500):  # uvicorn exposes only a flag; bounded
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    h.url = sio_dialect.url(f"http://127.0.0.1:{port}")
    try:
        yield h
    finally:
        server.should_exit = True
        # bounded, and never wait_for: engine.io's poll() swallows CancelledError
        await asyncio.wait({task}, timeout=5)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2)


def rows(client: wsnb.Client, type_: str, text: str = "") -> list[str]:
    events = client.timeline.events()
    picked = events[(events["type"] == type_) & events["detail"].str.contains(text, regex=False)]
    return list(picked["detail"])


def state_rows(client: wsnb.Client, state: str) -> int:
    events = client.timeline.events()
    return int((events["state"] == state).sum())


def test_url_and_frames() -> None:
    assert sio_dialect.url("http://h:5000") == "ws://h:5000/socket.io/?EIO=4&transport=websocket"
    assert sio_dialect.url("https://h/app/", path="io") == \
        "wss://h/app/io/?EIO=4&transport=websocket"
    with pytest.raises(ValueError):
        sio_dialect.url("ftp://h")
    assert sio_dialect.event_frame("chat", "hi") == '42["chat","hi"]'
    assert sio_dialect.event_frame("chat", namespace="/x", ack_id=7) == '42/x,7["chat"]'
    with pytest.raises(TypeError, match="binary"):
        sio_dialect.event_frame("chat", b"\x00")
    assert wsnb.dialects.get("socketio") is sio_dialect.DIALECT
    assert 1000 in sio_dialect.DIALECT.retry_codes
    with pytest.raises(ValueError):
        sio_dialect.dialect(namespace="room")


async def test_the_server_drops_a_client_that_ignores_pings(harness, make_client) -> None:
    """The control: without the dialect, Engine.IO's ping reaches the user and nobody pongs."""
    client = make_client(harness.url, protocol="raw", token=None, retry_codes=[1000])
    await client.connect(timeout=5)
    await client.wait_until(lambda c: c.reconnects >= 1, timeout=5)
    assert "2" in client.inbox  # the old bug: the ping delivered as a message


async def test_survives_many_ping_intervals(harness, make_client) -> None:
    client = make_client(harness.url, dialect="socketio", token=None)
    await client.connect(timeout=5)
    sid = await sio_dialect.connected(client, timeout=5)
    await client.wait_until(lambda c: sio_dialect.info(c).pings >= 8, timeout=8)  # ~2 s
    assert client.reconnects == 0 and client.ready
    assert not client.inbox  # pings never reach the application
    assert harness.events("connect") == [("connect", sid, None)]
    assert not harness.events("disconnect")
    assert state_rows(client, "engine.io open") == 1
    assert state_rows(client, "socket.io connected") == 1
    assert len(rows(client, "pong", "engine.io pong")) >= 8
    assert client.session.sender.pending == 0  # pongs bypass the outbox


async def test_events_both_ways_and_acks(harness, make_client) -> None:
    client = make_client(harness.url, dialect="socketio", token=None)
    await client.connect(timeout=5)
    # queued before the connect ack: still goes out after 40
    await sio_dialect.emit(client, "chat", "hi", {"n": 1})
    sid = await sio_dialect.connected(client, timeout=5)
    await harness.wait_for(lambda: bool(harness.events("chat")))
    assert harness.events("chat") == [("chat", sid, ("hi", {"n": 1}))]

    await harness.sio.emit("news", {"a": 1}, to=sid)
    assert await client.recv(timeout=5) == {"event": "news", "args": [{"a": 1}]}
    await harness.sio.emit("blob", b"\x00\x01", to=sid)  # 451-[...] plus a binary frame
    assert await client.recv(timeout=5) == {"event": "blob", "args": [b"\x00\x01"]}

    answer = await sio_dialect.emit(client, "echo", "x", 2, ack=True, timeout=5)
    assert answer == ["x", 2] and isinstance(answer, sio_dialect.Ack)
    assert await client.request(("echo", "y"), timeout=5) == ["y"]
    assert await client.request({"event": "echo", "args": [[1, 2]]}, timeout=5) == [[1, 2]]
    table = client.timeline.requests()
    assert list(table["request"]) == ["1", "2", "3"]
    assert table["latency_ms"].notna().all() and (table["latency_ms"] >= 0).all()

    # the server asks the client for an ack
    call = asyncio.ensure_future(harness.sio.call("question", "q?", to=sid, timeout=5))
    message = await client.recv(timeout=5)
    assert message["event"] == "question" and message["args"] == ["q?"] and "ack" in message
    await sio_dialect.ack(client, message, "answer")
    assert await asyncio.wait_for(call, 5) == "answer"
    assert not client.inbox and client.reconnects == 0


async def test_a_namespace_with_auth(harness, make_client) -> None:
    tokens = iter(["t1", "t2"])
    room = sio_dialect.dialect(namespace="/room", auth=lambda: {"token": next(tokens)})
    client = make_client(harness.url, dialect=room, token=None)
    await client.connect(timeout=5)
    await sio_dialect.connected(client, timeout=5)
    assert harness.events("room-connect")[0][2] == {"token": "t1"}
    assert harness.events("connect") == []  # only /room was asked for
    assert await sio_dialect.emit(client, "chat", "hello", ack=True, timeout=5) == ["room-ok"]
    assert harness.events("room-chat")[0][2] == ("hello",)
    assert "t1" not in "".join(client.timeline.events()["detail"])  # auth is never shown
    await harness.sio.emit("news", 1, to=sio_dialect.info(client).sid, namespace="/room")
    assert await client.recv(timeout=5) == {"event": "news", "args": [1], "namespace": "/room"}


@pytest.mark.parametrize("how", ["socketio-disconnect", "engineio-close", "network-cut"])
async def test_reconnect_connects_before_the_queued_event(harness, make_client, how) -> None:
    client = make_client(harness.url, dialect="socketio", token=None,
                         backoff=wsnb.Backoff(base=0.2, cap=0.3))
    await client.connect(timeout=5)
    first = await sio_dialect.connected(client, timeout=5)
    if how == "socketio-disconnect":
        await harness.sio.disconnect(first)  # 41 only: the dialect closes and reconnects
    elif how == "engineio-close":
        await harness.sio.eio.disconnect(harness.sio.manager.eio_sid_from_sid(first, "/"))
    else:
        client.disconnect_now()
    await client.wait_until(lambda c: not c.ready, timeout=5)
    receipt = await sio_dialect.emit(client, "chat", "queued")
    assert receipt.state == "queued"
    await harness.wait_for(lambda: bool(harness.events("chat")), timeout=8)
    connects = harness.events("connect")
    assert len(connects) == 2
    second = connects[1][1]
    chat = harness.events("chat")
    assert chat == [("chat", second, ("queued",))]  # not lost, sent on the new connection
    assert harness.log.index(connects[1]) < harness.log.index(chat[0])  # 40 before 42
    assert client.reconnects == 1
    assert (await receipt).state == "written"
    if how != "network-cut":  # python-socketio's 1000 (or ours after a 41) is a retry code
        assert rows(client, "close", "1000")


async def test_connect_error_is_final_and_clear(harness, make_client) -> None:
    bad = sio_dialect.dialect(auth={"token": "bad"})
    client = make_client(harness.url, dialect=bad, token=None)
    await client.connect(timeout=5)
    receipt = await sio_dialect.emit(client, "chat", "never")
    with pytest.raises(sio_dialect.ConnectError, match="token refused"):
        await sio_dialect.connected(client, timeout=5)
    await client.wait_state(ReadyState.CLOSED, timeout=5)
    assert rows(client, "error", "connect_error /: token refused")
    assert client.close_code == 4401 and client.reconnects == 0
    assert "token refused" in client.last_error or "token refused" in client.close_reason
    with pytest.raises(Exception, match="refused|closed"):
        await receipt
    assert not harness.events("chat")
    assert client.timeline.events()["detail"].str.contains("not reconnecting").any()


async def test_a_ping_flood_and_unknown_packets_stay_bounded(harness, make_client) -> None:
    client = make_client(harness.url, dialect="socketio", token=None)
    await client.connect(timeout=5)
    sid = await sio_dialect.connected(client, timeout=5)
    sock = harness.eio_socket(sid)
    before = client.timeline.events()
    flood = 3000
    for _ in range(flood):
        await sock.send(eio_packet.Packet(eio_packet.PING))
    for _ in range(200):
        await sock.queue.put(eio_packet.Packet(7, "junk"))  # no such Engine.IO type
        await sock.send(eio_packet.Packet(eio_packet.MESSAGE, "9junk"))  # nor Socket.IO's 9
    await harness.sio.emit("done", to=sid)
    assert await client.recv(timeout=10) == {"event": "done", "args": []}
    state = sio_dialect.info(client)
    assert state.pings >= flood and state.unknown == 400
    assert len(rows(client, "error", "ping flood")) == 1
    unknown = rows(client, "error", "unknown packet type")
    assert len(unknown) == 2 and any("'7'" in r for r in unknown)
    after = client.timeline.events()
    added = after.iloc[len(before):]
    others = added[added["type"] != "received"]  # one "received" per frame: see the report
    print(f"flood: {len(added)} rows added, {len(others)} not 'received'")
    assert len(others) < 100, others["detail"].value_counts().head()
    assert len(state.unknown_kinds) <= sio_dialect.MAX_UNKNOWN_KINDS
    assert not client.inbox and client.session.sender.pending == 0
    assert client.reconnects == 0 and client.ready


async def test_a_server_that_stops_pinging_is_a_dead_link(make_client) -> None:
    """A scripted Engine.IO peer that opens, acks the connect, then never pings again."""
    from aiohttp import web

    opened = []

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        opened.append(request)
        await ws.send_str('0{"sid":"s1","upgrades":[],"pingInterval":300,"pingTimeout":200}')
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT and msg.data.startswith("40"):
                await ws.send_str('40{"sid":"x"}')
        return ws

    app = web.Application()
    app.router.add_get("/socket.io/", silent)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = make_client(sio_dialect.url(f"http://127.0.0.1:{port}"), dialect="socketio",
                             token=None)
        await client.connect(timeout=5)
        await sio_dialect.connected(client, timeout=5)
        await client.wait_until(lambda c: c.reconnects >= 1, timeout=5)  # ~1.5 s of silence
        assert rows(client, "error", "engine.io: no ping for")
        await sio_dialect.connected(client, timeout=5)  # and the new connection is connected
        assert len(opened) == 2
        await client.close()
    finally:
        await runner.cleanup()
