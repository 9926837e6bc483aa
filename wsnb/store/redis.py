"""Redis session store: many processes and machines, one transaction per batch.

``redis://[:password@]host:port/db`` (``rediss://`` for TLS); ``?prefix=name``
puts every key under ``name:`` instead of ``wsnb:``. Other query options are
redis-py's own (``from_url``).

Keys, with the default prefix:

- ``wsnb:s:<key>``: a hash per session (session_id, token_hash,
  last_delivered, next_id, closed_at, generation; an absent field is None);
- ``wsnb:o:<key>``: its outbox, a hash id -> JSON ``[data, z, size]``;
- ``wsnb:closed``: a sorted set key -> closed_at of the closed sessions (what
  `Store.expire` scans);
- ``wsnb:delivered``: a stream, the delivered log: one entry per committed
  delivery (fields session, ids as a JSON list, payloads as a JSON list,
  time), one row per message in `Store.delivered`;
- ``wsnb:epoch``: set once (``SET NX``) when a store first opens an empty
  Redis; a new epoch means Redis lost its data, and `Store.why_missing` says so.

Every `Store.commit` batch is one ``WATCH``/``MULTI``/``EXEC``: the session
hashes of the batch are watched, their generations read, a change whose
generation differs is refused (`StaleSession`), and the rest is queued and
executed at once; a concurrent writer makes the whole batch start again
(bounded). A closed session gets a Redis TTL of ``session_ttl`` (claim removes
it), so Redis forgets abandoned sessions even when no server calls
`Store.expire`; `Store.expire` also deletes them, from ``wsnb:closed``.

``apply(pipe, key, id, payload)`` runs while the batch is queued: ``pipe`` is
a redis-py asyncio pipeline in MULTI mode, and what it queues runs in the same
EXEC as the delivery mark. It must only queue commands (a read queued there
returns nothing to it) and be idempotent per (session key, id): a write whose
reply was lost is retried. If apply raises, the batch is rebuilt without that
message's effect (the delivery and its log entry stand) and the error is in
``Outcome.effect_errors``. A queued command Redis refuses at EXEC (WRONGTYPE)
is reported the same way, but Redis does not roll back the rest of that
effect's commands.

What survives what (``store.persistence`` says which case a Redis is in):

- a crash of a wsnb server process: yes, everything `commit` returned;
- a Redis restart: only with AOF (``appendonly yes``; ``durable`` is True only
  then). Without it every session is lost: the epoch changes and a resuming
  client gets ``resumed: false`` with that reason. RDB snapshots alone lose
  the writes since the last snapshot (the epoch usually survives, so those
  sessions read as "unknown or expired");
- a crash of the Redis machine: with ``appendfsync always`` yes; with
  ``everysec`` (Redis's default) up to the last second of writes is lost;
- a failover to a replica: replication is asynchronous, so the last writes
  acknowledged by the old primary may be missing; wsnb cannot detect a lagging
  replica (the epoch survives), so a resumed session may repeat or miss what
  those writes recorded. ``WAIT`` would narrow this; this store does not use it;
- a managed Redis that refuses ``CONFIG GET``: assumed durable, and
  ``persistence`` says it is unknown; check the provider's settings.
- ``maxmemory-policy allkeys-*`` lets Redis evict live sessions; use
  ``noeviction`` (``persistence`` warns otherwise).

Failures: a Redis that cannot be reached at `open` is a `StoreError` naming
the URL (password masked) and the cause, within about twice
``CONNECT_TIMEOUT``. A Redis that goes away fails each batch (its outcomes
carry a `StoreError`): at once when the connection is refused, within about
twice ``COMMAND_TIMEOUT`` when Redis stops answering. redis-py reconnects by
itself for the next batch. A connection lost while EXEC's reply is on its way
leaves it unknown whether the batch ran; it is run again (at most
``MAX_LOST`` times), which is harmless for the session (marks only go up,
outbox writes repeat) but may log those deliveries twice.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.retry import Retry as SyncRetry

from wsnb.store.base import (
    Change,
    Outcome,
    Pending,
    StaleSession,
    Store,
    StoredSession,
    StoreError,
    out_of_sequence,
)

CONNECT_TIMEOUT = 2.0  # seconds to reach Redis (each attempt; one retry)
COMMAND_TIMEOUT = 5.0  # seconds for a reply before the connection counts as lost
MAX_TRIES = 50  # transaction attempts when concurrent writers keep changing watched keys
MAX_LOST = 2  # connections lost in one transaction before it fails
_CHUNK = 500  # sessions per expire round, log entries per read
_CONFIGS = ("appendonly", "appendfsync", "save", "maxmemory-policy")
_FIELDS = ("generation", "session_id", "last_delivered", "next_id", "closed_at")
_COMMAND_NO = re.compile(r"Command # (\d+)")


def _json(payload: Any) -> str:
    return orjson.dumps(payload, default=repr).decode()


def _entry(p: Pending) -> str:
    return orjson.dumps([p.data, p.z, p.size]).decode()


def mask_url(url: str) -> str:
    """`url` with its password (userinfo or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs],
                          safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def describe_persistence(config: dict[str, str] | None) -> tuple[bool, str]:
    """(durable, what survives) from Redis's ``CONFIG GET`` values; None: CONFIG refused."""
    if config is None:
        return True, ("unknown (CONFIG not allowed): assumed durable; check the provider's "
                      "persistence settings")
    if config.get("appendonly", "no").lower() == "yes":
        fsync = config.get("appendfsync", "everysec").lower()
        durable, text = True, f"AOF appendfsync={fsync}"
        if fsync == "everysec":
            text += " (a machine crash loses up to 1 s of writes)"
        elif fsync == "no":
            text += " (the OS decides when to write: a machine crash loses the last writes)"
    elif config.get("save", "").strip():
        durable, text = False, (f"RDB snapshots only (save {config['save'].strip()}): a Redis "
                                "restart loses the writes since the last snapshot")
    else:
        durable, text = False, "no persistence: a Redis restart loses every session"
    policy = config.get("maxmemory-policy", "noeviction")
    if policy.startswith("allkeys"):
        text += f"; maxmemory-policy {policy} may evict live sessions"
    return durable, text


