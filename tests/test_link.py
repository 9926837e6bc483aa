"""Attacks on the delivery promises, over real sockets (issue 10's list of defects).

Each test reproduces one way the first version broke a promise: a lying peer,
a half-open link, a slow link, a full inbox, a hostile limit, a redirect that
leaks secrets. Hand-written peers use the `websockets` server API so they can
lie in ways wsnb's own server never does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

import wsnb
from wsnb.protocol import envelope

Script = Callable[[ServerConnection, dict[str, Any], int], Awaitable[None]]


async def lying_server(script: Script) -> tuple[Any, str]:
    """A hand-written peer: answers the handshake, then runs `script` (connection count)."""
    count = {"n": 0}

    async def handler(ws: ServerConnection) -> None:
        count["n"] += 1
        hello = json.loads(await ws.recv())
        await script(ws, hello, count["n"])

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


def ack_frame(session: str = "S1", resumed: bool = False, last_acked: int = 0,
              max_size: int = 1 << 20, heartbeat_ms: int = 0) -> str:
    return json.dumps({"type": "handshake_ack", "v": 1, "session": session,
                       "resumed": resumed, "last_acked": last_acked,
                       "heartbeat_ms": heartbeat_ms, "max_size": max_size})


async def test_lying_last_acked_on_resume_resolves_nothing(make_client) -> None:
    """handshake_ack.last_acked=1000000 on resume must not ack the queued messages."""
    async def script(ws: ServerConnection, hello: dict[str, Any], n: int) -> None:
        if n == 1:
            await ws.send(ack_frame())
            await ws.wait_closed()
        else:
            await ws.send(ack_frame(resumed=True, last_acked=1_000_000))
            await ws.wait_closed()

    server, url = await lying_server(script)
    async with server:
        client = make_client(url, token=None, backoff=wsnb.Backoff(base=5, cap=5))
        await client.connect(timeout=5)
        client.disconnect_now()
        await client.wait_until(lambda c: not c.ready, timeout=5)
        receipts = [await client.send({"i": i}) for i in range(10)]  # queued in the outage
        client.reconnects_before = client.reconnects
        await client.wait_until(lambda c: c.close_code == 1002, timeout=15)
        assert all(r.state == "queued" for r in receipts), [r.state for r in receipts]
        assert client.pending == 10
        errors = client.timeline.events().query("type == 'error'")["detail"].tolist()
        assert any("last_acked 1000000 is above the highest id written" in e for e in errors)


async def test_lying_ack_during_a_chunked_write_resolves_nothing(make_client) -> None:
    """An ack upto 1000000 while a big message is still being sliced acks nothing."""
    async def script(ws: ServerConnection, hello: dict[str, Any], n: int) -> None:
        await ws.send(ack_frame(max_size=64 * 1024))
        await ws.recv()  # the first slice of the big message
        await ws.send('{"type":"ack","upto":1000000}')
        await ws.wait_closed()

    server, url = await lying_server(script)
    async with server:
        client = make_client(url, token=None, compress_min=None,
                             backoff=wsnb.Backoff(base=5, cap=5))
        await client.connect(timeout=5)
        big = await client.send({"big": "x" * (4 << 20)})
        small = [await client.send({"i": i}) for i in range(50)]
        await client.wait_until(lambda c: c.close_code == 1002, timeout=10)
        assert big.state != "acked" and not any(r.state == "acked" for r in small)
        assert client.pending == 51


async def test_hostile_max_size_is_a_violation_not_a_million_chunks(make_client) -> None:
    async def script(ws: ServerConnection, hello: dict[str, Any], n: int) -> None:
        await ws.send(ack_frame(max_size=1))
        with pytest.raises(Exception):  # noqa: B017 - the client closes: any close ends it
            while True:
                await ws.recv()

    server, url = await lying_server(script)
    async with server:
        client = make_client(url, token=None, backoff=wsnb.Backoff(base=5, cap=5))
        receipt = await client.send({"big": "y" * (1 << 20)})
        with pytest.raises(TimeoutError):
            await client.connect(timeout=1)
        assert client.close_code == 1002 and "max_size 1 is below 4096" in client.last_error \
            or any("max_size 1" in d for d in client.timeline.events()["detail"].astype(str))
        assert receipt.state == "queued" and receipt.chunks is None


async def test_final_close_fails_pending_receipts_at_once(make_client) -> None:
    async def script(ws: ServerConnection, hello: dict[str, Any], n: int) -> None:
        await ws.send(ack_frame())
        await ws.recv()
        await ws.close(1000, "bye")

    server, url = await lying_server(script)
    async with server:
        client = make_client(url, token=None)
        await client.connect(timeout=5)
        receipts = [await client.send({"i": i}) for i in range(3)]
        started = time.monotonic()
        with pytest.raises(wsnb.Refused):
            await receipts[-1].wait(5)
        assert time.monotonic() - started < 2
        assert all(r.state == "refused" for r in receipts)


async def test_http_401_at_upgrade_is_named_and_not_retried(make_client) -> None:
    def refuse(connection: ServerConnection, request: Any) -> Response:
        return connection.respond(401, "who are you?\n")

    async def never(ws: ServerConnection) -> None:  # pragma: no cover - refused before
        await ws.close()

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        client = make_client(f"ws://127.0.0.1:{port}", token=None)
        with pytest.raises(wsnb.AuthError, match="HTTP 401") as info:
            await client.connect(timeout=10)
        assert "4401" not in str(info.value) and client.reconnects == 0


async def test_secrets_stay_out_of_errors_after_a_redirect(make_client) -> None:
    def redirect(connection: ServerConnection, request: Any) -> Response:
        return Response(302, "Found", Headers([("Location", "#frag"),
                                               ("Content-Length", "0")]))

    async def never(ws: ServerConnection) -> None:  # pragma: no cover - redirected before
        await ws.close()

    async with serve(never, "127.0.0.1", 0, process_request=redirect) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://alice:hunter2@127.0.0.1:{port}/feed?token=SEKRET-42"
        client = make_client(url, token=None, backoff=wsnb.Backoff(base=0.01, cap=0.02))
        with pytest.raises(TimeoutError) as info:
            await client.connect(timeout=0.5)
        shown = [str(info.value), client.last_error, repr(client),
                 client.timeline.events().to_string()]
        for text in shown:
            assert "hunter2" not in text and "SEKRET-42" not in text
        assert "redirect" in client.last_error


async def test_full_inbox_is_backpressure_never_a_drop(make_client) -> None:
    """The application reads late: nothing acked is dropped; the server's window fills."""
    async with wsnb.Server(port=0, token="demo", max_unacked=100_000) as srv:
        client = make_client(srv.url, max_inbox=100)
        await client.connect(timeout=5)
        sid = client.session_id
        assert sid is not None
        total = 2_000
        for i in range(total):
            await srv.send(sid, i)
        session = srv.sessions[sid]
        await client.wait_until(lambda c: len(c.inbox) == 100, timeout=10)
        # The client stopped reading and acking: the server still holds the rest.
        await asyncio.sleep(0)  # let any in-flight ack land (no timing is asserted)
        assert session.state.sender.pending >= total - 100 - 256
        got = [await client.recv(timeout=5) for _ in range(total)]
        assert got == list(range(total))  # every message, in order, exactly once
        await client.wait_until(lambda c: True, timeout=1)
        assert client.counters["dropped"] == 0


