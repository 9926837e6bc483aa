"""The reliable client against the reference server: issue 2, points 1-6."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

import wsnb
from wsnb import ReadyState


def test_http_url_is_refused_with_a_ws_hint() -> None:
    with pytest.raises(ValueError, match="use ws://x"):
        wsnb.Client("http://x")
    with pytest.raises(ValueError, match="use wss://example.org/a"):
        wsnb.Client("https://example.org/a")
    with pytest.raises(ValueError, match="ws:// or wss://"):
        wsnb.Client("ftp://x")
    with pytest.raises(ValueError, match="no host"):
        wsnb.Client("ws://")


async def test_connect_send_ack_recv(server: wsnb.Server, make_client) -> None:
    client = make_client(server.url)
    assert client.ready_state == ReadyState.CLOSED and not client.ready
    await client.connect(timeout=5)
    assert client.ready_state == ReadyState.OPEN and client.ready
    receipt = await client.send({"hello": 1})
    await receipt.wait(5)
    assert receipt.state == "acked" and receipt.latency_ms is not None
    assert server.delivered == [{"hello": 1}]
    session_id = next(iter(server.sessions))
    await server.send(session_id, {"from": "server"})
    assert await client.recv(timeout=5) == {"from": "server"}
    states = client.timeline.states()["state"].astype(str).tolist()
    assert states[:3] == ["CONNECTING", "OPEN", "READY"]


@pytest.fixture
def tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_wss_verifies_certificates(tls, make_client) -> None:
    server_ctx, client_ctx = tls
    async with wsnb.Server(port=0, token="demo", ssl=server_ctx) as srv:
        assert srv.url.startswith("wss://")
        trusted = make_client(srv.url, ssl=client_ctx)
        await trusted.connect(timeout=5)
        await (await trusted.send({"tls": True})).wait(5)
        untrusted = make_client(srv.url)  # default context: the test CA is unknown
        started = time.monotonic()
        with pytest.raises(wsnb.NotOpen, match="not fixed by retrying") as info:
            await untrusted.connect(timeout=30)  # fails fast: no retry loop on a bad cert
        assert time.monotonic() - started < 5 and untrusted.reconnects == 0
        assert "certificate" in str(info.value) and "ssl=" in str(info.value)
        assert "not trusted" in untrusted.last_error
    with pytest.raises(ValueError, match="only for wss://"):
        wsnb.Client("ws://127.0.0.1:1", ssl=client_ctx)


async def test_when_closed_queue_sends_after_ready(server, make_client) -> None:
    client = make_client(server.url)
    receipt = await client.send({"early": True})  # before connect: queued, not lost
    assert receipt.state == "queued" and client.pending == 1
    await client.connect(timeout=5)
    await receipt.wait(5)
    assert server.delivered == [{"early": True}]
    df = client.timeline.messages()
    kinds = df[df["id"] == receipt.id]["type"].astype(str).tolist()
    assert kinds == ["sent", "queued", "written"]
    assert receipt.id in client.timeline.acks()["id"].tolist()


async def test_when_closed_raise(server, make_client) -> None:
    client = make_client(server.url, when_closed="raise")
    with pytest.raises(wsnb.NotOpen, match="not READY"):
        await client.send({"x": 1})
    await client.connect(timeout=5)
    await (await client.send({"x": 2})).wait(5)
    await client.close()
    with pytest.raises(wsnb.NotOpen, match="CLOSED"):
        await client.send({"x": 3})
    assert server.delivered == [{"x": 2}]
    refusals = client.timeline.states().query("type == 'error'")["detail"]
    assert refusals.str.contains("when_closed='raise'").sum() == 2


async def test_when_closed_drop_records_it(server, make_client) -> None:
    client = make_client(server.url, when_closed="drop")
    receipt = await client.send({"x": 1})
    assert receipt.state == "dropped"
    with pytest.raises(wsnb.Refused, match="dropped"):
        await receipt
    dropped = client.timeline.messages().query("type == 'dropped'")
    assert len(dropped) == 1 and "when_closed='drop'" in dropped["detail"].iloc[0]
    assert client.pending == 0


@pytest.mark.parametrize(
    ("payload", "exc", "path"),
    [
        ({"a": [1, 2, object()]}, TypeError, "payload['a'][2]"),
        ({"s": {1, 2}}, TypeError, "payload['s']"),
        ({"n": float("nan")}, ValueError, "payload['n']"),
        ({"b": b"bytes"}, TypeError, "payload['b']"),
        (object(), TypeError, "payload"),
    ],
)
async def test_non_json_payload_names_the_path(server, make_client, payload, exc, path) -> None:
    client = make_client(server.url)
    await client.connect(timeout=5)
    with pytest.raises(exc) as info:
        await client.send(payload)
    assert str(info.value).startswith(path + ":")
    assert client.pending == 0 and client.counters["sent"] == 0


async def test_large_payload_goes_in_chunks_and_arrives_whole(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", max_size=256 * 1024) as srv:
        client = make_client(srv.url, compress_min=None)
        await client.connect(timeout=5)
        big = {"blob": "é" * 300_000 + "x" * 400_000, "n": list(range(1000))}
        await (await client.send(big)).wait(10)
        assert srv.delivered == [big]
        written = client.timeline.messages().query("type == 'written'")
        assert "chunks" in written["detail"].iloc[0]
        session_id = next(iter(srv.sessions))
        await srv.send(session_id, big)  # and the other way
        assert await client.recv(timeout=10) == big


async def test_compressed_payload_round_trip(server, make_client) -> None:
    client = make_client(server.url, compress_min=100)
    await client.connect(timeout=5)
    payload = {"text": "abc" * 10_000}
    receipt = await client.send(payload)
    await receipt.wait(5)
    assert server.delivered == [payload]
    size = client.timeline.messages().query("type == 'sent'")["size"].iloc[0]
    assert size < 2_000  # 30 KB of repetition went compressed


async def test_heartbeat_detects_blackhole_within_bound(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, backoff=wsnb.Backoff(base=5, cap=5))
        await client.connect(timeout=5)
        bound = (2 * 100 + 250) / 1000
        proxy.blackhole()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.wait_until(lambda c: c.ready_state != ReadyState.OPEN, timeout=bound + 1)
        detected = loop.time() - start
        assert detected <= bound + 0.2, detected
        assert any("dead link" in d for d in client.timeline.states()["detail"])


async def test_without_heartbeat_a_blackholed_client_stays_open(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, heartbeat=False)
        await client.connect(timeout=5)
        proxy.blackhole()
        bound = (2 * 100 + 250) / 1000
        with pytest.raises(TimeoutError):
            await client.wait_until(lambda c: c.ready_state != ReadyState.OPEN,
                                    timeout=3 * bound)
        assert client.ready_state == ReadyState.OPEN  # the naive view: all looks fine


async def test_reconnect_resumes_both_ways_without_loss_or_duplicates(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url)
        await client.connect(timeout=5)
        session_id = client.session_id
        for i in range(50):
            await client.send({"c": i})
            await srv.send(session_id, {"s": i})
        proxy.cut()
        for i in range(50, 100):
            await client.send({"c": i})
            await srv.send(session_id, {"s": i})
        await client.drain(timeout=10)
        received = [await client.recv(timeout=5) for _ in range(100)]
        assert client.session_id == session_id and client.resumed
        assert client.reconnects >= 1
        assert srv.delivered == [{"c": i} for i in range(100)]
        assert received == [{"s": i} for i in range(100)]


@pytest.mark.parametrize("code", [1000, 1008, 4401])
async def test_no_reconnect_after_final_close_codes(server, make_client, code) -> None:
    client = make_client(server.url)
    await client.connect(timeout=5)
    for ws in list(server.connections):
        ws.close(code, "bye")
    await client.wait_until(lambda c: c.ready_state == ReadyState.CLOSED
                            and c.next_retry_at is None and c._task.done(), timeout=5)
    assert client.close_code == code and client.reconnects == 0


async def test_reconnects_after_going_away(server, make_client) -> None:
    client = make_client(server.url)
    await client.connect(timeout=5)
    for ws in list(server.connections):
        ws.close(1001, "going away")
    await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
    assert client.close_code == 1001


async def test_bad_token_is_an_auth_error(server, make_client) -> None:
    client = make_client(server.url, token="wrong")
    with pytest.raises(wsnb.AuthError, match="4401"):
        await client.connect(timeout=5)
    assert client.reconnects == 0


async def test_backpressure_bounds_the_outbox(make_client) -> None:
    async with wsnb.Server(port=0, token="demo") as srv, wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, max_outbox=10, when_full="raise")
        await client.connect(timeout=5)
        proxy.blackhole()  # nothing gets acked
        for i in range(10):
            await client.send({"i": i})
        assert client.pending == 10 and client.buffered_amount == 10 * len('{"i":0}')
        with pytest.raises(wsnb.Backpressure, match="outbox full: 10 messages"):
            await client.send({"i": 10})
        proxy.restore()
        waiting = make_client(proxy.url, max_outbox=10)  # when_full="wait"
        await waiting.connect(timeout=5)
        proxy.blackhole()
        for i in range(10):
            await waiting.send({"i": i})
        blocked = asyncio.ensure_future(waiting.send({"i": 10}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), 0.3)
        proxy.restore()
        waiting.disconnect_now()  # the blackholed link would take a heartbeat to notice
        receipt = await asyncio.wait_for(blocked, 10)
        await receipt.wait(10)
        assert waiting.pending == 0 and waiting.buffered_amount == 0


async def test_buffered_amount_counts_unacked_bytes(server, make_client) -> None:
    client = make_client(server.url)
    await client.send("x" * 100)  # not connected: held
    assert client.buffered_amount == 102
    await client.connect(timeout=5)
    await client.drain(5)
    assert client.buffered_amount == 0


async def test_close_fails_unacked_receipts(make_client) -> None:
    client = make_client("ws://127.0.0.1:9")  # nothing listens: stays unacked
    receipt = await client.send({"x": 1})
    await client.close()
    with pytest.raises(wsnb.NotOpen, match="closed before"):
        await receipt
    assert client.ready_state == ReadyState.CLOSED
    assert client.close_text == "1000 normal closure"
    assert (client.timeline.states()["type"] == "close").sum() == 1


async def test_objects_on_wsnb_thread_work_from_any_loop_and_thread(make_client) -> None:
    """A client on wsnb's loop thread, driven from this loop and from two other threads."""
    async with wsnb.Server(port=0, token="demo", loop="thread") as srv:
        client = make_client(srv.url, loop="thread")
        assert client._loop is not asyncio.get_running_loop()
        await client.connect(timeout=5)

        def from_thread(base: int) -> list[str]:
            async def burst() -> list[str]:
                receipts = [await client.send({"t": base + i}) for i in range(100)]
                return [(await r.wait(5)).state for r in receipts]
            return asyncio.run(burst())

        states = await asyncio.gather(asyncio.to_thread(from_thread, 0),
                                      asyncio.to_thread(from_thread, 1000))
        assert states == [["acked"] * 100, ["acked"] * 100]
        assert sorted(p["t"] for p in srv.delivered) == [*range(100), *range(1000, 1100)]
        # each thread's messages keep their own order
        assert [p["t"] for p in srv.delivered if p["t"] < 1000] == list(range(100))


def test_run_from_sync_code() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert wsnb.run(answer()) == 42


def test_the_client_never_imports_widgets() -> None:
    import subprocess
    import sys

    code = ("import sys, wsnb.client, wsnb.server, wsnb.link, wsnb.transport\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'wsnb.widgets'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_every_ready_follows_its_open(server, make_client) -> None:
    """OPEN is recorded at the upgrade, before a handshake_ack read in the same burst."""
    client = make_client(server.url)
    await client.connect()
    for cut in range(1, 6):
        client.disconnect_now()
        await client.wait_until(lambda c, cut=cut: c.ready and c.reconnects >= cut, timeout=10)
    states = [s for s in client.timeline.states()["state"] if s]
    socket_state = None
    for state in states:
        if state == "READY":
            assert socket_state == "OPEN", states
        if state in ("CONNECTING", "OPEN", "CLOSING", "CLOSED"):
            socket_state = state
    assert states.count("READY") == 6
