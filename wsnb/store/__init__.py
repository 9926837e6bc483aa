"""Session stores: where a session lives so it can outlast a connection, a process, a crash.

``open_store(url)`` picks one by URL:

- ``memory://`` (the default): this process only; a crash loses the sessions.
- ``sqlite:///abs/path.db`` or ``sqlite:rel/path.db`` (``?sync=normal`` to skip
  fsync): embedded, durable, shared by the processes of one machine.
- ``redis://host:port/db``: shared by many processes and machines; see
  `wsnb.store.redis` for what survives what.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from wsnb.store.base import (
    Apply,
    Change,
    MemoryStore,
    Outcome,
    Pending,
    StaleSession,
    Store,
    StoredSession,
    StoreError,
)

__all__ = ["Apply", "Change", "MemoryStore", "Outcome", "Pending", "StaleSession", "Store",
           "StoreError", "StoredSession", "open_store", "store_from_url"]

SCHEMES = "memory://, sqlite:///abs/path.db, sqlite:rel/path.db, redis://host:port/db"


def store_from_url(url: str | Store | None) -> Store:
    """A store object for `url` (not opened yet); a `Store` passes through."""
    if url is None:
        return MemoryStore()
    if isinstance(url, Store):
        return url
    if not isinstance(url, str):
        raise TypeError(f"store must be a URL string or a Store, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        from wsnb.store.sqlite import SQLiteStore

        path = parts.path if not parts.netloc else None
        if not path:
            raise StoreError(f"store URL {url!r}: expected sqlite:///abs/path.db or "
                             "sqlite:rel/path.db (a file path after the scheme)")
        unknown = set(query) - {"sync"}
        if unknown:
            raise StoreError(f"store URL {url!r}: unknown option(s) {sorted(unknown)}; "
                             "sqlite takes sync=full|normal")
        return SQLiteStore(path, sync=query.get("sync", "full"), url=url.split("?")[0])
    if scheme in ("redis", "rediss"):
        from wsnb.store.redis import RedisStore

        return RedisStore(url)
    raise StoreError(f"store URL {url!r}: unknown scheme {parts.scheme or '(none)'!r}; "
                     f"expected one of {SCHEMES}")


def open_store(url: str) -> Store:
    """Open the store at `url` for reading outside a server: ``open_store(url).delivered()``.

    Raises `StoreError` naming the URL when it cannot be opened (missing
    directory, not a SQLite file, Redis not reachable).
    """
    store = store_from_url(url)
    opener = getattr(store, "open_sync", None)
    if opener is not None:
        opener()
    return store