async def test_no_eviction_younger_than_the_session_ttl(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", max_sessions_per_token=1,
                           session_ttl=60) as srv:
        first = make_client(srv.url)
        await first.connect(timeout=5)
        sid = first.session_id
        await first.close()  # a cut: the session waits for its owner
        second = make_client(srv.url, backoff=wsnb.Backoff(base=5, cap=5))
        with pytest.raises(TimeoutError):
            await second.connect(timeout=1)
        assert second.close_code == 4429 and "retry after" in second.close_reason
        assert sid in srv.sessions  # not evicted to make room


async def test_resume_over_a_half_open_link_keeps_the_new_link_and_chunks(make_client) -> None:
    """The client comes back while the server still holds the old, silent connection."""
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=5_000) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, chunk_size=64 * 1024, compress_min=None)
        await client.connect(timeout=5)
        proxy.blackhole()  # half-open: the server does not notice for ~12 s
        client.disconnect_now()
        proxy.restore()
        await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=10)
        assert client.resumed
        big = await client.send({"big": "z" * 300_000})  # five slices on the new link
        small = [await client.send({"i": i}) for i in range(100)]
        await big.wait(10)
        for r in small:
            await r.wait(10)
        reconnects = client.reconnects
        assert srv.delivered[-101] == {"big": "z" * 300_000}
        assert [p["i"] for p in srv.delivered[-100:]] == list(range(100))
        errors = srv.timeline.events().query("type == 'error'")["detail"].astype(str).tolist()
        assert not any("must start at i=0" in e for e in errors)
        assert client.reconnects == reconnects  # the new link survived the old one's death


async def test_slow_live_link_is_not_declared_dead(make_client) -> None:
    """200 KB through 64 KB/s with a 1 s heartbeat: arrives once, no reconnect loop."""
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=1_000) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, compress_min=None)  # one 200 KB frame: ~3 s to cross
        await client.connect(timeout=5)
        proxy.bandwidth(64_000)
        receipt = await client.send({"slow": "s" * 200_000})
        await receipt.wait(20)
        assert client.reconnects == 0
        assert srv.delivered == [{"slow": "s" * 200_000}]


async def test_max_message_counts_utf8_bytes(make_client) -> None:
    client = make_client("ws://127.0.0.1:9", max_message=1_000)
    with pytest.raises(ValueError, match="bytes serialized"):
        await client.send("😀" * 300)  # 300 characters, 1 200 bytes


async def test_the_1009_the_client_sent_is_reported_as_1009(make_client) -> None:
    async with wsnb.Server(port=0, token="demo") as srv:
        client = make_client(srv.url, max_message=4_096,
                             backoff=wsnb.Backoff(base=5, cap=5))
        await client.connect(timeout=5)
        noise = secrets.token_urlsafe(100_000)  # incompressible: stays a big frame
        await srv.send(client.session_id, noise)  # beyond what the client accepts
        await client.wait_until(lambda c: c.close_code is not None, timeout=5)
        assert client.close_code == 1009


async def test_twenty_megabytes_cause_no_false_dead_link(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=200) as srv:
        client = make_client(srv.url, compress_min=None)
        await client.connect(timeout=5)
        receipt = await client.send({"blob": "b" * (20 << 20)})
        await receipt.wait(60)
        assert client.reconnects == 0 and receipt.state == "acked"
        assert len(srv.delivered[0]["blob"]) == 20 << 20


def test_frames_a_lying_peer_sends_are_checked_in_one_place() -> None:
    # The handshake frame every wsnb client sends is built in one function.
    frame = json.loads(envelope.handshake_frame("t", session="s", last_seen=3))
    assert frame == {"type": "handshake", "v": 1, "token": "t", "session": "s",
                     "last_seen": 3, "features": ["chunk", "z", "upto"]}
