"""What a session store keeps, the one change it applies, and group commit.

A store keeps, per session (its *key*: the session id on a server, a name on
a client): the wire session id, the token binding, the highest incoming id
delivered (`last_delivered`), the next outgoing id, the outgoing messages not
yet acked (`pending`), when its last connection closed, and a `generation`
that fences out a stale owner (a worker that lost the session to another).

Every write is a `Change`, applied atomically with the others of its batch.
`Store.commit` queues a change and returns when it is durable; changes that
arrive while a batch is being written form the next batch (group commit: a
burst costs one fsync). Subclasses implement `_load`, `_claim`, `_write`,
`_expire` (sync, or async for a store with an asyncio client) and
`_delivered` (always sync: it serves `delivered()` outside any loop). A
`_claim` may run while a later batch is written: each must be atomic.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from wsnb.errors import WsnbError
from wsnb.protocol.session import Outgoing, Receiver, Sender, Session


class StoreError(WsnbError):
    """The store cannot be opened or written; the message names the store and the cause."""


class StaleSession(StoreError):
    """Another owner (a newer connection, maybe in another process) claimed the session."""


@dataclass(frozen=True, slots=True)
class Pending:
    """An outgoing message not yet acked: resent after a restart with the same id."""

    id: int
    data: str
    z: int = 0
    size: int = 0


@dataclass(slots=True)
class StoredSession:
    """What a store keeps of one session; see the module docstring."""

    key: str
    session_id: str | None
    token_hash: str = ""
    last_delivered: int = 0
    next_id: int = 1
    pending: list[Pending] = field(default_factory=list)
    closed_at: float | None = None  # wall clock (time.time()), None while connected
    generation: int = 0


#: apply(tx, session_key, id, payload): an effect committed atomically with the delivery
#: mark. `tx` is the store's transaction: a sqlite3 cursor inside the transaction, or a
#: redis-py pipeline in MULTI mode (queue commands on it; they run in the same EXEC).
Apply = Callable[[Any, str, int, Any], None]


@dataclass(slots=True)
class Change:
    """One atomic write to one session (only the fields given are changed).

    ``delivered_upto`` moves the delivery mark; ``messages`` are the payloads
    delivered with it (for the delivered log and `apply`). ``delivered_from``
    is the mark before them: a store whose mark is lower refuses the change
    (an earlier commit failed; writing this one would skip its messages).
    ``outgoing`` adds pending messages (refused likewise if their first id is
    beyond the stored ``next_id``); ``forget`` drops acked or refused ones (and every id up
    to ``forget_upto``); ``renumber`` replaces all pending messages (a lost
    session: ids restart at 1).
    """

    key: str
    generation: int
    session_id: str | None = None
    delivered_from: int | None = None  # the mark this change continues from (gap check)
    delivered_upto: int | None = None
    messages: tuple[tuple[int, Any], ...] = ()
    outgoing: tuple[Pending, ...] = ()
    next_id: int | None = None
    forget: tuple[int, ...] = ()
    forget_upto: int | None = None
    renumber: tuple[Pending, ...] | None = None
    closed_at: float | None | bool = False  # False: unchanged
    log: bool = False


@dataclass(slots=True)
class Outcome:
    """What one change did: ``error`` is set if it was not applied (``StaleSession``)."""

    error: Exception | None = None
    effect_errors: list[tuple[int, str]] = field(default_factory=list)  # apply raised


def pending_of(out: Outgoing) -> Pending:
    return Pending(out.id, out.data, out.z, out.size)


def to_session(record: StoredSession, sender: Sender, receiver: Receiver) -> Session:
    """A protocol `Session` rebuilt from `record` (fills `sender` and `receiver`).

    Everything pending may have been written before the crash, so the highest
    id written is taken as ``next_id - 1``: the peer's claims up to there are
    truthful.
    """
    now = time.monotonic()
    for item in record.pending:
        # It may have been written before the restart: a write now is a resend.
        sender.unsent.append(Outgoing(item.id, item.data, item.z, item.size, now,
                                      written_at=now, writes=1))
        sender.held_bytes += item.size
    sender.next_id = record.next_id
    sender.max_written = record.next_id - 1
    receiver.restore(record.last_delivered)
    receiver.hold_acks = True
    return Session(sender, receiver, id=record.session_id, token_hash=record.token_hash,
                   connections=1 if record.session_id else 0)


def apply_change(record: StoredSession, change: Change) -> None:
    """Apply `change` to an in-memory `record` (what every store does, in its own terms)."""
    if change.session_id is not None:
        record.session_id = change.session_id
    if change.delivered_upto is not None:
        record.last_delivered = max(record.last_delivered, change.delivered_upto)
    if change.renumber is not None:
        record.pending = list(change.renumber)
    gone = set(change.forget)
    upto = change.forget_upto or 0
    if gone or upto:
        record.pending = [p for p in record.pending if p.id > upto and p.id not in gone]
    if change.outgoing:
        have = {p.id for p in record.pending}
        record.pending.extend(p for p in change.outgoing if p.id not in have)
        record.pending.sort(key=lambda p: p.id)
    if change.next_id is not None:
        record.next_id = change.next_id
    elif change.outgoing:
        record.next_id = max(record.next_id, change.outgoing[-1].id + 1)
    if change.closed_at is not False:
        record.closed_at = None if change.closed_at is None else float(change.closed_at)


class Store:
    """Base of the session stores: group commit on top of four primitives.

    ``durable`` is True when what `commit` returned survives a crash of this
    process. ``apply`` (optional) runs inside the transaction of each
    delivery, once per delivered message.
    """

    durable: bool = False
    scheme: str = ""
    epoch: str = ""  # changes when the store lost its data (a recreated file, a flushed Redis)
    session_ttl: float | None = None  # seconds a closed session is kept (the server sets it)

    def __init__(self, url: str) -> None:
        self.url = url
        self.apply: Apply | None = None
        self._queue: list[tuple[Change, asyncio.Future[Outcome]]] = []
        self._writing: list[asyncio.Future[Outcome]] = []  # the batch being written
        self._flushing: asyncio.Task[None] | None = None
        self.batches = 0  # writes done (each is one transaction: one fsync when durable)
        self.changes = 0

    def __repr__(self) -> str:
        return f"<wsnb {type(self).__name__} {self.url}>"

    def new_key(self) -> str:
        """A fresh session id: 144 random bits, tagged with the store's epoch."""
        token = secrets.token_urlsafe(18)
        return f"{token}.{self.epoch}" if self.epoch else token

    def why_missing(self, key: str) -> str:
        """Why session `key` cannot be resumed, in words for the timeline."""
        token, dot, epoch = key.rpartition(".")
        tagged = (dot and len(token) == 24 and len(epoch) == len(self.epoch)
                  and all(c in "0123456789abcdef" for c in epoch))  # an id new_key made
        if tagged and self.epoch and epoch != self.epoch:
            return (f"the store lost its data since this session began (epoch {epoch}, "
                    f"now {self.epoch})")
        return "unknown or expired session"

    # ----- public, async --------------------------------------------------------

    async def open(self) -> Store:
        """Connect and create the schema; raises `StoreError` naming what failed."""
        return self

    async def close(self) -> None:
        """Write what is queued and release the store."""
        await self.flush()

    async def load(self, key: str) -> StoredSession | None:
        """The stored session `key`, or None."""
        await self.flush()
        record: StoredSession | None = await self._run(self._load, key)
        return record

    async def claim(self, key: str, create: StoredSession | None = None) -> StoredSession | None:
        """Take session `key` over: its generation goes up by one, fencing the old owner.

        With `create`, a missing session is created from it (generation 1).
        Returns the record as it now is, or None if missing and not created.
        """
        await self.flush()
        record: StoredSession | None = await self._run(self._claim, key, create)
        return record

    async def commit(self, change: Change) -> Outcome:
        """Apply `change`; returns once it is stored (durably, if ``durable``)."""
        return await self.enqueue(change)

    def enqueue(self, change: Change) -> asyncio.Future[Outcome]:
        """Queue `change` now (in call order); the future resolves once it is stored."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((change, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush_loop())
        return future

    def submit(self, change: Change) -> None:
        """Queue `change` without waiting (acks and closes: losing one only costs a resend)."""
        self.enqueue(change).add_done_callback(_consume)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (not what is queued later)."""
        waiting = [*self._writing, *(future for _, future in self._queue)]
        if waiting:
            await asyncio.wait(waiting)

    async def expire(self, older_than: float) -> int:
        """Forget sessions whose last connection closed before wall time `older_than`."""
        await self.flush()
        return int(await self._run(self._expire, older_than))

    def delivered(self) -> Any:
        """The delivered log as a pandas DataFrame: session, id, payload, time (UTC)."""
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]

        rows = self._delivered()
        frame = pd.DataFrame(rows, columns=["session", "id", "payload", "time"])
        frame["id"] = frame["id"].astype("int64")
        frame["time"] = pd.to_datetime(frame["time"].astype("float64"), unit="s", utc=True)
        return frame

    # ----- group commit ------------------------------------------------------------

    async def _flush_loop(self) -> None:
        batch: list[tuple[Change, asyncio.Future[Outcome]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self._writing = [future for _, future in batch]
                changes = [change for change, _ in batch]
                merged, owner = coalesce(changes)
                try:
                    written = await self._run(self._write, merged)
                    if len(written) != len(merged):
                        raise StoreError(f"{self.url}: {len(written)} outcomes for "
                                         f"{len(merged)} changes")
                    outcomes = [_share(written[owner[i]], change)
                                for i, change in enumerate(changes)]
                except Exception as exc:  # the store went away: every change here fails
                    error = exc if isinstance(exc, StoreError) else StoreError(
                        f"{self.url}: write failed: {type(exc).__name__}: {exc}")
                    outcomes = [Outcome(error) for _ in batch]
                self.batches += 1
                self.changes += len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:  # cancelled (the loop is closing): nobody waits forever
            self._writing = []
            for _, future in (*batch, *self._queue):
                if not future.done():
                    future.set_result(Outcome(StoreError(f"{self.url}: store closed")))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a primitive (subclasses that block override this to use a thread)."""
        result = fn(*args)
        if asyncio.iscoroutine(result):
            return await result
        return result

    # ----- primitives ----------------------------------------------------------------

    def _load(self, key: str) -> Any:
        raise NotImplementedError

    def _claim(self, key: str, create: StoredSession | None) -> Any:
        raise NotImplementedError

    def _write(self, changes: list[Change]) -> Any:
        raise NotImplementedError

    def _expire(self, older_than: float) -> Any:
        raise NotImplementedError

    def _delivered(self) -> list[tuple[str, int, Any, float]]:
        raise NotImplementedError


def _delivery_only(change: Change) -> bool:
    return (change.session_id is None and not change.outgoing and change.next_id is None
            and not change.forget and change.forget_upto is None and change.renumber is None
            and change.closed_at is False)


def _continues(last: Change, change: Change) -> bool:
    """Whether `change` only moves on the delivery mark `last` moved, for the same owner."""
    return (_delivery_only(change) and _delivery_only(last) and last.key == change.key
            and last.generation == change.generation and last.log == change.log
            and last.delivered_upto is not None and change.delivered_upto is not None
            and change.delivered_from in (None, last.delivered_upto))


def coalesce(changes: list[Change]) -> tuple[list[Change], list[int]]:
    """Merge each run of delivery-only changes to one session into one change.

    The merged change does what the run did one by one (the mark only goes up,
    messages keep their order), at the cost of one: under load a batch holds
    thousands of deliveries from a few sessions. Returns the merged changes and,
    for each change given, the index of the merged change that carries it.
    """
    merged: list[Change] = []
    owner: list[int] = []
    copied = False  # merged[-1] is this function's own copy, safe to extend
    for change in changes:
        last = merged[-1] if merged else None
        if last is not None and _continues(last, change):
            if not copied:  # never change the caller's object
                last = merged[-1] = replace(last)
                copied = True
            assert last.delivered_upto is not None and change.delivered_upto is not None
            last.delivered_upto = max(last.delivered_upto, change.delivered_upto)
            last.messages = (*last.messages, *change.messages)
        else:
            merged.append(change)
            copied = False
        owner.append(len(merged) - 1)
    return merged, owner


def _share(outcome: Outcome, change: Change) -> Outcome:
    """`outcome` of a merged change, as seen by one of the changes it carried."""
    if not outcome.effect_errors:
        return outcome
    ids = {msg_id for msg_id, _ in change.messages}
    return Outcome(outcome.error, [e for e in outcome.effect_errors if e[0] in ids])


def out_of_sequence(change: Change, last_delivered: int, next_id: int) -> StoreError | None:
    """The refusal of a change that would leave a gap, or None if it continues the record."""
    if change.delivered_from is not None and last_delivered < change.delivered_from:
        return StoreError(f"session {change.key[:8]}…: out of sequence: the store's delivery "
                          f"mark is {last_delivered}, this change continues from "
                          f"{change.delivered_from} (an earlier commit failed)")
    if change.outgoing and change.renumber is None and change.outgoing[0].id > next_id:
        return StoreError(f"session {change.key[:8]}…: out of sequence: the store's next id "
                          f"is {next_id}, this change adds {change.outgoing[0].id} (an earlier "
                          "commit failed)")
    return None


def stale(key: str, missing: bool) -> StaleSession:
    """The refusal of a change to a session this owner no longer holds."""
    if missing:
        return StaleSession(f"session {key[:8]}… is not in the store (expired or never "
                            "created)")
    return StaleSession(f"session {key[:8]}… was claimed by another owner")


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class MemoryStore(Store):
    """Today's behaviour: sessions live in this process only (``durable`` is False).

    Kept so a notebook can read the delivered log the same way; a crash or
    restart of the process loses every session (at-least-once across it).
    """

    scheme = "memory"

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        self._sessions: dict[str, StoredSession] = {}
        self._log: list[tuple[str, int, Any, float]] = []

    def _load(self, key: str) -> StoredSession | None:
        record = self._sessions.get(key)
        return None if record is None else replace(record, pending=list(record.pending))

    def _claim(self, key: str, create: StoredSession | None) -> StoredSession | None:
        record = self._sessions.get(key)
        if record is None:
            if create is None:
                return None
            record = self._sessions[key] = replace(create, key=key, generation=0,
                                                   pending=list(create.pending))
        record.generation += 1
        record.closed_at = None
        return self._load(key)

    def _write(self, changes: list[Change]) -> list[Outcome]:
        outcomes = []
        for change in changes:
            record = self._sessions.get(change.key)
            if record is None or record.generation != change.generation:
                outcomes.append(Outcome(stale(change.key, record is None)))
                continue
            gap = out_of_sequence(change, record.last_delivered, record.next_id)
            if gap is not None:
                outcomes.append(Outcome(gap))
                continue
            apply_change(record, change)
            outcome = Outcome()
            for msg_id, payload in change.messages:
                if change.log:
                    self._log.append((record.session_id or change.key, msg_id, payload,
                                      time.time()))
                if self.apply is not None:
                    try:
                        self.apply(None, change.key, msg_id, payload)
                    except Exception as exc:
                        outcome.effect_errors.append((msg_id, f"{type(exc).__name__}: {exc}"))
            outcomes.append(outcome)
        return outcomes

    def append_log(self, session: str, messages: tuple[tuple[int, Any], ...]) -> None:
        """Log deliveries of a session held outside the store (a server in memory)."""
        now = time.time()
        self._log.extend((session, msg_id, payload, now) for msg_id, payload in messages)

    def _expire(self, older_than: float) -> int:
        gone = [key for key, record in self._sessions.items()
                if record.closed_at is not None and record.closed_at < older_than]
        for key in gone:
            del self._sessions[key]
        return len(gone)

    def _delivered(self) -> list[tuple[str, int, Any, float]]:
        return list(self._log)
