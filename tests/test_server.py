"""The reference server's guarantees and limits: issue 2, point 7, and raw mode (point 8)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

import wsnb
from wsnb.protocol import envelope


async def open_session(url: str, token: str = "demo", **hello: object):
    """A hand-driven protocol client: returns (websocket, handshake_ack)."""
    ws = await connect(url, compression=None, max_size=None)
    frame = {"type": "handshake", "v": 1, "token": token, "session": None, "last_seen": 0}
    frame.update(hello)
    await ws.send(json.dumps(frame))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "handshake_ack"
    return ws, ack


async def ack_upto(ws, upto: int, timeout: float = 5.0) -> dict:
    """Read acks until one covers `upto` (acks for nacked ids may come first)."""
    for _ in range(20):
        ack = await next_frame(ws, ("ack",), timeout)
        if ack.get("upto", ack.get("id")) >= upto:
            return ack
    raise AssertionError(f"no ack up to {upto}")


async def next_frame(ws, kinds: tuple[str, ...], timeout: float = 5.0) -> dict:
    """The next frame of one of `kinds`, skipping pings (answered) and others."""
    async def read() -> dict:
        for _ in range(1000):
            frame = json.loads(await ws.recv())
            if frame["type"] == "ping":
                await ws.send(json.dumps({"type": "pong", "ts": frame["ts"]}))
            if frame["type"] in kinds:
                return frame
        raise AssertionError(f"no {kinds} frame in 1000 frames")

    return await asyncio.wait_for(read(), timeout)


def msg(id: int, d: object, secret: bytes | None = None, ts: int | None = None,
        session: str = "") -> str:
    ts = int(time.time() * 1000) if ts is None else ts
    return envelope.encode_msg(id, envelope.payload_text(d, canonical=secret is not None),
                               ts=ts, secret=secret, session=session)


async def test_workers_reorder_before_delivery(make_client) -> None:
    seen: list[object] = []

    async def handler(session: wsnb.ServerSession, payload: object) -> None:
        seen.append(payload)

    async with wsnb.Server(port=0, token="demo", workers=4, process_delay=(0, 0.005),
                           handler=handler, seed=1) as srv:
        client = make_client(srv.url)
        await client.connect(timeout=5)
        for i in range(300):
            await client.send(i)
        await client.drain(10)
        assert srv.delivered == list(range(300))
        assert seen == list(range(300))


async def test_duplicates_are_acked_not_delivered(server) -> None:
    ws, _ = await open_session(server.url)
    async with ws:
        await ws.send(msg(1, "a"))
        await ws.send(msg(1, "a"))
        await ws.send(msg(3, "c"))  # early: held until 2 arrives
        await ws.send(msg(2, "b"))
        for _ in range(5):
            ack = await next_frame(ws, ("ack",))
            if ack.get("upto") == 3:
                break
        assert server.delivered == ["a", "b", "c"]


async def test_malformed_frames_get_answers_and_the_connection_survives(server) -> None:
    ws, _ = await open_session(server.url)
    async with ws:
        await ws.send("not json")
        assert (await next_frame(ws, ("error",)))["code"] == "bad_json"
        await ws.send('{"type": "teleport"}')
        assert (await next_frame(ws, ("error",)))["code"] == "unknown_type"
        await ws.send('{"type": "msg", "v": 2, "id": 1, "ts": 0, "z": 0, "d": 1}')
        nack = await next_frame(ws, ("nack",))
        assert (nack["id"], nack["code"]) == (1, "version")
        await ws.send('{"type": "msg", "v": 1, "id": 2, "ts": 0, "z": 1, "d": "!!!"}')
        assert (await next_frame(ws, ("nack",)))["code"] == "bad_envelope"
        await ws.send("[" * 100_000)
        assert (await next_frame(ws, ("error",)))["code"] == "bad_json"
        await ws.send(b"\xff\xfe binary garbage")  # binary frames are not wsnb frames
        assert (await next_frame(ws, ("error",)))["code"] == "bad_envelope"
        await ws.send(msg(3, {"ok": True}))
        assert (await ack_upto(ws, 3))["upto"] == 3  # 1 and 2 were nacked: consumed
        assert server.delivered == [{"ok": True}]


async def test_max_size_closes_with_1009() -> None:
    async with wsnb.Server(port=0, token="demo", max_size=10_000) as srv:
        ws, ack = await open_session(srv.url)
        assert ack["max_size"] == 10_000
        await ws.send(msg(1, "x" * 20_000))
        with pytest.raises(ConnectionClosed):
            await next_frame(ws, ("never",))
        assert ws.close_code == 1009


async def test_chunk_limits_answer_too_large() -> None:
    async with wsnb.Server(port=0, token="demo", max_message=1000, max_size=4096) as srv:
        ws, _ = await open_session(srv.url)
        async with ws:
            await ws.send(json.dumps({"type": "chunk", "id": 1, "i": 0, "n": 10**9, "data": "x"}))
            assert (await next_frame(ws, ("nack",)))["code"] == "too_large"
            for i in range(3):  # a series whose total size breaks max_message
                await ws.send(json.dumps({"type": "chunk", "id": 2, "i": i, "n": 3,
                                          "data": "y" * 600}))
            assert (await next_frame(ws, ("nack",)))["code"] == "too_large"
            await ws.send(msg(3, "still alive"))
            assert (await ack_upto(ws, 3))["upto"] == 3


async def test_handshake_deadline_closes_with_4408() -> None:
    async with wsnb.Server(port=0, handshake_timeout=0.2) as srv, connect(srv.url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4408


async def test_bad_token_closes_with_4401(server) -> None:
    async with connect(server.url) as ws:
        await ws.send(json.dumps({"type": "handshake", "v": 1, "token": "nope",
                                  "session": None, "last_seen": 0}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401


async def test_signatures_and_replay_window() -> None:
    secret = b"k3y"
    async with wsnb.Server(port=0, token="demo", secret=secret) as srv:
        ws, hello = await open_session(srv.url)
        sid = hello["session"]
        async with ws:
            await ws.send(msg(1, "unsigned"))
            nack = await next_frame(ws, ("nack",))
            assert (nack["id"], nack["code"]) == (1, "bad_signature")
            good = json.loads(msg(2, "signed", secret, session=sid))
            good["d"] = "tampered"
            await ws.send(json.dumps(good))
            assert (await next_frame(ws, ("nack",)))["code"] == "bad_signature"
            old = msg(3, "stale", secret, ts=int(time.time() * 1000) - 400_000, session=sid)
            await ws.send(old)
            nack = await next_frame(ws, ("nack",))
            assert nack["reason"] == "outside replay window"
            await ws.send(msg(5, "other session", secret, session="someone-else"))
            nack = await next_frame(ws, ("nack",))  # a capture replayed across sessions
            assert (nack["id"], nack["code"]) == (5, "bad_signature")
            await ws.send(msg(4, "fresh", secret, session=sid))
            assert (await ack_upto(ws, 4))["upto"] == 5  # 5 was nacked: consumed
            await ws.send(msg(4, "fresh", secret, session=sid))  # a replay: acked, not delivered
            assert (await next_frame(ws, ("ack",)))["upto"] == 5
        assert srv.delivered == ["fresh"]


async def test_signed_client_round_trip(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", secret="s3cret") as srv:
        client = make_client(srv.url, secret="s3cret")
        await client.connect(timeout=5)
        await (await client.send({"signed": "é"})).wait(5)
        await srv.send(client.session_id, {"back": 1})
        assert await client.recv(timeout=5) == {"back": 1}
        wrong = make_client(srv.url, secret="other")
        await wrong.connect(timeout=5)
        with pytest.raises(wsnb.Refused, match="bad_signature"):
            await (await wrong.send({"x": 1})).wait(5)
        assert srv.delivered == [{"signed": "é"}]


async def test_session_is_bound_to_its_token() -> None:
    async with wsnb.Server(port=0) as srv:  # any token accepted
        ws, ack = await open_session(srv.url, token="alice")
        await ws.close()
        ws2, ack2 = await open_session(srv.url, token="mallory", session=ack["session"])
        await ws2.close()
        assert ack2["session"] != ack["session"] and not ack2["resumed"]
        ws3, ack3 = await open_session(srv.url, token="alice", session=ack["session"])
        await ws3.close()
        assert ack3["session"] == ack["session"] and ack3["resumed"]


async def test_lost_session_renumbers_and_resends(make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(srv.url.replace(str(srv.port), str(proxy.port)))
        await client.connect(timeout=5)
        before = await client.send("before")
        await before.wait(5)
        first_session = client.session_id
        proxy.blackhole()
        receipts = [await client.send(f"during {i}") for i in range(3)]
        await srv.restart(keep_sessions=False)
        proxy.restore()
        for receipt in receipts:
            await receipt.wait(10)
        assert client.session_id != first_session and not client.resumed
        assert srv.delivered[0] == "before"
        assert srv.delivered[-3:] == ["during 0", "during 1", "during 2"]
        # Written into the dead link, then resent into the new session: maybe twice.
        assert [r.at_least_once for r in receipts] == [True] * 3 and not before.at_least_once
        assert [r.id for r in receipts] == [1, 2, 3]  # their ids in the new session


async def test_raw_mode_against_a_plain_echo_server(make_client) -> None:
    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as plain:
        port = plain.sockets[0].getsockname()[1]
        client = make_client(f"ws://127.0.0.1:{port}", protocol="raw", token=None)
        await client.connect(timeout=5)
        assert client.ready_state == wsnb.ReadyState.OPEN
        receipt = await client.send({"json": [1, 2]})
        await receipt.wait(5)  # resolves once written: nothing acks in raw mode
        assert receipt.state == "written" and client.pending == 0  # never "acked"
        await client.send("plain text")
        await client.send(b"\x00\x01")
        for text in ('"42"', "NaN", '"quoted"', "1.10"):  # raw text reaches the user as sent
            await client.send(text)
        assert await client.recv(timeout=5) == '{"json":[1,2]}'
        assert await client.recv(timeout=5) == "plain text"
        assert await client.recv(timeout=5) == b"\x00\x01"
        assert [await client.recv(timeout=5) for _ in range(4)] == ['"42"', "NaN", '"quoted"',
                                                                    "1.10"]
        counts = client.timeline.counts()
        assert counts["written"] == 7 and counts["received"] == 7 and counts["acked"] == 0
        states = client.timeline.states()["state"].astype(str).tolist()
        assert "OPEN" in states


async def test_plain_http_get_gets_426(server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.split()[1] == b"426"
