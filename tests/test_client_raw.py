"""Raw mode against servers we did not write: requests and replies, on_open, text fidelity.

Peers are aiohttp WebSocket servers started here on loopback (a JSON-RPC style
service that answers out of order, and a service that wants a greeting first).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

import wsnb

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is in the test extra")
from aiohttp import web  # noqa: E402

DELAYS = {1: 0.4, 2: 0.0, 3: 0.15}  # seconds before the reply to request id N


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=1.0)  # open test clients do not hold it up
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
async def rpc_server() -> AsyncIterator[str]:
    """JSON-RPC 2.0 over WebSocket: each reply waits DELAYS[id], so they come out of order."""
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)

        async def answer(call: dict) -> None:
            await asyncio.sleep(DELAYS.get(call["id"], 0))  # the service's own work time
            await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": call["id"],
                                          "result": call["params"][0] * 2}))

        tasks = set()
        async for msg in ws:
            call = json.loads(msg.data)
            task = asyncio.ensure_future(answer(call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner, url = await start(app)
    yield url
    await runner.cleanup()


async def test_requests_pair_replies_by_the_applications_id(rpc_server, make_client) -> None:
    client = make_client(rpc_server, protocol="raw", token=None)
    await client.connect(timeout=5)
    calls = [{"jsonrpc": "2.0", "method": "double", "params": [n], "id": n} for n in (1, 2, 3)]
    replies = await asyncio.gather(*(client.request(c, timeout=5) for c in calls))
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert [r["result"] for r in replies] == [2, 4, 6]
    table = client.timeline.requests().set_index("request")
    lat = table["latency_ms"]
    # each latency is its own request's, not whichever reply came first
    assert lat["1"] >= 380 and lat["3"] >= 130 and lat["2"] < 130
    assert lat["1"] > lat["3"] > lat["2"]
    assert not client.inbox  # replies went to their requests, not to the inbox
    receipts = client.timeline.messages()
    assert "acked" not in set(receipts["type"].astype(str))  # nothing acks raw frames...
    with pytest.raises(ValueError, match="no usable id"):
        await client.request({"method": "no id"})


async def test_a_reply_confirms_its_raw_receipt(rpc_server, make_client) -> None:
    client = make_client(rpc_server, protocol="raw", token=None)
    await client.connect(timeout=5)
    receipt = await client.send({"jsonrpc": "2.0", "method": "d", "params": [1], "id": 9})
    await receipt.wait(5)
    assert receipt.state == "written"  # handed to the socket; nobody said it arrived
    await client.request({"jsonrpc": "2.0", "method": "d", "params": [2], "id": 2}, timeout=5)


async def test_a_request_without_reply_times_out_and_says_which(make_client) -> None:
    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", silent)
    runner, url = await start(app)
    try:
        client = make_client(url, protocol="raw", token=None)
        await client.connect(timeout=5)
        with pytest.raises(TimeoutError, match="no reply to request id=7"):
            await client.request({"id": 7}, timeout=0.2)
        assert client.timeline.requests()["replied"].isna().all()
    finally:
        await runner.cleanup()


async def test_on_open_greets_before_the_outbox_after_every_reconnect(make_client) -> None:
    """A service that wants "hello" first drops whatever comes before it."""
    got: list[list[str]] = []
    arrived = asyncio.Event()

    async def until(predicate) -> None:  # woken by the server, bounded by the timeout
        async def wait() -> None:
            while not predicate():
                arrived.clear()
                await arrived.wait()

        await asyncio.wait_for(wait(), 5)

    async def strict(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen: list[str] = []
        got.append(seen)
        async for msg in ws:
            seen.append(msg.data)
            arrived.set()
            if seen[0] != "hello":
                await ws.close(code=4000, message=b"greet first")
        return ws

    app = web.Application()
    app.router.add_get("/ws", strict)
    runner, url = await start(app)
    try:
        async def greet(client: wsnb.Client) -> None:
            await client.send("hello")

        client = make_client(url, protocol="raw", token=None, on_open=greet)
        await client.send("queued before connect")
        await client.connect(timeout=5)
        await until(lambda: got and len(got[0]) == 2)
        assert got[0] == ["hello", "queued before connect"]
        client.disconnect_now()
        await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
        await client.send("after the cut")
        await until(lambda: len(got) >= 2 and len(got[-1]) == 2)
        assert got[-1] == ["hello", "after the cut"]
    finally:
        await runner.cleanup()


async def test_text_as_sent_or_strict_json_when_asked(make_client) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner, url = await start(app)
    try:
        texts = ['"42"', "NaN", '"quoted"', "1.10", '{"a":1}']
        plain = make_client(url, protocol="raw", token=None)
        await plain.connect(timeout=5)
        for text in texts:
            await plain.send(text)
        assert [await plain.recv(timeout=5) for _ in texts] == texts
        strict = make_client(url, protocol="raw", token=None, decode="json")
        await strict.connect(timeout=5)
        for text in texts:
            await strict.send(text)
        assert [await strict.recv(timeout=5) for _ in texts] == ["42", "NaN", "quoted", 1.1,
                                                                 {"a": 1}]
    finally:
        await runner.cleanup()


async def test_headers_cookies_origin_and_subprotocol_reach_a_real_server(make_client) -> None:
    seen: dict[str, str] = {}

    async def strict(request: web.Request) -> web.WebSocketResponse:
        if request.headers.get("Authorization") != "Bearer t0k":
            raise web.HTTPUnauthorized()
        seen.update(cookie=request.headers.get("Cookie", ""),
                    origin=request.headers.get("Origin", ""))
        ws = web.WebSocketResponse(protocols=("chat.v2",))
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", strict)
    runner, url = await start(app)
    try:
        refused = make_client(url, protocol="raw", token=None)
        with pytest.raises(wsnb.AuthError, match="HTTP 401"):  # not "4401 token refused"
            await refused.connect(timeout=5)
        client = make_client(url, protocol="raw", token=None,
                             headers={"Authorization": "Bearer t0k"},
                             cookies={"sid": "abc", "theme": "dark"},
                             origin="http://app.example", subprotocols=["chat.v2"])
        await client.connect(timeout=5)
        assert client.subprotocol == "chat.v2"
        assert seen == {"cookie": "sid=abc; theme=dark", "origin": "http://app.example"}
        states = client.timeline.states()["detail"].astype(str).tolist()
        assert "subprotocol chat.v2" in states
        with pytest.raises(ValueError, match="cookie"):
            wsnb.Client(url, cookies={"a": "b;c"})
    finally:
        await runner.cleanup()
