"""wsnb.Server with a session store: resume after losing its memory, fencing, effects, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import wsnb
from wsnb.store import StaleSession, StoreError, open_store


def ready_details(server: wsnb.Server) -> list[str]:
    states = server.timeline.states()
    return list(states[states["state"] == "READY"]["detail"])


async def send_all(client: wsnb.Client, first: int, last: int) -> None:
    receipts = [await client.send({"n": n}) for n in range(first, last + 1)]
    await asyncio.wait_for(asyncio.gather(*receipts), 20)


def delivered_numbers(url: str) -> list[int]:
    return [payload["n"] for payload in open_store(url).delivered()["payload"]]


async def test_a_server_that_lost_its_memory_resumes_from_sqlite(tmp_path: Path,
                                                                make_client: Any) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    async with wsnb.Server(port=0, token="demo", store=url, log_delivered=True,
                           loop="current") as server:
        client = make_client(server.url)
        await client.connect()
        await send_all(client, 1, 100)
        session = client.session_id
        await server.restart(keep_sessions=False)  # as a crash would: memory gone
        assert not server.sessions
        await send_all(client, 101, 200)
        assert client.session_id == session
        assert ready_details(server) == ["new session", "resumed"]
    assert delivered_numbers(url) == list(range(1, 201))


async def test_unacked_messages_to_a_client_survive_a_restart_once(tmp_path: Path,
                                                                    make_client: Any) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    got: list[int] = []
    release = asyncio.Event()

    async def slow_reader(payload: Any) -> None:  # holds the acks back: nothing is acked
        await release.wait()
        got.append(payload["n"])

    async with wsnb.Server(port=0, token="demo", store=url, loop="current") as server:
        client = make_client(server.url, on_message=slow_reader)
        await client.connect()
        session = client.session_id
        assert session is not None
        receipts = [await server.send(session, {"n": n}) for n in range(1, 21)]
        assert sum(r.done for r in receipts) <= 1  # the one the reader holds
        await server.restart(keep_sessions=False)  # recorded before written: resent, same ids
        release.set()  # the client reads again: it sees the 1012, resumes, drops duplicates
        await client.wait_until(lambda c: c.ready and c.reconnects >= 1, timeout=10)
        await client.wait_until(lambda c: len(got) >= 20, timeout=10)
        assert ready_details(server) == ["new session", "resumed"]
        await asyncio.wait_for(asyncio.gather(*(server.send(session, {"n": 21}),)), 10)
        await client.wait_until(lambda c: len(got) >= 21, timeout=10)
    assert got == list(range(1, 22))


async def test_apply_commits_the_effect_with_the_delivery_mark(tmp_path: Path,
                                                              make_client: Any) -> None:
    db_path = tmp_path / "s.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE ledger (session TEXT, id INTEGER, n INTEGER, "
                   "PRIMARY KEY (session, id))")

    def apply(tx: sqlite3.Cursor, session: str, msg_id: int, payload: Any) -> None:
        if payload["n"] == 7:
            tx.execute("INSERT INTO ledger VALUES (?,?,?)", (session, msg_id, -1))
            raise ValueError("seven is refused")  # the insert above is undone
        tx.execute("INSERT INTO ledger VALUES (?,?,?)", (session, msg_id, payload["n"]))

    url = f"sqlite://{db_path}"
    async with wsnb.Server(port=0, token="demo", store=url, apply=apply,
                           loop="current") as server:
        client = make_client(server.url)
        await client.connect()
        await send_all(client, 1, 10)
        await server.restart(keep_sessions=False)
        await send_all(client, 11, 20)
        errors = server.timeline.events()
        errors = errors[errors["type"] == "error"]
        assert any("apply raised ValueError: seven is refused" in d for d in errors["detail"])
    with sqlite3.connect(db_path) as db:
        rows = [n for (n,) in db.execute("SELECT n FROM ledger ORDER BY id")]
    assert rows == [n for n in range(1, 21) if n != 7]


async def test_two_servers_on_one_store_fence_the_older_owner(tmp_path: Path,
                                                             make_client: Any) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    async with wsnb.Server(port=0, token="demo", store=url, log_delivered=True,
                           loop="current") as first, \
            wsnb.Server(port=0, token="demo", store=url, log_delivered=True,
                        loop="current") as second:
        client = make_client(first.url)
        await client.connect()
        await send_all(client, 1, 30)
        session = client.session_id
        assert session is not None
        client.url = second.url  # the next connection reaches the other process
        client.disconnect_now()
        await send_all(client, 31, 60)
        assert client.session_id == session
        assert ready_details(second) == ["resumed"]
        with pytest.raises(StaleSession, match="claimed by another owner"):
            await first.send(session, {"late": True})  # the old owner is fenced out
        assert session not in first.sessions
    assert delivered_numbers(url) == list(range(1, 61))


async def test_a_store_that_lost_its_data_says_so_and_starts_over(tmp_path: Path,
                                                                 make_client: Any) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite://{path}"
    async with wsnb.Server(port=0, token="demo", store=url, loop="current") as server:
        client = make_client(server.url)
        await client.connect()
        await send_all(client, 1, 5)
        port = server.port
    for suffix in ("", "-wal", "-shm"):  # the disk lost the file
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    async with wsnb.Server(port=port, token="demo", store=url, loop="current") as server:
        await send_all(client, 6, 8)
        details = list(server.timeline.states()["detail"])
        assert any("the store lost its data since this session began" in d for d in details)
        assert ready_details(server) == ["new session"]


def test_bad_store_urls_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown scheme 'bogus'"):
        wsnb.Server(store="bogus://x")
    with pytest.raises(StoreError, match="sqlite:///abs/path.db"):
        wsnb.Server(store="sqlite://")
    with pytest.raises(ValueError, match="apply= needs a store"):
        wsnb.Server(apply=lambda *args: None)


async def test_a_store_that_cannot_be_opened_stops_start(tmp_path: Path) -> None:
    missing = f"sqlite://{tmp_path}/no/such/dir/s.db"
    with pytest.raises(StoreError, match=f"{missing}: cannot open"):
        await wsnb.Server(port=0, store=missing, loop="current").start()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match="not a usable SQLite store: file is not a database"):
        await wsnb.Server(port=0, store=f"sqlite://{corrupt}", loop="current").start()


async def test_the_memory_store_logs_deliveries_without_holding_acks(make_client: Any) -> None:
    async with wsnb.Server(port=0, token="demo", store="memory://", log_delivered=True,
                           loop="current") as server:
        client = make_client(server.url)
        await client.connect()
        await send_all(client, 1, 50)
        assert client.reconnects == 0 and not server.store.durable
        log = server.store.delivered()
        assert [p["n"] for p in log["payload"]] == list(range(1, 51))
        assert set(log["session"]) == {client.session_id}


async def test_hostile_session_ids_and_a_chunked_message_with_a_store(tmp_path: Path,
                                                                      make_client: Any) -> None:
    """Garbage resume ids start new sessions; a 3 MB chunked message is recorded once."""
    from websockets.asyncio.client import connect

    from wsnb.protocol import envelope

    url = f"sqlite://{tmp_path}/s.db"
    async with wsnb.Server(port=0, token="demo", store=url, log_delivered=True,
                           loop="current") as server:
        for bogus in ("'; DROP TABLE wsnb_sessions; --", "x" * 2000, "a.b.c", "\u202e\x00"):
            async with connect(server.url) as ws:
                await ws.send(envelope.handshake_frame("demo", session=bogus))
                ack = envelope.loads(await ws.recv())
                assert ack["type"] == "handshake_ack" and not ack["resumed"]
                assert ack["session"] != bogus
        client = make_client(server.url)
        await client.connect()
        big = {"rows": ["r" * 100] * 30_000}  # ~3 MB: chunked, decoded off the loop
        await asyncio.wait_for(await client.send(big), 30)
        await server.restart(keep_sessions=False)
        await send_all(client, 1, 3)
    log = open_store(url).delivered()
    assert log["payload"].iloc[0] == big and len(log) == 4
    details = " ".join(server.timeline.states()["detail"])
    assert details.count("cannot resume: unknown or expired session") == 4
