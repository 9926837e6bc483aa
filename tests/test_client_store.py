"""Client(store=...): a durable client outbox and delivery mark, across kernel crashes.

The server is the in-memory reference server, kept alive while clients "crash":
in-process by abandoning a Client without close (its supervisor cancelled, its
link cut), and for real by SIGKILL of a child process running a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import wsnb
from wsnb import ReadyState
from wsnb.client import _split_stored_id
from wsnb.store import MemoryStore, StaleSession, StoredSession, StoreError, store_from_url

TIMEOUT = 10.0


def sqlite_url(tmp_path: Path, name: str = "client.db") -> str:
    return f"sqlite://{tmp_path / name}"


async def stored(url: str, key: str = "client") -> StoredSession:
    """The client's record, read through a store of its own (as another process would)."""
    store = store_from_url(url)
    await store.open()
    try:
        record = await store.load(key)
    finally:
        await store.close()
    assert record is not None
    return record


def delivery_mark(record: StoredSession) -> int:
    """The last wire id the stored client recorded as delivered in its current session."""
    _, base = _split_stored_id(record.session_id, record.last_delivered)
    return record.last_delivered - base


def crash(client: wsnb.Client) -> None:
    """A kernel dies: no close(), nothing flushed; the server only sees the link drop."""
    if client._task is not None:
        client._task.cancel()
    if client.link is not None:
        client.link.abort()


