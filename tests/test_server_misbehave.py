"""The reference server's misbehaviour knobs, used to test clients and wsnb.doctor."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import wsnb

HELLO = json.dumps({"type": "handshake", "v": 1, "token": None, "session": None, "last_seen": 0})


async def handshaken(url: str):
    ws = await connect(url, ping_interval=None)
    await ws.send(HELLO)
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "handshake_ack"
    return ws


@pytest.mark.parametrize("code", [1001, None])
async def test_idle_timeout_closes_silent_connections(code) -> None:
    async with wsnb.Server(port=0, heartbeat_ms=0, idle_timeout=0.2, idle_close_code=code) as srv:
        ws = await handshaken(srv.url)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert loop.time() - start >= 0.15
        assert ws.close_code == (code if code is not None else 1006)


async def test_server_that_ignores_pings() -> None:
    async with wsnb.Server(port=0, answer_pings=False) as srv:
        ws = await handshaken(srv.url)
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.3)
        await ws.send(json.dumps({"type": "ping", "ts": 1}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        ws.transport.abort()
    async with wsnb.Server(port=0) as srv:  # the well-behaved default answers both
        ws = await handshaken(srv.url)
        await asyncio.wait_for(await ws.ping(), 5)
        await ws.close()


async def test_server_that_sends_no_close_frame() -> None:
    async with wsnb.Server(port=0, close_frames=False) as srv:
        ws = await handshaken(srv.url)
        await ws.close(1000)
        assert ws.close_code == 1006  # TCP dropped, no close frame came back


async def test_throttled_reconnects_get_429() -> None:
    async with wsnb.Server(port=0, throttle=(2, 60.0)) as srv:
        for _ in range(2):
            ws = await handshaken(srv.url)
            await ws.close()
        with pytest.raises(InvalidStatus) as refused:
            await connect(srv.url)
        assert refused.value.response.status_code == 429