@dataclass(slots=True)
class _State:
    """One session as a batch sees it: read while watching, updated as changes queue."""

    generation: int | None
    session_id: str | None
    last_delivered: int
    next_id: int
    closed: bool
    pttl: int  # ms before Redis drops the session hash (<= 0: no TTL)
    outbox: set[int] | None  # pending ids, read only when a forget_upto needs them


class _Rebuild(Exception):
    """An effect failed while queueing: start the batch again without it."""


class RedisStore(Store):
    """Sessions in Redis (``redis://host:port/db``, ``rediss://`` for TLS); see the module."""

    scheme = "redis"
    persistence = "unknown (not opened)"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("redis", "rediss"):
            raise StoreError(f"store URL {mask_url(url)!r}: expected redis:// or rediss://")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        prefix = dict(pairs).get("prefix", "wsnb")
        if not prefix:
            raise StoreError(f"store URL {mask_url(url)!r}: prefix= needs a name")
        self._target = urlunsplit(parts._replace(
            query=urlencode([(k, v) for k, v in pairs if k != "prefix"])))
        super().__init__(mask_url(url))
        try:
            port = parts.port
        except ValueError:
            raise StoreError(f"store URL {self.url!r}: the port is not a number") from None
        if port == 0:
            raise StoreError(f"store URL {self.url!r}: port 0")
        self._password = parts.password or dict(pairs).get("password") or ""
        self.prefix = prefix
        self._epoch_key = f"{prefix}:epoch"
        self._closed_key = f"{prefix}:closed"
        self.log_key = f"{prefix}:delivered"
        self.durable = False
        self._client: redis.asyncio.Redis | None = None
        self._sync: redis.Redis | None = None

    def session_key(self, key: str) -> str:
        """The Redis hash of session `key`."""
        return f"{self.prefix}:s:{key}"

    def outbox_key(self, key: str) -> str:
        """The Redis hash of session `key`'s pending outgoing messages."""
        return f"{self.prefix}:o:{key}"

    # ----- connections ---------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        # retry_on_error: redis-py 5.0 retries only the errors named here (6+ by default).
        return {"decode_responses": True, "socket_connect_timeout": CONNECT_TIMEOUT,
                "socket_timeout": COMMAND_TIMEOUT,
                "retry_on_error": [redis.exceptions.ConnectionError,
                                   redis.exceptions.TimeoutError]}

    def _async(self) -> redis.asyncio.Redis:
        if self._client is None:
            try:
                self._client = redis.asyncio.Redis.from_url(
                    self._target, retry=AsyncRetry(ExponentialBackoff(0.25, 0.05), 1),
                    **self._options())
            except ValueError as exc:
                raise StoreError(f"{self.url}: {self._scrub(exc)}") from None
        return self._client

    def _blocking(self) -> redis.Redis:
        if self._sync is None:
            try:
                self._sync = redis.Redis.from_url(
                    self._target, retry=SyncRetry(ExponentialBackoff(0.25, 0.05), 1),
                    **self._options())
            except ValueError as exc:
                raise StoreError(f"{self.url}: {self._scrub(exc)}") from None
        return self._sync

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._password, "***") if self._password else text

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.url}: {what}: {self._scrub(exc)}")

    async def open(self) -> RedisStore:
        """Connect, PING, read (or create) the epoch and what Redis persists."""
        client = self._async()
        try:
            await client.ping()
            pipe = _pipeline(client, False)
            self._queue_open(pipe)
            self._take_open(await pipe.execute(raise_on_error=False))
        except (RedisError, OSError) as exc:
            self._client = None
            await _aclose(client)
            raise self._failed("cannot open", exc) from None
        return self

    def open_sync(self) -> RedisStore:
        """`open` for code outside an event loop (`wsnb.store.open_store`, ``wsnb store dump``)."""
        client = self._blocking()
        try:
            client.ping()
            pipe = _pipeline(client, False)
            self._queue_open(pipe)
            self._take_open(pipe.execute(raise_on_error=False))
        except (RedisError, OSError) as exc:
            self._sync = None
            client.close()
            raise self._failed("cannot open", exc) from None
        return self

    def close_sync(self) -> None:
        """Close the blocking connection `open_sync` (or `Store.delivered`) made."""
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    def _queue_open(self, pipe: Any) -> None:
        pipe.set(self._epoch_key, secrets.token_hex(4), nx=True)
        pipe.get(self._epoch_key)
        for name in _CONFIGS:
            pipe.config_get(name)

    def _take_open(self, results: list[Any]) -> None:
        for result in results[:2]:
            if isinstance(result, Exception):
                raise result
        self.epoch = str(results[1])
        config: dict[str, str] | None = {}
        for result in results[2:]:
            if isinstance(result, Exception) or not isinstance(result, dict):
                config = None  # CONFIG renamed or forbidden (a managed Redis)
                break
            assert config is not None
            config.update(result)
        self.durable, self.persistence = describe_persistence(config)

    async def close(self) -> None:
        """Write what is queued, then close the connections."""
        await self.flush()
        client, self._client = self._client, None
        if client is not None:
            await _aclose(client)
        self.close_sync()

    async def _refresh_epoch(self, client: redis.asyncio.Redis) -> None:
        """Read the epoch again (a session was missing: maybe Redis lost its data)."""
        pipe = _pipeline(client, False)
        pipe.set(self._epoch_key, secrets.token_hex(4), nx=True)
        pipe.get(self._epoch_key)
        _, epoch = await pipe.execute()
        if epoch:
            self.epoch = str(epoch)

    # ----- primitives -------------------------------------------------------------------

    def _record(self, key: str, fields: dict[str, str], outbox: dict[str, str]) -> StoredSession:
        pending = sorted((Pending(int(i), *orjson.loads(v)) for i, v in outbox.items()),
                         key=lambda p: p.id)
        closed = fields.get("closed_at")
        return StoredSession(key, fields.get("session_id"), fields.get("token_hash", ""),
                             int(fields.get("last_delivered", 0)), int(fields.get("next_id", 1)),
                             pending, float(closed) if closed else None,
                             int(fields.get("generation", 0)))

    async def _load(self, key: str) -> StoredSession | None:
        client = self._async()
        try:
            pipe = _pipeline(client, True)
            pipe.hgetall(self.session_key(key))
            pipe.hgetall(self.outbox_key(key))
            fields, outbox = await pipe.execute()
            if not fields:
                await self._refresh_epoch(client)
                return None
        except RedisError as exc:
            raise self._failed("load failed", exc) from None
        return self._record(key, fields, outbox)

    async def _claim(self, key: str, create: StoredSession | None) -> StoredSession | None:
        client = self._async()
        skey, okey = self.session_key(key), self.outbox_key(key)
        lost = 0
        try:
            for _ in range(MAX_TRIES):
                async with _pipeline(client, True) as pipe:
                    try:
                        await pipe.watch(skey, okey)
                        exists = await pipe.exists(skey)
                        if not exists and create is None:
                            await pipe.reset()
                            await self._refresh_epoch(client)
                            return None
                        pipe.multi()
                        if not exists:
                            assert create is not None
                            self._queue_create(pipe, key, create)
                        pipe.hincrby(skey, "generation", 1)
                        pipe.hdel(skey, "closed_at")
                        pipe.persist(skey)
                        pipe.persist(okey)
                        pipe.zrem(self._closed_key, key)
                        pipe.hgetall(skey)
                        pipe.hgetall(okey)
                        results = await pipe.execute()
                    except WatchError as exc:
                        lost += _lost(exc)
                        if lost > MAX_LOST:
                            raise
                        continue
                return self._record(key, results[-2], results[-1])
        except RedisError as exc:
            raise self._failed("claim failed", exc) from None
        raise StoreError(f"{self.url}: claim of session {key[:8]}… kept conflicting with other "
                         f"writers ({MAX_TRIES} tries)")

    def _queue_create(self, pipe: Any, key: str, create: StoredSession) -> None:
        mapping: dict[str, str | int] = {"token_hash": create.token_hash,
                                         "last_delivered": create.last_delivered,
                                         "next_id": create.next_id, "generation": 0}
        if create.session_id is not None:
            mapping["session_id"] = create.session_id
        pipe.delete(self.outbox_key(key))  # an orphan outbox from an expired session
        pipe.hset(self.session_key(key), mapping=mapping)
        if create.pending:
            pipe.hset(self.outbox_key(key),
                      mapping={str(p.id): _entry(p) for p in create.pending})

    async def _write(self, changes: list[Change]) -> list[Outcome]:
        """Apply `changes` in one transaction; refused ones get `StaleSession`."""
        client = self._async()
        skips: dict[tuple[int, int], str] = {}  # (change, message index) -> effect error
        lost = 0
        tries = MAX_TRIES + sum(len(c.messages) for c in changes)  # each rebuild skips one
        try:
            for _ in range(tries):
                try:
                    return await self._write_once(client, changes, skips)
                except WatchError as exc:
                    lost += _lost(exc)
                    if lost > MAX_LOST:
                        raise
                except _Rebuild:
                    pass
        except RedisError as exc:
            raise self._failed("write failed", exc) from None
        raise StoreError(f"{self.url}: write of {len(changes)} change(s) kept conflicting with "
                         f"other writers ({tries} tries)")

    async def _write_once(self, client: redis.asyncio.Redis, changes: list[Change],
                          skips: dict[tuple[int, int], str]) -> list[Outcome]:
        keys = list(dict.fromkeys(c.key for c in changes))
        need_ids = {c.key for c in changes if c.forget_upto}
        async with _pipeline(client, True) as pipe:
            await pipe.watch(*[k for key in keys
                               for k in (self.session_key(key), self.outbox_key(key))])
            states = await self._read_states(client, keys, need_ids)
            pipe.multi()
            outcomes: list[Outcome] = []
            queued: dict[int, Outcome] = {}  # change index -> its outcome, when applied
            spans: list[tuple[int, int, int, int | None]] = []  # start, end, change, message
            for index, change in enumerate(changes):
                state = states[change.key]
                if state.generation is None:
                    outcomes.append(Outcome(StaleSession(
                        f"session {change.key[:8]}… is not in the store (expired, or the "
                        "store lost its data)")))
                    continue
                if state.generation != change.generation:
                    outcomes.append(Outcome(StaleSession(
                        f"session {change.key[:8]}… was claimed by another owner")))
                    continue
                gap = out_of_sequence(change, state.last_delivered, state.next_id)
                if gap is not None:
                    outcomes.append(Outcome(gap))
                    continue
                outcome = queued[index] = Outcome()
                start = len(pipe)
                self._queue_change(pipe, index, change, state, skips, outcome, spans)
                spans.append((start, len(pipe), index, None))
                outcomes.append(outcome)
            try:
                results = await pipe.execute(raise_on_error=False)
            except ResponseError as exc:  # EXECABORT: a queued command was refused, none ran
                found = _COMMAND_NO.search(str(exc))
                span = _span_of(spans, int(found.group(1)) - 1) if found else None
                if span is None or span[3] is None:
                    raise
                skips[(span[2], span[3])] = f"{type(exc).__name__}: {exc}"
                raise _Rebuild from None
        for position, result in enumerate(results):
            if not isinstance(result, Exception):
                continue
            span = _span_of(spans, position)
            if span is None:
                continue
            outcome = queued[span[2]]
            if span[3] is not None:  # an effect's command failed; Redis ran the rest
                msg_id = changes[span[2]].messages[span[3]][0]
                outcome.effect_errors.append((msg_id, f"{type(result).__name__}: {result}"))
            elif outcome.error is None:
                outcome.error = StoreError(f"{self.url}: session {changes[span[2]].key[:8]}…: "
                                           f"a write was refused: {result}")
        return outcomes

    async def _read_states(self, client: redis.asyncio.Redis, keys: list[str],
                           need_ids: set[str]) -> dict[str, _State]:
        """The watched sessions as they are now (read on another connection, after WATCH)."""
        pipe = _pipeline(client, False)
        for key in keys:
            pipe.hmget(self.session_key(key), list(_FIELDS))
            pipe.pttl(self.session_key(key))
            if key in need_ids:
                pipe.hkeys(self.outbox_key(key))
        results = iter(await pipe.execute())
        states: dict[str, _State] = {}
        for key in keys:
            generation, session_id, delivered, next_id, closed = next(results)
            pttl = int(next(results))
            ids = {int(i) for i in next(results)} if key in need_ids else None
            states[key] = _State(None if generation is None else int(generation), session_id,
                                 int(delivered or 0), int(next_id or 1), bool(closed), pttl, ids)
        return states

    def _queue_change(self, pipe: Any, index: int, change: Change, state: _State,
                      skips: dict[tuple[int, int], str], outcome: Outcome,
                      spans: list[tuple[int, int, int, int | None]]) -> None:
        key = change.key
        skey, okey = self.session_key(key), self.outbox_key(key)
        if change.session_id is not None:
            pipe.hset(skey, "session_id", change.session_id)
            state.session_id = change.session_id
        touched = False
        if change.renumber is not None:
            touched = True
            pipe.delete(okey)
            if change.renumber:
                pipe.hset(okey, mapping={str(p.id): _entry(p) for p in change.renumber})
            state.outbox = {p.id for p in change.renumber}
        if change.forget_upto and state.outbox is not None:
            gone = sorted(i for i in state.outbox if i <= change.forget_upto)
            if gone:
                touched = True
                pipe.hdel(okey, *map(str, gone))
                state.outbox.difference_update(gone)
        if change.forget:
            touched = True
            pipe.hdel(okey, *map(str, change.forget))
            if state.outbox is not None:
                state.outbox.difference_update(change.forget)
        for p in change.outgoing:
            touched = True
            pipe.hsetnx(okey, str(p.id), _entry(p))
            if state.outbox is not None:
                state.outbox.add(p.id)
        next_id = change.next_id
        if next_id is None and change.outgoing:
            next_id = max(state.next_id, change.outgoing[-1].id + 1)
        if next_id is not None and next_id != state.next_id:
            pipe.hset(skey, "next_id", next_id)
            state.next_id = next_id
        if change.closed_at is None:
            pipe.hdel(skey, "closed_at")
            pipe.persist(skey)
            pipe.persist(okey)
            pipe.zrem(self._closed_key, key)
            state.closed, state.pttl = False, -1
        elif change.closed_at is not False:
            closed_at = float(change.closed_at)
            pipe.hset(skey, "closed_at", repr(closed_at))
            pipe.zadd(self._closed_key, {key: closed_at})
            state.closed = True
            if self.session_ttl is not None:
                state.pttl = max(1, int(self.session_ttl * 1000))
                pipe.pexpire(skey, state.pttl)
                pipe.pexpire(okey, state.pttl)
        elif touched and state.pttl > 0:  # a closed session's outbox: it goes with the session
            pipe.pexpire(okey, state.pttl)
        if change.delivered_upto is not None and change.delivered_upto > state.last_delivered:
            pipe.hset(skey, "last_delivered", change.delivered_upto)
            state.last_delivered = change.delivered_upto
        if not change.messages:
            return
        if change.log:
            now = repr(time.time())
            session = state.session_id or key
            # One stream entry per change (all its messages): one command, not one per message.
            pipe.xadd(self.log_key, {
                "session": session, "ids": _json([msg_id for msg_id, _ in change.messages]),
                "payloads": _json([payload for _, payload in change.messages]), "time": now})
        if self.apply is None:
            return
        for position, (msg_id, payload) in enumerate(change.messages):
            skipped = skips.get((index, position))
            if skipped is not None:
                outcome.effect_errors.append((msg_id, skipped))
                continue
            start = len(pipe)
            try:
                self.apply(pipe, key, msg_id, payload)
            except Exception as exc:  # the effect is left out; the delivery stands
                skips[(index, position)] = f"{type(exc).__name__}: {exc}"
                raise _Rebuild from None
            spans.append((start, len(pipe), index, position))

    async def _expire(self, older_than: float) -> int:
        """Delete the sessions closed before `older_than` (Redis's TTL may have done it)."""
        client = self._async()
        gone = 0
        try:
            for _ in range(10_000):  # at most 5 M sessions per call
                keys: list[str] = await client.zrangebyscore(  # type: ignore[assignment]
                    self._closed_key, "-inf", f"({older_than!r}", start=0, num=_CHUNK)
                if not keys:
                    break
                gone += await self._expire_some(client, keys, older_than)
        except RedisError as exc:
            raise self._failed("expire failed", exc) from None
        return gone

    async def _expire_some(self, client: redis.asyncio.Redis, keys: list[str],
                           older_than: float) -> int:
        lost = 0
        for _ in range(MAX_TRIES):
            async with _pipeline(client, True) as pipe:
                try:
                    await pipe.watch(*map(self.session_key, keys))
                    read = _pipeline(client, False)
                    for key in keys:
                        read.hmget(self.session_key(key), ["generation", "closed_at"])
                    rows = await read.execute()
                    pipe.multi()
                    gone = 0
                    for key, (generation, closed) in zip(keys, rows, strict=True):
                        if generation is not None and closed and float(closed) >= older_than:
                            pipe.zadd(self._closed_key, {key: float(closed)})  # out of step
                            continue
                        pipe.zrem(self._closed_key, key)
                        if generation is None or closed:  # gone already, or closed long ago
                            pipe.delete(self.session_key(key), self.outbox_key(key))
                            gone += generation is not None
                    await pipe.execute()
                    return gone
                except WatchError as exc:
                    lost += _lost(exc)
                    if lost > MAX_LOST:
                        raise
        raise StoreError(f"{self.url}: expire kept conflicting with other writers")

    def _delivered(self) -> list[tuple[str, int, Any, float]]:
        client: Any = self._blocking()
        rows: list[tuple[str, int, Any, float]] = []
        try:
            total = int(client.xlen(self.log_key))
            start = "-"
            for _ in range(total // _CHUNK + 2):
                entries = client.xrange(self.log_key, start, "+", count=_CHUNK)
                for _entry_id, fields in entries:
                    when = float(fields["time"])
                    rows.extend((fields["session"], int(msg_id), payload, when) for msg_id, payload
                                in zip(orjson.loads(fields["ids"]),
                                       orjson.loads(fields["payloads"]), strict=True))
                if len(entries) < _CHUNK:
                    break
                start = f"({entries[-1][0]}"
        except RedisError as exc:
            raise self._failed("reading the delivered log failed", exc) from None
        return rows


async def _aclose(client: redis.asyncio.Redis) -> None:
    """Close an asyncio client (``aclose`` since redis-py 5.0.1; ``close`` before)."""
    closer = getattr(client, "aclose", None) or client.close
    await closer()


def _pipeline(client: redis.asyncio.Redis | redis.Redis, transaction: bool) -> Any:
    """A redis-py pipeline (typed Any: its command methods return self or awaitables)."""
    return client.pipeline(transaction=transaction)


def _lost(exc: WatchError) -> int:
    """1 if redis-py raised `exc` because the connection broke while watching, else 0."""
    return 1 if "occurred while watching" in str(exc) else 0


def _span_of(spans: list[tuple[int, int, int, int | None]],
             position: int) -> tuple[int, int, int, int | None] | None:
    """The innermost queued span (an effect before its change) holding command `position`."""
    found = None
    for span in spans:
        if span[0] <= position < span[1] and (found is None or span[3] is not None):
            found = span
    return found
