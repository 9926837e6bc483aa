"""SQLite session store: embedded, standard library, WAL, group commit.

Durable when: `Store.commit` returns after the transaction that holds the
change committed. With ``sync=full`` (the default) SQLite fsyncs the WAL at
every commit, so a committed change survives a crash of the process and of
the machine (power loss included, as far as the disk honours fsync). With
``sync=normal`` it survives a crash of the process but the last commits may
be lost on a power loss (SQLite's documented WAL + NORMAL trade-off).

One file may be shared by several processes on one machine (``wsnb serve
--workers N``): writers take turns (``BEGIN IMMEDIATE``, 10 s busy timeout),
and each session's generation fences out a worker that lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from wsnb.store.base import (
    Change,
    Outcome,
    Pending,
    Store,
    StoredSession,
    StoreError,
    out_of_sequence,
    stale,
)

SCHEMA_VERSION = "1"
OPEN_WAIT = 10.0  # seconds to wait for other processes setting up the same file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wsnb_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wsnb_sessions (
    key TEXT PRIMARY KEY, session_id TEXT, token_hash TEXT NOT NULL,
    last_delivered INTEGER NOT NULL, next_id INTEGER NOT NULL, closed_at REAL,
    generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS wsnb_outbox (
    key TEXT NOT NULL, id INTEGER NOT NULL, data TEXT NOT NULL, z INTEGER NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY (key, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wsnb_delivered (
    session TEXT NOT NULL, id INTEGER NOT NULL, payload TEXT NOT NULL, time REAL NOT NULL);
"""


def _json(payload: Any) -> str:
    return orjson.dumps(payload, default=repr).decode()


