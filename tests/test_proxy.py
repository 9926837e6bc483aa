"""FaultProxy between a bare websockets echo server and client, all on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from wsnb.proxy import FaultProxy

STEP = 1.0  # generous bound on any single wait that should succeed


class EchoServer:
    """Echoes every message; keeps the request paths it saw."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.server: Server | None = None
        self.close_codes: asyncio.Queue[int | None] = asyncio.Queue()

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        try:
            async for message in ws:
                if isinstance(message, bytes) and message.startswith(b"LEN"):
                    await ws.send(str(len(message)))  # reply small: time one direction
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        self.close_codes.put_nowait(ws.close_code)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/chat/room?token=abc"


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    async with serve(server.handler, "127.0.0.1", 0, ping_interval=None, max_size=None) as srv:
        server.server = srv
        yield server


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(echo.url) as p:
        yield p


def client(url: str, **kwargs: Any) -> Any:
    """A websockets client that never waits long; no compression, so bytes on the wire = size."""
    kwargs.setdefault("compression", None)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("close_timeout", 0.5)
    kwargs.setdefault("open_timeout", STEP)
    return connect(url, **kwargs)


async def round_trip(ws: Any, message: str | bytes) -> str | bytes:
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), STEP)


async def test_echo_through_proxy_keeps_path(echo: EchoServer, proxy: FaultProxy) -> None:
    assert proxy.url == f"ws://127.0.0.1:{proxy.port}/chat/room?token=abc"
    assert proxy.port != 0
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "hello") == "hello"
        assert await round_trip(ws, b"\x00" * 100_000) == b"\x00" * 100_000
        assert proxy.connections == 1
    assert echo.paths == ["/chat/room?token=abc"]
    assert proxy.bytes_forwarded > 200_000


async def test_cut_gives_1006_quickly_and_accepts_new_connections(proxy: FaultProxy) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "before") == "before"
        start = time.perf_counter()
        proxy.cut()
        assert proxy.connections == 0
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(ws.recv(), STEP)
        assert time.perf_counter() - start < STEP
        assert caught.value.rcvd is None  # no close frame
        assert ws.close_code == 1006
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "after") == "after"


async def test_blackhole_keeps_connection_open_but_silent(proxy: FaultProxy) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "before") == "before"
        proxy.blackhole()
        await ws.send("lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.3)
        assert ws.state is State.OPEN
        assert proxy.connections == 1
        proxy.cut()  # let the client go without waiting for a close frame


async def test_restore_after_blackhole_lets_a_new_connection_echo(proxy: FaultProxy) -> None:
    proxy.blackhole()
    with pytest.raises(TimeoutError):  # the opening handshake gets no answer
        async with client(proxy.url, open_timeout=0.3):
            pass
    proxy.restore()
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "back") == "back"


async def test_latency_delays_each_direction_in_order(proxy: FaultProxy) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "warm") == "warm"
        proxy.latency(100)
        start = time.perf_counter()
        for i in range(20):
            await ws.send(str(i))
        got = [await asyncio.wait_for(ws.recv(), STEP) for _ in range(20)]
        elapsed = time.perf_counter() - start
        assert got == [str(i) for i in range(20)]
        assert elapsed >= 0.19  # 100 ms out + 100 ms back
        proxy.restore()
        assert await round_trip(ws, "fast") == "fast"


async def test_bandwidth_throttles_and_bounds_buffering(proxy: FaultProxy) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "warm") == "warm"
        proxy.bandwidth(50_000)
        start = time.perf_counter()
        await ws.send(b"LEN" + bytes(49_997))
        assert await asyncio.wait_for(ws.recv(), 2 * STEP) == "50000"
        assert time.perf_counter() - start >= 0.9  # 50 kB at 50 kB/s, less one slice
    async with client(proxy.url) as ws:
        # A sender far faster than the link: the proxy stops reading from it
        # instead of queueing everything.
        proxy.bandwidth(20_000)
        sending = asyncio.ensure_future(ws.send(bytes(16_000_000)))
        with pytest.raises(TimeoutError):  # more than the kernel buffers can absorb
            await asyncio.wait_for(asyncio.shield(sending), 0.4)
        queued = sum(flow.queued for flow in proxy._flows())
        assert queued <= 256 * 1024 + 64 * 1024  # high-water mark plus one read
        assert proxy.bytes_forwarded < 500_000
        proxy.cut()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(sending, STEP)