class Counter:
    """A server handler that lets a test wait for the n-th delivery (no polling)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def __call__(self, session: Any, payload: Any) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, n: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while self.count < n:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def counted() -> AsyncIterator[tuple[wsnb.Server, Counter]]:
    counter = Counter()
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=200, handler=counter) as srv:
        yield srv, counter


# ----- bad input ---------------------------------------------------------------------


def test_bad_store_url_is_refused_by_the_constructor() -> None:
    with pytest.raises(StoreError, match="nonsense"):
        wsnb.Client("ws://127.0.0.1:1/", store="nonsense://x")
    with pytest.raises(StoreError, match="sqlite:///abs/path.db"):
        wsnb.Client("ws://127.0.0.1:1/", store="sqlite://")
    with pytest.raises(TypeError, match="store must be a URL string or a Store"):
        wsnb.Client("ws://127.0.0.1:1/", store=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="store= needs protocol='wsnb'"):
        wsnb.Client("ws://127.0.0.1:1/", protocol="raw", store="memory://")
    with pytest.raises(ValueError, match="store_key must be a non-empty str"):
        wsnb.Client("ws://127.0.0.1:1/", store="memory://", store_key="")


async def test_unreachable_store_fails_connect_naming_it(server, make_client,
                                                         tmp_path: Path) -> None:
    missing = f"sqlite://{tmp_path / 'no' / 'such' / 'dir.db'}"
    client = make_client(server.url, store=missing)
    with pytest.raises(StoreError, match=re.escape(f"{missing}: cannot open")):
        await client.connect(timeout=5)
    assert client.ready_state == ReadyState.CLOSED and client._task is None
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_bytes(b"this is not a database, just some text " * 200)
    other = make_client(server.url, store=f"sqlite://{not_sqlite}")
    with pytest.raises(StoreError, match=re.escape(f"sqlite://{not_sqlite}: not a usable")):
        await other.connect(timeout=5)
    with pytest.raises(StoreError, match="cannot open"):  # send() opens it too
        await client.send({"x": 1})


# ----- sending -----------------------------------------------------------------------


async def test_send_returns_once_stored_and_a_restarted_client_resends(
        counted, make_client, tmp_path: Path) -> None:
    srv, counter = counted
    url = sqlite_url(tmp_path)
    first = make_client(srv.url, store=url)
    receipts = [await first.send({"n": 1})]  # not connected: the store is opened by send
    batches = first.store.batches
    receipts += await asyncio.gather(*(first.send({"n": n}) for n in range(2, 22)))
    assert first.store.batches - batches <= 2  # concurrent sends share one commit (fsync)
    record = await stored(url)
    assert [(p.id, p.data) for p in record.pending] == [(n, f'{{"n":{n}}}') for n in range(1, 22)]
    assert record.next_id == 22 and all(r.state == "queued" for r in receipts)
    crash(first)  # never connected: only the store has them

    second = make_client(srv.url, store=url)
    await second.connect(timeout=5)
    assert [r.id for r in second.recovered] == list(range(1, 22))
    for receipt in second.recovered:
        await receipt.wait(TIMEOUT)
    assert srv.delivered == [{"n": n} for n in range(1, 22)]
    states = second.timeline.states()
    restored = states[states["state"] == "RESTORED"]["detail"].tolist()
    assert restored == [f"restored 21 un-acked messages from {url} (store_key='client', "
                        "no session yet, delivered up to 0, generation 2)"]
    await second.drain(timeout=TIMEOUT)
    await second.close()
    assert (await stored(url)).pending == []
    assert second.store._db is None  # close() closed the store it opened


async def test_crash_with_unacked_messages_resumes_without_repeats(
        counted, make_client, tmp_path: Path) -> None:
    srv, counter = counted
    url = sqlite_url(tmp_path)
    srv.ack_delay = 60.0  # the server delivers but does not ack: all stays un-acked
    first = make_client(srv.url, store=url)
    await first.connect(timeout=5)
    session_id = first.session_id
    receipts = [await first.send({"n": n}) for n in range(1, 11)]
    await counter.reach(10)
    assert all(r.state == "written" for r in receipts) and first.pending == 10
    crash(first)

    srv.ack_delay = 0.0
    second = make_client(srv.url, store=url)
    await second.connect(timeout=5)
    assert second.session_id == session_id and second.resumed
    assert [r.id for r in second.recovered] == list(range(1, 11))
    for receipt in second.recovered:  # the server had them all: acked by handshake_ack
        assert (await receipt.wait(TIMEOUT)).state == "acked"
    assert second.counters["resent"] == 0
    more = [await second.send({"n": n}) for n in range(11, 16)]
    assert [r.id for r in more] == list(range(11, 16))
    await second.drain(timeout=TIMEOUT)
    assert srv.delivered == [{"n": n} for n in range(1, 16)]
    with pytest.raises(StaleSession, match="store key 'client' was taken by another process"):
        await first.send({"n": 99})  # the crashed one, were it still running, is fenced


async def test_close_keeps_unacked_messages_for_the_next_client(
        counted, make_client, tmp_path: Path) -> None:
    srv, counter = counted
    url = sqlite_url(tmp_path)
    first = make_client(srv.url, store=url)
    receipt = await first.send({"kept": True})
    await first.close()
    assert receipt.state == "dropped" and "stays in the store" in str(receipt.error)
    second = make_client(srv.url, store=url)
    await second.connect(timeout=5)
    await second.recovered[0].wait(TIMEOUT)
    assert srv.delivered == [{"kept": True}]


async def test_messages_refused_for_good_leave_the_store(make_client, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=200, ack_delay=60.0) as srv:
        client = make_client(srv.url, store=url)
        await client.connect(timeout=5)
        receipts = [await client.send({"n": n}) for n in range(3)]
        assert len((await stored(url)).pending) == 3
        await srv.close(1000, "done with you")  # final: receipts fail, nothing is resent
        for receipt in receipts:
            with pytest.raises(wsnb.Refused):
                await receipt.wait(TIMEOUT)
    await client.close()  # lets the store writes land
    assert (await stored(url)).pending == []


async def test_connect_after_close_claims_the_store_again(
        counted, make_client, tmp_path: Path) -> None:
    srv, counter = counted
    url = sqlite_url(tmp_path)
    owned = make_client(srv.url, store=url)
    await owned.connect(timeout=5)
    await (await owned.send({"n": 1})).wait(TIMEOUT)
    await owned.close()
    await owned.connect(timeout=5)  # a fresh handle on the same URL, the session resumed
    assert owned.resumed and (await stored(url)).generation == 2
    await (await owned.send({"n": 2})).wait(TIMEOUT)

    shared = MemoryStore()  # a Store object: the client flushes it but never closes it
    mine = make_client(srv.url, store=shared, store_key="mine")
    await mine.connect(timeout=5)
    await (await mine.send({"n": 3})).wait(TIMEOUT)
    await mine.close()
    await mine.connect(timeout=5)
    assert mine.store is shared and mine.resumed
    await (await mine.send({"n": 4})).wait(TIMEOUT)
    assert srv.delivered == [{"n": n} for n in range(1, 5)]
    assert (await shared.load("mine")).generation == 2


# ----- receiving ---------------------------------------------------------------------


async def test_inbox_messages_count_as_delivered_only_once_taken(
        server, make_client, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    first = make_client(server.url, store=url)
    await first.connect(timeout=5)
    for n in range(1, 6):
        await server.send(first.session_id, {"s": n})
    assert [await first.recv(timeout=5) for _ in range(2)] == [{"s": 1}, {"s": 2}]
    await first.wait_until(lambda c: c.session.receiver.committed == 2, TIMEOUT)
    assert first.session.receiver.last_delivered == 5  # in the inbox, not yet taken
    assert delivery_mark(await stored(url)) == 2  # so the ack says 2, not 5
    crash(first)

    second = make_client(server.url, store=url)
    await second.connect(timeout=5)
    assert second.resumed
    assert [await second.recv(timeout=5) for _ in range(3)] == [{"s": n} for n in (3, 4, 5)]
    await second.wait_until(lambda c: c.session.receiver.committed == 5, TIMEOUT)
    assert second.counters["duplicates"] == 0


async def test_a_new_session_keeps_the_stored_mark_consistent(
        counted, make_client, tmp_path: Path) -> None:
    """The server loses the session: wire ids restart at 1; the stored mark must follow."""
    srv, counter = counted
    url = sqlite_url(tmp_path)
    srv.ack_delay = 60.0  # read when a link opens: client messages stay un-acked
    client = make_client(srv.url, store=url)
    await client.connect(timeout=5)
    old_id = client.session_id
    for n in range(1, 4):
        await srv.send(old_id, {"s": n})
    assert [await client.recv(timeout=5) for _ in range(3)] == [{"s": n} for n in (1, 2, 3)]
    await client.wait_until(lambda c: c.session.receiver.committed == 3, TIMEOUT)
    held = await client.send({"c": 1})
    await counter.reach(1)

    srv.ack_delay = 0.0
    await srv.restart(keep_sessions=False)  # a crashed in-memory server
    await client.wait_until(lambda c: c.ready and c.session_id != old_id, TIMEOUT)
    assert not client.resumed
    await held.wait(TIMEOUT)  # renumbered and resent (at-least-once across a lost session)
    assert held.id == 1 and srv.delivered == [{"c": 1}, {"c": 1}]
    new_id = client.session_id
    for n in range(1, 3):
        await srv.send(new_id, {"t": n})
    assert [await client.recv(timeout=5) for _ in range(2)] == [{"t": 1}, {"t": 2}]
    await client.wait_until(lambda c: c.session.receiver.committed == 2, TIMEOUT)
    record = await stored(url)
    assert record.last_delivered == 5 and record.pending == []  # never went down
    assert _split_stored_id(record.session_id, 0) == (new_id, 3) and delivery_mark(record) == 2
    crash(client)

    again = make_client(srv.url, store=url)
    await again.connect(timeout=5)
    assert again.session_id == new_id and again.resumed  # last_seen 2, not 5 (1002)
    await srv.send(new_id, {"t": 3})
    assert await again.recv(timeout=5) == {"t": 3}
    assert again.session.receiver.last_delivered == 3


# ----- fencing -----------------------------------------------------------------------


async def test_a_second_client_on_the_same_key_fences_the_first(
        counted, make_client, tmp_path: Path) -> None:
    srv, counter = counted
    url = sqlite_url(tmp_path)
    first = make_client(srv.url, store=url)
    await first.connect(timeout=5)
    await (await first.send({"from": "first"})).wait(TIMEOUT)
    second = make_client(srv.url, store=url)  # same file, same key, same process
    await second.connect(timeout=5)
    assert second.session_id == first.session_id
    with pytest.raises(StaleSession, match="store key 'client' was taken by another process"):
        await first.send({"from": "first, fenced"})
    await first.wait_state(ReadyState.CLOSED, TIMEOUT)
    errors = first.timeline.states()
    assert errors["detail"].str.contains("store key 'client' was taken").any()
    await (await second.send({"from": "second"})).wait(TIMEOUT)
    assert srv.delivered == [{"from": "first"}, {"from": "second"}]
    other_key = make_client(srv.url, store=url, store_key="other")  # another key: independent
    await other_key.connect(timeout=5)
    await (await other_key.send({"from": "other"})).wait(TIMEOUT)
    assert second.ready


# ----- real crashes: SIGKILL of a client process ----------------------------------------------

CHILD = r'''
"""A client process: sends or receives numbered messages with a SQLite store."""
import asyncio, os, signal, sys

import wsnb


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url, store, mode, n, kill_at):
    def seen(payload):
        say(f"got {payload['n']}")
        if payload["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    async def seen_async(payload):
        await asyncio.sleep(0)
        seen(payload)

    handler = {"handler": seen, "async": seen_async}.get(mode)
    client = wsnb.Client(url, token="demo", store=store, store_key="k", loop="current",
                         on_message=handler, backoff=wsnb.Backoff(base=0.02, cap=0.2))
    await client.connect(timeout=10)
    say(f"ready {client.session_id} recovered {len(client.recovered)}")
    if mode == "send":
        if kill_at:
            for start in range(1, n + 1, 25):
                chunk = range(start, min(start + 25, n + 1))
                await asyncio.gather(*(client.send({"n": i}) for i in chunk))
                say(f"sent {chunk[-1]}")
            os.kill(os.getpid(), signal.SIGKILL)  # send() returned for all n: crash now
        for receipt in client.recovered:
            await receipt.wait(10)
        await client.drain(timeout=10)
    else:
        if mode == "recv":
            while True:
                payload = await client.recv(timeout=10)
                seen(payload)
                if payload["n"] == n:
                    break
        await client.wait_until(lambda c: c.session.receiver.committed >= n, 10)
    say("done")
    await client.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
'''


@contextlib.asynccontextmanager
async def child(tmp_path: Path, *args: object) -> AsyncIterator[asyncio.subprocess.Process]:
    script = tmp_path / "client_child.py"
    if not script.exists():
        script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), *map(str, args), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def finish(proc: asyncio.subprocess.Process, killed: bool) -> list[str]:
    """Wait for the child; its stdout lines (stderr shown if it failed)."""
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    expected = -signal.SIGKILL if killed else 0
    assert proc.returncode == expected, err.decode()[-3000:]
    return out.decode().splitlines()


def got(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("got ")]


@pytest.mark.slow
@pytest.mark.parametrize("ack_delay", [0.0, 60.0], ids=["acking", "server-holds-acks"])
async def test_client_process_killed_mid_send_resumes_exactly_once(
        tmp_path: Path, ack_delay: float) -> None:
    n = 300
    store = sqlite_url(tmp_path)
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=500, ack_delay=ack_delay) as srv:
        async with child(tmp_path, srv.url, store, "send", n, 1) as first:
            lines = await finish(first, killed=True)
        assert lines[-1] == f"sent {n}"  # every send() returned, then SIGKILL
        unacked = len((await stored(store, "k")).pending)
        assert unacked == n if ack_delay else 0 <= unacked <= n
        srv.ack_delay = 0.0
        async with child(tmp_path, srv.url, store, "send", n, 0) as second:
            lines = await finish(second, killed=False)
        assert lines[0].endswith(f"recovered {unacked}") and lines[-1] == "done"
        assert srv.delivered == [{"n": i} for i in range(1, n + 1)]  # each once, in order
    assert (await stored(store, "k")).pending == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["handler", "async", "recv"])
async def test_client_process_killed_mid_receive_resumes_at_the_stored_mark(
        tmp_path: Path, mode: str) -> None:
    n, kill_at = 400, 150
    store = sqlite_url(tmp_path)
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=500) as srv:
        async with child(tmp_path, srv.url, store, mode, n, kill_at) as first:
            assert first.stdout is not None
            ready = (await asyncio.wait_for(first.stdout.readline(), 30)).decode().split()
            assert ready[0] == "ready", ready
            for i in range(1, n + 1):
                await srv.send(ready[1], {"n": i})
            before = got(await finish(first, killed=True))
        mark = delivery_mark(await stored(store, "k"))
        async with child(tmp_path, srv.url, store, mode, n, 0) as second:
            lines = await finish(second, killed=False)
    after = got(lines)
    assert lines[-1] == "done"
    assert before == list(range(1, kill_at + 1))  # the handler saw these, then the kill
    assert 0 <= mark < kill_at  # the kill came before its commit: never ahead of the handler
    assert after == list(range(mark + 1, n + 1))  # resumed right after the stored mark
    assert sorted(set(before) | set(after)) == list(range(1, n + 1))  # no gap
    repeated = sorted(set(before) & set(after))
    assert repeated == list(range(mark + 1, kill_at + 1))  # only ids above the stored mark
