"""The same behaviour from every store: memory://, sqlite: and redis:// run the same checks.

The reference is `apply_change` (what a change does to a record in memory): a
seeded sequence of changes, committed one by one and in concurrent bursts
(several per transaction), must leave each store holding what the reference
holds after every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis_server import running_redis

from wsnb.store import Change, Pending, StaleSession, Store, StoredSession, store_from_url
from wsnb.store.base import apply_change


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            url = "memory://"
        elif request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'sessions.db'}"
        else:
            url = stack.enter_context(running_redis(tmp_path / "redis")).url
        opened = await store_from_url(url).open()
        try:
            yield opened
        finally:
            await opened.close()


def record(key: str, **fields: Any) -> StoredSession:
    fields.setdefault("session_id", "sid-1")
    return StoredSession(key, token_hash="hash", **fields)


async def created(store: Store, **fields: Any) -> StoredSession:
    key = store.new_key()
    made = await store.claim(key, create=record(key, **fields))
    assert made is not None
    return made


async def test_claim_creates_then_bumps_the_generation(store: Store) -> None:
    key = store.new_key()
    assert await store.claim(key) is None and await store.load(key) is None
    pending = [Pending(1, "a", 0, 1), Pending(2, "b", 1, 2)]
    made = await store.claim(key, create=record(key, next_id=3, last_delivered=4,
                                                pending=pending, generation=9, closed_at=1.0))
    assert made == StoredSession(key, "sid-1", "hash", 4, 3, pending, None, 1)
    assert await store.load(key) == made
    await store.commit(Change(key, 1, closed_at=2.5))
    again = await store.claim(key, create=record(key, session_id="ignored"))
    assert again == replace(made, generation=2)  # create is ignored; closed_at cleared


async def test_a_stale_generation_is_refused_and_the_current_applies(store: Store) -> None:
    made = await created(store)
    key = made.key
    await store.claim(key)
    old, new, gone = await asyncio.gather(
        store.commit(Change(key, 1, delivered_upto=5)),
        store.commit(Change(key, 2, delivered_upto=3)),
        store.commit(Change("never-created", 1, delivered_upto=1)))
    assert isinstance(old.error, StaleSession) and isinstance(gone.error, StaleSession)
    assert new.error is None
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 3


async def test_the_delivery_mark_never_moves_back(store: Store) -> None:
    key = (await created(store)).key
    for upto in (5, 3, 5, 8, 0):
        assert (await store.commit(Change(key, 1, delivered_upto=upto))).error is None
    loaded = await store.load(key)
    assert loaded is not None and loaded.last_delivered == 8


async def test_outgoing_forget_and_renumber(store: Store) -> None:
    key = (await created(store)).key
    out = tuple(Pending(i, f"m{i}", i % 2, i) for i in range(1, 7))
    await store.commit(Change(key, 1, outgoing=out))
    loaded = await store.load(key)
    assert loaded is not None and loaded.pending == list(out) and loaded.next_id == 7
    await store.commit(Change(key, 1, outgoing=(Pending(2, "changed", 0, 9),)))  # kept as is
    await store.commit(Change(key, 1, forget=(5,), forget_upto=2))
    loaded = await store.load(key)
    assert loaded is not None and [p.id for p in loaded.pending] == [3, 4, 6]
    assert loaded.next_id == 7  # an old id does not move next_id back
    await store.commit(Change(key, 1, renumber=(Pending(1, "m4", 0, 4), Pending(2, "m6", 0, 6)),
                              next_id=3))
    loaded = await store.load(key)
    assert loaded is not None and loaded.pending == [Pending(1, "m4", 0, 4),
                                                     Pending(2, "m6", 0, 6)]
    assert loaded.next_id == 3


async def test_expire_forgets_only_sessions_closed_long_enough(store: Store) -> None:
    now = time.time()
    old = (await created(store, pending=[Pending(1, "x", 0, 1)], next_id=2)).key
    recent, live = (await created(store)).key, (await created(store)).key
    await store.commit(Change(old, 1, closed_at=now - 100))
    await store.commit(Change(recent, 1, closed_at=now - 10))
    assert await store.expire(now - 50) == 1
    assert await store.load(old) is None
    assert await store.load(recent) is not None and await store.load(live) is not None
    assert await store.claim(old) is None
    assert await store.expire(now - 50) == 0


async def test_the_delivered_log(store: Store) -> None:
    named = (await created(store)).key
    unnamed = (await created(store, session_id=None)).key
    before = time.time()
    await store.commit(Change(named, 1, delivered_upto=2, log=True,
                              messages=((1, {"k": [1, 2]}), (2, "text"))))
    await store.commit(Change(unnamed, 1, delivered_upto=1, messages=((1, "unlogged"),)))
    await store.commit(Change(unnamed, 1, delivered_upto=2, log=True, messages=((2, None),)))
    await store.commit(Change(named, 0, delivered_upto=3, log=True, messages=((3, "stale"),)))
    frame = store.delivered()
    assert list(frame.columns) == ["session", "id", "payload", "time"]
    assert frame[["session", "id", "payload"]].values.tolist() == [
        ["sid-1", 1, {"k": [1, 2]}], ["sid-1", 2, "text"], [unnamed, 2, None]]
    times = [t.timestamp() for t in frame["time"]]
    assert all(before - 1 <= t <= time.time() + 1 for t in times)


async def test_keys_carry_the_epoch(store: Store) -> None:
    key = store.new_key()
    if store.epoch:
        assert key.endswith("." + store.epoch)
        foreign = key.rpartition(".")[0] + ".00000000"
        assert "lost its data" in store.why_missing(foreign)
    else:
        assert "." not in key
    assert store.why_missing(key) == "unknown or expired session"


def random_change(rng: random.Random, key: str, model: StoredSession) -> Change:
    """A change with a random mix of fields, valid for `model`."""
    change = Change(key, model.generation)
    if rng.random() < 0.1:
        change.session_id = f"sid-{rng.randrange(100)}"
    if rng.random() < 0.5:
        upto = rng.randrange(model.last_delivered + 5)
        change.delivered_upto = upto
        change.log = rng.random() < 0.5
        change.messages = tuple((i, {"n": i}) for i in range(max(1, upto - 2), upto + 1))
    ids = [p.id for p in model.pending]
    if ids and rng.random() < 0.3:
        change.forget = tuple(rng.sample(ids, rng.randint(1, len(ids))))
    if ids and rng.random() < 0.2:
        change.forget_upto = rng.choice(ids)
    if rng.random() < 0.1:
        change.renumber = tuple(Pending(i, f"r{i}", 0, i) for i in range(1, rng.randint(1, 4)))
    if rng.random() < 0.5:
        first = model.next_id - rng.randint(0, 1)  # sometimes an id already there
        change.outgoing = tuple(Pending(i, f"o{i}", rng.randint(0, 1), rng.randint(1, 99))
                                for i in range(max(1, first), model.next_id + rng.randint(1, 3)))
    if rng.random() < 0.1:
        change.next_id = model.next_id + rng.randint(0, 3)
    roll = rng.random()
    if roll < 0.15:
        change.closed_at = round(time.time() - rng.random() * 1000, 6)
    elif roll < 0.3:
        change.closed_at = None
    return change


async def test_commits_match_the_reference(store: Store) -> None:
    """Seeded random changes, alone and in bursts: the store always holds what apply_change says."""
    rng = random.Random(20240611)
    model = await created(store)
    other = await created(store, session_id="sid-2")
    for _ in range(40):
        burst: list[Change] = []
        scratch = replace(model, pending=list(model.pending))
        for _ in range(rng.randint(1, 5)):  # consecutive changes to one session, one batch
            change = random_change(rng, model.key, scratch)
            apply_change(scratch, change)
            burst.append(change)
        burst.append(Change(other.key, other.generation, delivered_upto=rng.randrange(50)))
        outcomes = await asyncio.gather(*map(store.commit, burst))
        assert [o.error for o in outcomes] == [None] * len(burst)
        for change in burst[:-1]:
            apply_change(model, change)
        apply_change(other, burst[-1])
        assert await store.load(model.key) == model, burst
        assert await store.load(other.key) == other


async def test_a_change_that_would_leave_a_gap_is_refused(store: Store) -> None:
    """After a failed commit, later changes must not record a mark past its messages."""
    made = await created(store)
    gen = made.generation
    first = await store.commit(Change(made.key, gen, delivered_from=0, delivered_upto=3,
                                      messages=((1, "a"), (2, "b"), (3, "c")), log=True))
    assert first.error is None
    # The change for ids 4..5 "failed" (never reached the store); 6..8 must not land.
    gap = await store.commit(Change(made.key, gen, delivered_from=5, delivered_upto=8,
                                    messages=((6, "f"), (7, "g"), (8, "h")), log=True))
    assert gap.error is not None and "out of sequence" in str(gap.error)
    ahead = await store.commit(Change(made.key, gen, outgoing=(Pending(4, "x"),)))
    assert ahead.error is not None and "next id is 1" in str(ahead.error)
    again = await store.commit(Change(made.key, gen, delivered_from=3, delivered_upto=4,
                                      messages=((4, "d"),), log=True))
    assert again.error is None
    loaded = await store.load(made.key)
    assert loaded is not None and loaded.last_delivered == 4 and loaded.next_id == 1
    assert list(store.delivered()["id"]) == [1, 2, 3, 4]


def test_coalesce_merges_only_runs_that_continue_each_other() -> None:
    from wsnb.store.base import coalesce

    a1 = Change("a", 1, delivered_from=0, delivered_upto=2, messages=((1, "x"), (2, "y")))
    a2 = Change("a", 1, delivered_from=2, delivered_upto=3, messages=((3, "z"),))
    gap = Change("a", 1, delivered_from=5, delivered_upto=6, messages=((6, "w"),))
    b1 = Change("b", 1, delivered_from=0, delivered_upto=1, messages=((1, "q"),))
    close = Change("b", 1, closed_at=1.0)
    b2 = Change("b", 1, delivered_from=1, delivered_upto=2, messages=((2, "r"),))
    merged, owner = coalesce([a1, a2, gap, b1, close, b2])
    assert owner == [0, 0, 1, 2, 3, 4]
    assert merged[0].delivered_from == 0 and merged[0].delivered_upto == 3
    assert [i for i, _ in merged[0].messages] == [1, 2, 3]
    assert merged[1] is gap and merged[3] is close and merged[4] is b2
    assert a1.delivered_upto == 2 and len(a1.messages) == 2  # the caller's change is intact


async def test_many_openers_of_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """`wsnb serve --workers N` opens one fresh file from N processes at once (CI saw
    'database is locked' from the switch to WAL); each opener gets through."""
    for trial in range(40):
        url = f"sqlite:///{tmp_path / f'fresh{trial}.db'}"
        stores = [store_from_url(url) for _ in range(8)]
        opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        try:
            assert not [r for r in opened if isinstance(r, Exception)], opened
            assert len({s.epoch for s in stores}) == 1  # one schema, one epoch
        finally:
            for store in stores:
                with contextlib.suppress(Exception):
                    await store.close()