async def test_clean_close_passes_through_with_latency(echo: EchoServer, proxy: FaultProxy) -> None:
    proxy.latency(30)
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "x") == "x"
    assert ws.close_code == 1000
    assert await asyncio.wait_for(echo.close_codes.get(), STEP) == 1000


async def test_leg_lost_during_blackhole_is_passed_on_at_restore(
    echo: EchoServer, proxy: FaultProxy
) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "x") == "x"
        proxy.blackhole()
        assert ws.transport is not None
        ws.transport.abort()  # the client vanishes; the server must not learn yet
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(echo.close_codes.get(), 0.2)  # cancel-safe
    assert proxy.connections == 1
    proxy.restore()
    assert await asyncio.wait_for(echo.close_codes.get(), STEP) == 1006


async def test_fault_methods_from_another_thread(proxy: FaultProxy) -> None:
    async with client(proxy.url) as ws:
        assert await round_trip(ws, "x") == "x"
        await asyncio.to_thread(proxy.latency, 60)  # the proxy's loop is this test's loop
        start = time.perf_counter()
        assert await round_trip(ws, "slow") == "slow"
        assert time.perf_counter() - start >= 0.11
        await asyncio.to_thread(proxy.cut)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), STEP)
        assert ws.close_code == 1006


async def test_thread_loop_proxy_awaited_from_test_loop(echo: EchoServer) -> None:
    proxy = FaultProxy(echo.url, loop="thread")
    assert proxy._loop is not asyncio.get_running_loop()
    async with proxy, client(proxy.url) as ws:
        assert await round_trip(ws, "hi") == "hi"
        proxy.latency(50)  # applied on the proxy's thread before it returns
        start = time.perf_counter()
        assert await round_trip(ws, "slow") == "slow"
        assert time.perf_counter() - start >= 0.09
        proxy.cut()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), STEP)
        assert ws.close_code == 1006
    assert proxy.connections == 0


async def test_unreachable_target_drops_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    async with FaultProxy(f"ws://127.0.0.1:{port}/") as proxy:
        with pytest.raises((OSError, WebSocketException)):
            async with client(proxy.url):
                pass
        assert proxy.connections == 0


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record(self, type: str, *, detail: str = "", **_: object) -> None:
        self.events.append((type, detail))


async def test_fault_methods_record_chaos_events(echo: EchoServer) -> None:
    timeline = Recorder()
    async with FaultProxy(echo.url, timeline=timeline) as proxy:  # type: ignore[arg-type]
        proxy.latency(200)
        proxy.bandwidth(1000)
        proxy.bandwidth(None)
        proxy.blackhole()
        proxy.cut()
        proxy.restore()
    assert timeline.events == [
        ("chaos", "latency 200 ms"),
        ("chaos", "bandwidth 1000 B/s"),
        ("chaos", "bandwidth unlimited"),
        ("chaos", "blackhole"),
        ("chaos", "cut"),
        ("chaos", "restore"),
    ]


@pytest.mark.parametrize(
    "url",
    ["wss://127.0.0.1:9/x", "http://127.0.0.1:9/", "127.0.0.1:9", "ws:///nohost", "ws://h:99999/"],
)
def test_invalid_target_url_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        FaultProxy(url, loop="thread")


def test_invalid_fault_arguments() -> None:
    proxy = FaultProxy("ws://127.0.0.1:9/", loop="thread")
    with pytest.raises(ValueError):
        proxy.latency(-1)
    with pytest.raises(ValueError):
        proxy.bandwidth(0)
