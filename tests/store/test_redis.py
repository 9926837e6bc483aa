"""RedisStore against a real redis-server: fencing, group commit, what survives a
Redis restart, effects in the delivery's transaction, and a Redis that is not
there or goes away (`redis_server.py` starts and kills it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, free_port, running_redis

import wsnb
import wsnb.store
from wsnb.store import Change, Pending, StaleSession, StoredSession, StoreError, store_from_url
from wsnb.store.redis import COMMAND_TIMEOUT, RedisStore, describe_persistence, mask_url

Opener = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
def aof(tmp_path: Path) -> Iterator[RedisServer]:
    """redis-server with AOF, fsync at every write."""
    with running_redis(tmp_path / "aof") as server:
        yield server


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[RedisServer]:
    """redis-server that persists nothing."""
    with running_redis(tmp_path / "volatile", persist=False) as server:
        yield server


@pytest.fixture
async def open_redis() -> AsyncIterator[Opener]:
    """Open RedisStores (closed after the test)."""
    made: list[RedisStore] = []

    async def open_(url: str, **attrs: Any) -> RedisStore:
        store = RedisStore(url)
        for name, value in attrs.items():
            setattr(store, name, value)
        made.append(store)
        return await store.open()

    yield open_
    for store in made:
        await store.close()


@pytest.fixture
def raw(aof: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(aof.url, decode_responses=True)
    yield client
    client.close()


def fresh(key: str, **fields: Any) -> StoredSession:
    fields.setdefault("session_id", f"sid-{key[:4]}")
    return StoredSession(key, token_hash="hash", **fields)


async def test_claim_creates_and_fences_the_older_owner(aof: RedisServer,
                                                        open_redis: Opener) -> None:
    first, second = await open_redis(aof.url), await open_redis(aof.url)  # two "processes"
    key = first.new_key()
    assert key.endswith("." + first.epoch) and first.epoch == second.epoch
    assert await first.claim(key) is None
    created = await first.claim(key, create=fresh(
        key, next_id=3, pending=[Pending(1, "one", 0, 3), Pending(2, "two", 1, 3)],
        generation=7, closed_at=5.0))
    assert created == StoredSession(key, f"sid-{key[:4]}", "hash", 0, 3,
                                    [Pending(1, "one", 0, 3), Pending(2, "two", 1, 3)], None, 1)
    taken = await second.claim(key)
    assert taken is not None and taken.generation == 2

    refused = await first.commit(Change(key, 1, delivered_upto=5))
    assert isinstance(refused.error, StaleSession)
    assert "claimed by another owner" in str(refused.error)
    applied = await second.commit(Change(key, 2, delivered_upto=5))
    assert applied.error is None
    loaded = await first.load(key)
    assert loaded is not None and loaded.last_delivered == 5 and loaded.generation == 2
    unknown = await first.commit(Change("no-such-session", 1, delivered_upto=1))
    assert isinstance(unknown.error, StaleSession)


async def test_a_burst_of_commits_lands_in_few_transactions(aof: RedisServer,
                                                           open_redis: Opener) -> None:
    store = await open_redis(aof.url)
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    outcomes = await asyncio.gather(*(store.commit(Change(
        key, 1, delivered_upto=i, messages=((i, {"n": i}),), log=True)) for i in range(1, 201)))
    assert [o.error for o in outcomes] == [None] * 200
    assert store.batches < 20, f"{store.batches} transactions for 200 commits"
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 200
    assert store.delivered()["id"].tolist() == list(range(1, 201))


async def test_with_aof_a_killed_redis_comes_back_with_every_session(
        aof: RedisServer, open_redis: Opener) -> None:
    store = await open_redis(aof.url)
    assert store.durable and store.persistence == "AOF appendfsync=always"
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    await store.commit(Change(key, 1, delivered_upto=7, outgoing=(Pending(1, "x", 0, 1),
                                                                  Pending(2, "y", 0, 1)),
                              closed_at=1234.5))
    before = await store.load(key)
    epoch = store.epoch

    aof.restart()  # SIGKILL: only what the AOF fsynced comes back

    assert await store.load(key) == before  # the same store reconnects by itself
    again = await open_redis(aof.url)
    assert again.epoch == epoch and await again.load(key) == before


async def test_without_persistence_a_restart_changes_the_epoch_and_says_so(
        volatile: RedisServer, open_redis: Opener) -> None:
    store = await open_redis(volatile.url)
    assert not store.durable
    assert store.persistence == "no persistence: a Redis restart loses every session"
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    old = store.epoch

    volatile.restart()

    assert await store.load(key) is None
    assert store.epoch != old  # the miss made the store read the epoch again
    why = store.why_missing(key)
    assert "lost its data" in why and old in why and store.epoch in why
    other = await open_redis(volatile.url)
    assert other.epoch == store.epoch
    assert isinstance((await store.commit(Change(key, 1, delivered_upto=1))).error, StaleSession)


async def test_effects_commit_with_the_mark_and_a_failing_one_is_left_out(
        aof: RedisServer, open_redis: Opener, raw: redis.Redis) -> None:
    raw.set("fx:string", "not a hash")

    def apply(tx: Any, key: str, msg_id: int, payload: Any) -> None:
        if payload == "boom":
            tx.hset(f"fx:{key}", str(msg_id), "half")  # queued, then dropped with the effect
            raise ValueError("no boom today")
        if payload == "unknown":
            tx.execute_command("NOSUCHCOMMAND")  # refused when queued: EXECABORT
        if payload == "wrongtype":
            tx.hincrby("fx:string", "f", 1)  # refused at EXEC; Redis runs the rest
        tx.hset(f"fx:{key}", str(msg_id), payload)

    store = await open_redis(aof.url, apply=apply)
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    outcome = await store.commit(Change(key, 1, delivered_upto=5, log=True, messages=(
        (1, "a"), (2, "boom"), (3, "c"), (4, "unknown"), (5, "wrongtype"))))
    assert outcome.error is None
    assert [msg_id for msg_id, _ in outcome.effect_errors] == [2, 4, 5]
    assert outcome.effect_errors[0][1] == "ValueError: no boom today"
    assert "NOSUCHCOMMAND" in outcome.effect_errors[1][1].upper()
    assert "WRONGTYPE" in outcome.effect_errors[2][1]
    assert raw.hgetall(f"fx:{key}") == {"1": "a", "3": "c", "5": "wrongtype"}
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 5  # the mark stands
    assert store.delivered()["id"].tolist() == [1, 2, 3, 4, 5]

    stale = await store.commit(Change(key, 0, delivered_upto=9, messages=((9, "z"),)))
    assert isinstance(stale.error, StaleSession)
    assert "9" not in raw.hgetall(f"fx:{key}")


async def test_an_effect_never_lands_without_its_mark(aof: RedisServer, open_redis: Opener,
                                                      raw: redis.Redis) -> None:
    """Another owner claims while the batch is queued: neither the effect nor the mark lands."""
    calls: list[int] = []

    def apply(tx: Any, key: str, msg_id: int, payload: Any) -> None:
        calls.append(msg_id)
        if len(calls) == 1:  # between WATCH and EXEC: another process takes the session
            raw.hincrby(store.session_key(key), "generation", 1)
        tx.hset("fx:effects", f"{key}:{msg_id}", payload)

    store = await open_redis(aof.url, apply=apply)
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    outcome = await store.commit(Change(key, 1, delivered_upto=1, messages=((1, "a"),)))
    assert isinstance(outcome.error, StaleSession)
    assert calls == [1]  # the retried batch saw the new generation and queued nothing
    assert raw.hgetall("fx:effects") == {}
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 0


def test_delivered_reads_outside_any_event_loop(aof: RedisServer) -> None:
    async def write() -> str:
        store = await RedisStore(aof.url).open()
        key = store.new_key()
        await store.claim(key, create=fresh(key, session_id="sid-x"))
        await store.commit(Change(key, 1, delivered_upto=2, log=True,
                                  messages=((1, {"a": 1}), (2, [1, "two"]))))
        await store.close()
        return key

    asyncio.run(write())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    store = wsnb.store.open_store(aof.url)
    try:
        frame = store.delivered()
    finally:
        assert isinstance(store, RedisStore)
        store.close_sync()
    assert list(frame.columns) == ["session", "id", "payload", "time"]
    assert frame["session"].tolist() == ["sid-x", "sid-x"]
    assert frame["id"].tolist() == [1, 2]
    assert frame["payload"].tolist() == [{"a": 1}, [1, "two"]]
    assert str(frame["time"].dt.tz) == "UTC"
    assert abs(frame["time"].iloc[0].timestamp() - time.time()) < 60


async def test_an_unreachable_redis_is_named_without_its_password() -> None:
    port = free_port()  # nobody listens there
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await RedisStore(url).open()
    assert time.monotonic() - started < 5
    text = str(caught.value)
    assert "hunter2" not in text and f"redis://:***@127.0.0.1:{port}/0" in text
    assert f"connecting to 127.0.0.1:{port}" in text  # the cause, from redis-py
    with pytest.raises(StoreError) as blocking:
        wsnb.store.open_store(url)  # the same, outside a loop (not running one here)
    assert "hunter2" not in str(blocking.value) and f"127.0.0.1:{port}" in str(blocking.value)
    assert "hunter2" not in repr(store_from_url(url))


async def test_a_redis_killed_mid_stream_fails_commits_then_recovers(
        aof: RedisServer, open_redis: Opener) -> None:
    store = await open_redis(aof.url)
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    assert (await store.commit(Change(key, 1, delivered_upto=1))).error is None

    aof.kill()
    async with asyncio.timeout(3 * COMMAND_TIMEOUT):
        failed = await store.commit(Change(key, 1, delivered_upto=2))
        with pytest.raises(StoreError):
            await store.load(key)
    assert isinstance(failed.error, StoreError) and not isinstance(failed.error, StaleSession)
    assert aof.url.split("//")[1] in str(failed.error)

    aof.start()
    again = await store.commit(Change(key, 1, delivered_upto=3))
    assert again.error is None
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 3


async def test_a_closed_session_gets_a_ttl_and_a_claim_removes_it(
        aof: RedisServer, open_redis: Opener, raw: redis.Redis) -> None:
    store = await open_redis(aof.url, session_ttl=60.0)
    key = store.new_key()
    skey, okey = store.session_key(key), store.outbox_key(key)
    await store.claim(key, create=fresh(key, pending=[Pending(1, "x", 0, 1)], next_id=2))
    assert raw.pttl(skey) == -1 and raw.pttl(okey) == -1
    await store.commit(Change(key, 1, closed_at=time.time()))
    assert 0 < raw.pttl(skey) <= 60_000 and 0 < raw.pttl(okey) <= 60_000
    await store.commit(Change(key, 1, renumber=(Pending(1, "y", 0, 1),)))  # outbox rewritten
    assert 0 < raw.pttl(okey) <= 60_000
    await store.claim(key)
    assert raw.pttl(skey) == -1 and raw.pttl(okey) == -1

    await store.commit(Change(key, 2, closed_at=time.time() - 100))
    assert await store.expire(time.time() - 200) == 0
    assert await store.expire(time.time() - 50) == 1
    assert raw.exists(skey, okey) == 0 and raw.zcard(f"{store.prefix}:closed") == 0


async def test_prefix_keeps_apart_and_urls_are_checked(aof: RedisServer, open_redis: Opener,
                                                       raw: redis.Redis) -> None:
    store = await open_redis(aof.url + "?prefix=app1")
    key = store.new_key()
    await store.claim(key, create=fresh(key))
    assert raw.exists(f"app1:s:{key}") == 1 and raw.get("app1:epoch") == store.epoch
    assert await (await open_redis(aof.url)).load(key) is None  # wsnb: sees nothing of app1:
    with pytest.raises(StoreError, match="port"):
        store_from_url("redis://127.0.0.1:notaport/0")
    with pytest.raises(StoreError, match="prefix"):
        store_from_url("redis://127.0.0.1/0?prefix=")
    assert (mask_url("redis://user:pw@h:1/0?prefix=x&password=pw2")
            == "redis://user:***@h:1/0?prefix=x&password=***")


async def test_config_refused_means_unknown_persistence(aof: RedisServer, raw: redis.Redis,
                                                        open_redis: Opener) -> None:
    raw.execute_command("ACL", "SETUSER", "limited", "on", ">s3cret", "~*", "&*", "+@all",
                        "-config")
    store = await open_redis(aof.url.replace("//", "//limited:s3cret@"))
    assert store.durable and store.persistence.startswith("unknown (CONFIG not allowed)")
    assert "s3cret" not in store.url


def test_describe_persistence() -> None:
    assert describe_persistence({"appendonly": "yes", "appendfsync": "everysec"}) == (
        True, "AOF appendfsync=everysec (a machine crash loses up to 1 s of writes)")
    durable, text = describe_persistence({"appendonly": "no", "save": "3600 1"})
    assert not durable and text.startswith("RDB snapshots only (save 3600 1)")
    durable, text = describe_persistence({"appendonly": "yes", "appendfsync": "always",
                                          "maxmemory-policy": "allkeys-lru"})
    assert durable and "allkeys-lru may evict" in text


async def test_a_server_records_deliveries_and_effects_in_redis(
        aof: RedisServer, raw: redis.Redis, make_client: Callable[..., Any]) -> None:
    def apply(tx: Any, key: str, msg_id: int, payload: Any) -> None:
        tx.hset(f"fx:{key}", str(msg_id), payload["n"])

    async with wsnb.Server(port=0, token="demo", store=aof.url, apply=apply,
                           log_delivered=True) as srv:
        assert srv.store.durable
        client = make_client(srv.url)
        await client.connect(timeout=5)
        for n in range(30):
            await client.send({"n": n})
        await client.drain(10)
        frame = srv.store.delivered()
        key = frame["session"].iloc[0]
        assert frame["id"].tolist() == list(range(1, 31)) and set(frame["session"]) == {key}
        assert raw.hgetall(f"fx:{key}") == {str(i + 1): str(i) for i in range(30)}
        loaded = await srv.store.load(key)
        assert loaded is not None and loaded.last_delivered == 30