class SQLiteStore(Store):
    """Sessions in one SQLite file (``sqlite:///abs/path.db``, ``sqlite:rel/path.db``).

    ``sync`` is ``"full"`` (fsync every commit: survives a machine crash) or
    ``"normal"`` (survives a process crash only).
    """

    durable = True
    scheme = "sqlite"

    def __init__(self, path: str, *, sync: str = "full", url: str | None = None) -> None:
        super().__init__(url or f"sqlite:///{path}")
        if sync not in ("full", "normal"):
            raise StoreError(f"{self.url}: sync must be 'full' or 'normal', got {sync!r}")
        self.path = path
        self.sync = sync
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="wsnb-sqlite")

    async def open(self) -> SQLiteStore:
        await self._run(self._connect)
        return self

    async def close(self) -> None:
        await self.flush()
        await self._run(self._disconnect)
        self._thread.shutdown(wait=False)

    def open_sync(self) -> SQLiteStore:
        """`open` for code outside an event loop (``wsnb store dump``, `open_store`)."""
        self._thread.submit(self._connect).result()
        return self

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # ----- primitives, all on the store's one thread ------------------------------------

    def _connect(self) -> None:
        """Open and set up the file; processes opening a new file together take turns.

        Switching a fresh file to WAL needs an exclusive lock, and SQLite answers
        "database is locked" at once (no busy wait) when two connections would
        deadlock on it: that case is tried again, for at most `OPEN_WAIT` seconds.
        """
        if self._db is not None:
            return
        deadline = time.monotonic() + OPEN_WAIT
        for attempt in range(1, 1000):
            try:
                self._db = self._open_once()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.url}: not a usable SQLite store: {exc}") from None
                time.sleep(random.uniform(0.01, 0.02 * min(attempt, 10)))
        raise StoreError(f"{self.url}: still locked after {OPEN_WAIT:g} s")

    def _open_once(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: cannot open: {exc}") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.url}: SQLite refused WAL mode (got {mode!r})")
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("BEGIN IMMEDIATE")
            for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                db.execute(statement)
            row = db.execute("SELECT v FROM wsnb_meta WHERE k='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO wsnb_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.execute("INSERT INTO wsnb_meta VALUES ('epoch', ?)", (secrets.token_hex(4),))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(f"{self.url}: schema version {row[0]}, this wsnb reads "
                                 f"{SCHEMA_VERSION}")
            self.epoch = db.execute("SELECT v FROM wsnb_meta WHERE k='epoch'").fetchone()[0]
            db.execute("COMMIT")
        except sqlite3.OperationalError:
            db.close()
            raise  # "locked": `_connect` decides whether to try again
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{self.url}: not a usable SQLite store: {exc}") from None
        except StoreError:
            db.close()
            raise
        return db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._connect()
        assert self._db is not None
        return self._db

    def _read(self, db: sqlite3.Connection, key: str) -> StoredSession | None:
        row = db.execute("SELECT session_id, token_hash, last_delivered, next_id, closed_at, "
                         "generation FROM wsnb_sessions WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        pending = [Pending(*p) for p in db.execute(
            "SELECT id, data, z, size FROM wsnb_outbox WHERE key=? ORDER BY id", (key,))]
        return StoredSession(key, row[0], row[1], row[2], row[3], pending, row[4], row[5])

    def _load(self, key: str) -> StoredSession | None:
        db = self._conn()
        try:
            db.execute("BEGIN")  # one snapshot: the row and its outbox agree
            record = self._read(db, key)
            db.execute("COMMIT")
            return record
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"{self.url}: load failed: {exc}") from None

    def _claim(self, key: str, create: StoredSession | None) -> StoredSession | None:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT 1 FROM wsnb_sessions WHERE key=?", (key,)).fetchone() is None:
                if create is None:
                    db.execute("ROLLBACK")
                    return None
                db.execute("INSERT INTO wsnb_sessions VALUES (?,?,?,?,?,NULL,0)",
                           (key, create.session_id, create.token_hash, create.last_delivered,
                            create.next_id))
                db.executemany("INSERT INTO wsnb_outbox VALUES (?,?,?,?,?)",
                               [(key, p.id, p.data, p.z, p.size) for p in create.pending])
            db.execute("UPDATE wsnb_sessions SET generation=generation+1, closed_at=NULL "
                       "WHERE key=?", (key,))
            record = self._read(db, key)
            db.execute("COMMIT")
            return record
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"{self.url}: claim failed: {exc}") from None

    def _write(self, changes: list[Change]) -> list[Outcome]:
        db = self._conn()
        outcomes: list[Outcome] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for change in changes:
                key = change.key
                row = db.execute("SELECT generation, last_delivered, next_id FROM wsnb_sessions "
                                 "WHERE key=?", (key,)).fetchone()
                if row is None or row[0] != change.generation:
                    outcomes.append(Outcome(stale(key, row is None)))
                    continue
                gap = out_of_sequence(change, row[1], row[2])
                if gap is not None:
                    outcomes.append(Outcome(gap))
                    continue
                outcomes.append(self._apply_one(db, change))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"{self.url}: write failed: {exc}") from None
        return outcomes

    def _apply_one(self, db: sqlite3.Connection, change: Change) -> Outcome:
        key = change.key
        outcome = Outcome()
        if change.session_id is not None:
            db.execute("UPDATE wsnb_sessions SET session_id=? WHERE key=?",
                       (change.session_id, key))
        if change.renumber is not None:
            db.execute("DELETE FROM wsnb_outbox WHERE key=?", (key,))
            db.executemany("INSERT INTO wsnb_outbox VALUES (?,?,?,?,?)",
                           [(key, p.id, p.data, p.z, p.size) for p in change.renumber])
        if change.forget_upto:
            db.execute("DELETE FROM wsnb_outbox WHERE key=? AND id<=?", (key, change.forget_upto))
        if change.forget:
            db.executemany("DELETE FROM wsnb_outbox WHERE key=? AND id=?",
                           [(key, i) for i in change.forget])
        if change.outgoing:
            db.executemany("INSERT OR IGNORE INTO wsnb_outbox VALUES (?,?,?,?,?)",
                           [(key, p.id, p.data, p.z, p.size) for p in change.outgoing])
        next_id = change.next_id
        if next_id is None and change.outgoing:
            next_id = change.outgoing[-1].id + 1
        if next_id is not None:
            db.execute("UPDATE wsnb_sessions SET next_id=MAX(next_id, ?) WHERE key=?"
                       if change.next_id is None else
                       "UPDATE wsnb_sessions SET next_id=? WHERE key=?", (next_id, key))
        if change.closed_at is not False:
            db.execute("UPDATE wsnb_sessions SET closed_at=? WHERE key=?",
                       (change.closed_at, key))
        if change.delivered_upto is not None:
            db.execute("UPDATE wsnb_sessions SET last_delivered=MAX(last_delivered, ?) "
                       "WHERE key=?", (change.delivered_upto, key))
        if change.messages:
            if change.log:
                now = time.time()
                session = db.execute("SELECT session_id FROM wsnb_sessions WHERE key=?",
                                     (key,)).fetchone()[0] or key
                db.executemany("INSERT INTO wsnb_delivered VALUES (?,?,?,?)",
                               [(session, i, _json(p), now) for i, p in change.messages])
            if self.apply is not None:
                cursor = db.cursor()
                for msg_id, payload in change.messages:
                    db.execute("SAVEPOINT wsnb_effect")
                    try:
                        self.apply(cursor, key, msg_id, payload)
                    except Exception as exc:  # the effect is undone; the delivery stands
                        db.execute("ROLLBACK TO wsnb_effect")
                        outcome.effect_errors.append((msg_id, f"{type(exc).__name__}: {exc}"))
                    db.execute("RELEASE wsnb_effect")
        return outcome

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _expire(self, older_than: float) -> int:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            keys = [r[0] for r in db.execute(
                "SELECT key FROM wsnb_sessions WHERE closed_at IS NOT NULL AND closed_at < ?",
                (older_than,))]
            db.executemany("DELETE FROM wsnb_outbox WHERE key=?", [(k,) for k in keys])
            db.executemany("DELETE FROM wsnb_sessions WHERE key=?", [(k,) for k in keys])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"{self.url}: expire failed: {exc}") from None
        return len(keys)

    def _delivered(self) -> list[tuple[str, int, Any, float]]:
        def read() -> list[tuple[str, int, Any, float]]:
            rows = self._conn().execute(
                "SELECT session, id, payload, time FROM wsnb_delivered ORDER BY rowid")
            return [(s, i, orjson.loads(p), t) for s, i, p, t in rows]

        return self._thread.submit(read).result()
