"""The JSON-RPC 2.0 dialect against a real JSON-RPC server (jsonrpcserver on FastAPI/uvicorn).

The server answers each request in its own task, so replies come out of order
when methods take different times; it can send notifications and drop every
connection (close 1012) on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wsnb.dialects import jsonrpc
from wsnb.dialects.jsonrpc import JsonRpcError

fastapi = pytest.importorskip("fastapi", reason="the JSON-RPC test server runs on FastAPI")
jsonrpcserver = pytest.importorskip(
    "jsonrpcserver", reason="the JSON-RPC test server uses jsonrpcserver (pip install it)")
from jsonrpcserver import Error, Success, async_dispatch  # noqa: E402

pytestmark = pytest.mark.timeout(15)


class RpcService:
    """A JSON-RPC 2.0 service over WebSocket at ``/rpc``."""

    def __init__(self) -> None:
        self.sockets: set[Any] = set()
        self.connections = 0
        self.app = fastapi.FastAPI()
        self.app.add_api_websocket_route("/rpc", self.endpoint)
        self.methods = {"add": self.add, "after": self.after, "fail": self.fail,
                        "shout": self.shout}

    async def endpoint(self, ws: fastapi.WebSocket) -> None:
        await ws.accept()
        self.connections += 1
        self.sockets.add(ws)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                text = await ws.receive_text()
                task = asyncio.ensure_future(self.answer(ws, text))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (fastapi.WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.sockets.discard(ws)
            for task in tasks:
                task.cancel()

    async def answer(self, ws: fastapi.WebSocket, text: str) -> None:
        response = await async_dispatch(text, methods=self.methods, context=ws)
        if response:  # notifications get no response
            with contextlib.suppress(Exception):
                await ws.send_text(response)

    @staticmethod
    async def add(ws: Any, a: int, b: int) -> Any:
        return Success(a + b)

    @staticmethod
    async def after(ws: Any, ms: int, value: Any) -> Any:
        await asyncio.sleep(ms / 1000)  # the service's own work time
        return Success(value)

    @staticmethod
    async def fail(ws: Any) -> Any:
        return Error(-32001, "insufficient funds", {"balance": 3})

    @staticmethod
    async def shout(ws: Any, text: str) -> Any:
        await ws.send_text(json.dumps({"jsonrpc": "2.0", "method": "heard",
                                       "params": {"text": text.upper()}}))
        return Success(True)

    async def cut(self) -> None:
        """Drop every connection from the server's side."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1012, reason="restarting")


@pytest.fixture
async def rpc(serve_asgi) -> AsyncIterator[tuple[RpcService, str]]:
    service = RpcService()
    async with serve_asgi(service.app) as port:
        yield service, f"ws://127.0.0.1:{port}/rpc"


async def test_out_of_order_replies_pair_by_id_with_their_own_latency(rpc, make_client) -> None:
    _, url = rpc
    client = make_client(url, dialect="jsonrpc", token=None)
    await client.connect(timeout=5)
    delays = (400, 0, 150)
    results = await asyncio.gather(*(jsonrpc.call(client, "after", [ms, f"took {ms}"])
                                     for ms in delays))
    assert results == ["took 400", "took 0", "took 150"]
    table = client.timeline.requests()
    assert table["request"].tolist() == ["1", "2", "3"]  # ids made by the dialect
    lat = table["latency_ms"].tolist()
    assert lat[0] >= 380 and 130 <= lat[2] < 380 and lat[1] < 130, lat
    # the replies came back 2, 3, 1: each latency is its own request's
    assert table.sort_values("replied")["request"].tolist() == ["2", "3", "1"]
    assert not client.inbox
    reply = await client.request({"method": "add", "params": [1, 2]}, timeout=5)
    assert reply == {"jsonrpc": "2.0", "result": 3, "id": 4}


async def test_an_error_reply_raises_with_code_message_and_data(rpc, make_client) -> None:
    _, url = rpc
    client = make_client(url, dialect="jsonrpc", token=None)
    await client.connect(timeout=5)
    with pytest.raises(JsonRpcError, match="insufficient funds") as info:
        await jsonrpc.call(client, "fail", timeout=5)
    assert (info.value.code, info.value.message, info.value.data) == (
        -32001, "insufficient funds", {"balance": 3})
    assert info.value.method == "fail"
    with pytest.raises(JsonRpcError, match="(?i)method not found") as info:
        await jsonrpc.call(client, "no_such_method", timeout=5)
    assert info.value.code == -32601
    assert await jsonrpc.call(client, "add", {"a": 2, "b": 5}, timeout=5) == 7  # still fine
    with pytest.raises(ValueError, match="params"):
        await client.request({"method": "add", "params": 3})


async def test_notifications_and_unpaired_replies_land_in_the_inbox(rpc, make_client) -> None:
    _, url = rpc
    client = make_client(url, dialect="jsonrpc", token=None)
    await client.connect(timeout=5)
    assert await jsonrpc.call(client, "shout", ["hi"], timeout=5) is True
    assert await client.recv(timeout=5) == {"jsonrpc": "2.0", "method": "heard",
                                            "params": {"text": "HI"}}
    # a reply to no request (the application sent this id itself)
    await client.send({"jsonrpc": "2.0", "method": "add", "params": [1, 1], "id": 999})
    assert await client.recv(timeout=5) == {"jsonrpc": "2.0", "result": 2, "id": 999}
    # a batch is answered with a list: delivered, not paired
    await client.send([{"jsonrpc": "2.0", "method": "add", "params": [1, n], "id": 500 + n}
                       for n in (1, 2)])
    batch = await client.recv(timeout=5)
    assert sorted(r["result"] for r in batch) == [2, 3]
    await jsonrpc.notify(client, "add", [1, 1])  # a notification: the server stays silent
    assert await jsonrpc.call(client, "add", [2, 2], timeout=5) == 4
    assert not client.inbox
    errors = client.timeline.events().query("type == 'error'")["detail"].tolist()
    assert any("id=999 matches no request" in e for e in errors), errors
    assert any("batch reply (2 items)" in e for e in errors), errors


async def test_calls_keep_working_across_a_server_side_cut(rpc, make_client) -> None:
    service, url = rpc
    client = make_client(url, dialect="jsonrpc", token=None)
    await client.connect(timeout=5)
    assert await jsonrpc.call(client, "add", [1, 2], timeout=5) == 3
    await service.cut()
    await client.wait_until(lambda c: not c.ready or c.reconnects >= 1, timeout=5)
    # queued while down (or sent at once if already back): answered either way
    assert await jsonrpc.call(client, "after", [50, "back"], timeout=5) == "back"
    await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
    assert service.connections == 2
    assert await jsonrpc.call(client, "add", [3, 4], timeout=5) == 7
    assert "1012" in client.timeline.events().query("type == 'close'")["detail"].iloc[0]
    table = client.timeline.requests()
    assert table["latency_ms"].notna().all()
