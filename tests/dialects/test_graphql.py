"""The graphql-transport-ws dialect against strawberry-graphql on uvicorn.

The server is strawberry's own ASGI app; its graphql-transport-ws handler is
subclassed only to ping the client after ``connection_ack``, count pongs,
refuse a bad token (4403) and let the test cut every connection (4500).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from wsnb.dialects import graphql
from wsnb.dialects.graphql import GraphQLError
from wsnb.errors import NotOpen

strawberry = pytest.importorskip(
    "strawberry", reason="the graphql-transport-ws test server is strawberry-graphql "
                         "(pip install strawberry-graphql)")
from strawberry.asgi import GraphQL  # noqa: E402
from strawberry.exceptions import ConnectionRejectionError  # noqa: E402
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (  # noqa: E402
    BaseGraphQLTransportWSHandler,
)

pytestmark = pytest.mark.timeout(15)


class Service:
    """What the server saw, and the levers the test pulls."""

    def __init__(self) -> None:
        self.handlers: set[Any] = set()
        self.inits = 0
        self.pongs = 0
        self.early = 0  # operations that arrived before connection_ack
        self.pong = asyncio.Event()
        self.feeds: list[asyncio.Queue[int]] = []  # one per live `feed` subscriber
        self.feed_changed = asyncio.Event()
        self.feed_starts = 0

    async def publish(self, value: int) -> None:
        for queue in self.feeds:
            await queue.put(value)

    async def until(self, predicate: Any) -> None:
        """Until `predicate()` holds, re-checked when a `feed` starts or ends (5 s at most)."""
        async def wait() -> None:
            while not predicate():
                self.feed_changed.clear()
                await self.feed_changed.wait()
        await asyncio.wait_for(wait(), 5)

    async def wait_feeds(self, starts: int) -> None:
        """Until `feed` subscriptions have started `starts` times in all."""
        await self.until(lambda: self.feed_starts >= starts)

    async def cut(self) -> None:
        for handler in list(self.handlers):
            with contextlib.suppress(Exception):
                await handler.websocket.close(code=4500, reason="Internal server error")


def make_app(service: Service) -> Any:
    @strawberry.type
    class Query:
        @strawberry.field
        def hello(self, name: str = "world") -> str:
            return f"hello {name}"

        @strawberry.field
        def boom(self) -> str:
            raise ValueError("boom")

    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def count(self, upto: int = 5) -> AsyncGenerator[int, None]:
            for n in range(upto):
                yield n

        @strawberry.subscription
        async def feed(self) -> AsyncGenerator[int, None]:
            queue: asyncio.Queue[int] = asyncio.Queue()
            service.feeds.append(queue)
            service.feed_starts += 1
            service.feed_changed.set()
            try:
                while True:
                    yield await queue.get()
            finally:
                service.feeds.remove(queue)
                service.feed_changed.set()

    class Handler(BaseGraphQLTransportWSHandler):
        async def handle_message(self, message: Any) -> None:
            if message.get("type") == "subscribe" and not self.connection_acknowledged:
                service.early += 1  # strict servers close 4401 here; strawberry waits
            await super().handle_message(message)

        async def handle_connection_init(self, message: Any) -> None:
            service.inits += 1
            await super().handle_connection_init(message)
            if self.connection_acknowledged:
                service.handlers.add(self)
                await self.send_message({"type": "ping"})  # the client must answer

        async def handle_pong(self, message: Any) -> None:
            service.pongs += 1
            service.pong.set()

        async def shutdown(self) -> None:
            service.handlers.discard(self)
            await super().shutdown()

    class App(GraphQL):
        graphql_transport_ws_handler_class = Handler

        async def on_ws_connect(self, context: Any) -> Any:
            if context["connection_params"].get("token") == "bad":
                raise ConnectionRejectionError()
            return {"server": "strawberry"}

    return App(strawberry.Schema(query=Query, subscription=Subscription))


@pytest.fixture
async def gql(serve_asgi) -> AsyncIterator[tuple[Service, str]]:
    service = Service()
    async with serve_asgi(make_app(service)) as port:
        yield service, f"ws://127.0.0.1:{port}/graphql"


async def test_query_as_a_request_and_the_servers_ping_answered(gql, make_client) -> None:
    service, url = gql
    client = make_client(url, dialect="graphql-transport-ws", token=None)
    await client.connect(timeout=5)
    # sent at once, held until connection_ack: the server would close 4401 otherwise
    assert await graphql.query(client, "query Q($n: String!) { hello(name: $n) }",
                               {"n": "wsnb"}, timeout=5) == {"hello": "hello wsnb"}
    assert client.subprotocol == "graphql-transport-ws"
    assert graphql.ack_payload(client) == {"server": "strawberry"}
    await asyncio.wait_for(service.pong.wait(), 5)  # the server's ping got its pong
    assert service.pongs == 1
    with pytest.raises(GraphQLError, match="boom") as info:
        await graphql.query(client, "{ boom }", timeout=5)
    assert info.value.data is None and info.value.id == "2"
    reply = await client.request({"query": "{ hello }"}, timeout=5)
    assert reply == {"id": "3", "type": "next", "payload": {"data": {"hello": "hello world"}}}
    table = client.timeline.requests()
    assert table["request"].tolist() == ["1", "2", "3"] and table["latency_ms"].notna().all()
    assert await graphql.ping(client, timeout=5) >= 0  # strawberry answers ours too
    assert not client.inbox  # acks, pings, pongs and completes are the dialect's
    kinds = client.timeline.events()["type"].astype(str).tolist()
    assert "ping" in kinds and "pong" in kinds
    assert service.inits == 1 and service.early == 0


async def test_a_subscription_yields_five_results_then_completes(gql, make_client) -> None:
    service, url = gql
    client = make_client(url, dialect="graphql-transport-ws", token=None)
    sub = await graphql.subscribe(client, "subscription { count(upto: 5) }")  # before connect
    await client.connect(timeout=5)
    got = []
    async with asyncio.timeout(5):
        async for result in sub:
            got.append(result["data"]["count"])
    assert got == [0, 1, 2, 3, 4]
    assert sub.done and sub.received == 5
    with pytest.raises(StopAsyncIteration):
        await sub.next(timeout=1)
    second = await graphql.subscribe(client, "subscription { count(upto: 2) }")  # when acked
    assert [r["data"]["count"] async for r in second] == [0, 1]
    assert not client.inbox
    assert service.early == 0


async def test_subscriptions_are_re_established_after_a_server_side_cut(gql, make_client) -> None:
    service, url = gql
    client = make_client(url, dialect="graphql-transport-ws", token=None)
    await client.connect(timeout=5)
    sub = await graphql.subscribe(client, "subscription { feed }")
    await service.wait_feeds(1)
    await service.publish(1)
    assert (await sub.next(timeout=5))["data"]["feed"] == 1
    await service.cut()
    await service.wait_feeds(2)  # on_open: connection_init, ack, subscribe again
    await service.publish(2)
    assert (await sub.next(timeout=5))["data"]["feed"] == 2
    assert client.reconnects == 1 and service.inits == 2 and sub.resubscribes == 1
    assert service.early == 0
    closes = client.timeline.events().query("type == 'close'")["detail"].tolist()
    assert closes and closes[0].startswith("4500")
    await sub.stop()  # complete: the server ends its generator
    with pytest.raises(StopAsyncIteration):
        await sub.next(timeout=1)
    assert await graphql.query(client, "{ hello }", timeout=5) == {"hello": "hello world"}
    await service.until(lambda: not service.feeds)  # both generators ended


async def test_4409_and_4400_end_the_guilty_subscription_not_the_client(gql, make_client) -> None:
    service, url = gql
    client = make_client(url, dialect="graphql-transport-ws", token=None)
    await client.connect(timeout=5)
    good = await graphql.subscribe(client, "subscription { feed }")
    await service.wait_feeds(1)
    # the application reuses a live id by hand: the server closes 4409
    await client.send({"id": good.id, "type": "subscribe",
                       "payload": {"query": "subscription { feed }"}})
    with pytest.raises(GraphQLError, match="4409") as info:
        await good.next(timeout=5)
    assert info.value.close_code == 4409
    # a syntax error closes 4400; that subscription ends, the connection comes back
    bad = await graphql.subscribe(client, "subscription { feed ")
    with pytest.raises(GraphQLError, match="4400"):
        await bad.next(timeout=5)
    assert client.reconnects == 2
    assert await graphql.query(client, "{ hello }", timeout=5) == {"hello": "hello world"}


async def test_a_refused_connection_init_is_final(gql, make_client) -> None:
    _, url = gql
    client = make_client(url, dialect=graphql.dialect(payload={"token": "bad"}), token=None)
    sub = await graphql.subscribe(client, "subscription { count }")
    await client.connect(timeout=5)
    with pytest.raises(NotOpen, match="4403"):
        await sub.next(timeout=5)
    assert client.close_code == 4403 and client.reconnects == 0


async def test_no_connection_ack_is_an_error_row_and_a_reconnect(serve_asgi, make_client) -> None:
    """A server that takes the subprotocol and never acks: 4504 from the client, then again."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    inits: list[str] = []
    seen = asyncio.Event()

    async def mute(ws: Any) -> None:
        await ws.accept(subprotocol="graphql-transport-ws")
        with contextlib.suppress(Exception):
            while True:
                inits.append(await ws.receive_text())
                seen.set()

    app = Starlette(routes=[WebSocketRoute("/graphql", mute)])
    async with serve_asgi(app) as port:
        client = make_client(f"ws://127.0.0.1:{port}/graphql", token=None,
                             dialect=graphql.dialect(ack_timeout=0.2))
        await client.connect(timeout=5)
        query = asyncio.ensure_future(graphql.query(client, "{ hello }", timeout=5))
        async with asyncio.timeout(5):
            while len(inits) < 2:
                seen.clear()
                await seen.wait()
        assert inits[:2] == ['{"type":"connection_init"}'] * 2  # the query waits for an ack
        assert not query.done()
        query.cancel()
        errors = client.timeline.events().query("type == 'error'")["detail"].tolist()
        assert any("no connection_ack within 0.2 s" in e for e in errors), errors
        await client.wait_until(lambda c: c.close_code == 4504, timeout=5)
