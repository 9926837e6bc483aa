"""A bounded, columnar event log that every wsnb layer writes to.

Clients, servers, proxies and widgets call `Timeline.record` for each thing
that happens; `Timeline.events` and friends turn the retained window into a
pandas DataFrame. Storage is one ``array.array`` per column (small-int codes
for the categorical columns), grown on demand up to ``maxlen`` events and then
reused as a ring: each new event overwrites the oldest one and bumps
``dropped_events``. A retained event costs about 50 bytes, and `record` well
under 2 µs.

Event types (``EVENT_TYPES``):

- ``sent``: a message was accepted by ``send()``.
- ``queued``: a message is held in the outbox because the connection is not READY.
- ``written``: a message was handed to the socket.
- ``acked``: the peer confirmed a message; ``latency_ms`` is the send-to-ack time.
- ``nack``: the peer refused a message; ``detail`` says why.
- ``resent``: a message was written again after a reconnect.
- ``dropped``: a message was discarded; ``detail`` says why.
- ``received``: a message was delivered to the application.
- ``state``: readyState/READY changed; the new value is in the ``state`` column.
- ``ping`` / ``pong``: heartbeats; ``latency_ms`` on a ``pong`` is the round trip.
- ``close``: the connection closed; ``detail`` is ``"code reason"``.
- ``error``: an error in a background task; ``detail`` describes it.
- ``chaos``: a fault was injected (test proxy / chaos mode); ``detail`` names it.
- ``request`` / ``reply``: `Client.request` sent a request and got its reply; ``detail``
  is the application's own id (``id=...``), ``latency_ms`` on the reply is the round trip.

Other columns: ``direction`` is ``"out"``, ``"in"`` or ``""``; ``id`` is the
message id (or missing); ``size`` is in bytes; ``peer`` names the other end.

`record` is meant to be called from one event-loop thread while frames are
read from another (a notebook cell): a lock is held only while one event is
stored and while the retained columns are copied out, never while a DataFrame
is being built.
"""

from __future__ import annotations

import math
import os
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EVENT_TYPES", "Timeline"]

EVENT_TYPES: tuple[str, ...] = (
    "sent",
    "queued",
    "written",
    "acked",
    "nack",
    "resent",
    "dropped",
    "received",
    "state",
    "ping",
    "pong",
    "close",
    "error",
    "chaos",
    "request",
    "reply",
)
DIRECTIONS: tuple[str, ...] = ("", "out", "in")
COLUMNS: tuple[str, ...] = (
    "time",
    "type",
    "direction",
    "id",
    "size",
    "state",
    "detail",
    "latency_ms",
    "peer",
)

MESSAGE_TYPES = frozenset({"sent", "queued", "written", "resent", "received", "dropped", "nack"})
ACK_TYPES = frozenset({"acked", "nack"})
STATE_TYPES = frozenset({"state", "close", "error", "chaos"})

_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
_DIR_CODE = {name: code for code, name in enumerate(DIRECTIONS)}
_NO_ID = -(2**63)  # stored in the id column for id=None
_TYPE_DTYPE = pd.CategoricalDtype(list(EVENT_TYPES))
_DIR_DTYPE = pd.CategoricalDtype(list(DIRECTIONS))
_TIME_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
_INTERN_FLOOR = 1024  # tables below this size are never compacted


def _type_mask(types: frozenset[str]) -> np.ndarray:
    """Lookup table: ``mask[type_code]`` is True for the given types."""
    return np.array([name in types for name in EVENT_TYPES], dtype=bool)


_MESSAGE_MASK = _type_mask(MESSAGE_TYPES)
_ACK_MASK = _type_mask(ACK_TYPES)
_STATE_MASK = _type_mask(STATE_TYPES)


class Timeline:
    """Bounded columnar log of wsnb events, newest last.

    ``maxlen`` caps the retained events; older ones are evicted one for one
    and counted in ``dropped_events``. ``version`` goes up on every `record`
    (and `clear`), so a widget can poll it and redraw only when it changed.
    ``clock`` returns seconds since the epoch (``time.time`` by default).
    """

    __slots__ = (
        "_maxlen",
        "_clock",
        "_lock",
        "dropped_events",
        "version",
        "_n",
        "_head",
        "_time",
        "_latency",
        "_id",
        "_size",
        "_type",
        "_dir",
        "_state",
        "_peer",
        "_detail",
        "_states",
        "_state_code",
        "_peers",
        "_peer_code",
        "_state_limit",
        "_peer_limit",
    )

    def __init__(self, maxlen: int = 100_000, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
        self._maxlen = maxlen
        self._clock = clock
        self._lock = threading.Lock()
        self.version = 0
        self._reset()

    def _reset(self) -> None:
        """Empty every column (caller holds the lock or owns the object)."""
        self.dropped_events = 0
        self._n = 0  # retained events
        self._head = 0  # once full: physical slot of the oldest event
        self._time = array("d")
        self._latency = array("d")
        self._id = array("q")
        self._size = array("q")
        self._type = array("B")
        self._dir = array("B")
        self._state = array("I")
        self._peer = array("I")
        self._detail: list[str] = []
        self._states = [""]
        self._state_code = {"": 0}
        self._peers = [""]
        self._peer_code = {"": 0}
        self._state_limit = _INTERN_FLOOR
        self._peer_limit = _INTERN_FLOOR

    @property
    def maxlen(self) -> int:
        """Most events retained; fixed at construction."""
        return self._maxlen

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"<Timeline {self._n}/{self._maxlen} events, "
            f"dropped_events={self.dropped_events}, version={self.version}>"
        )

    def record(
        self,
        type: str,
        *,
        direction: str = "",
        id: int | None = None,
        size: int = 0,
        state: str = "",
        detail: str = "",
        latency_ms: float = math.nan,
        peer: str = "",
    ) -> None:
        """Append one event stamped with ``clock()``, evicting the oldest if full.

        ``type`` must be one of `EVENT_TYPES` and ``direction`` one of
        ``"out"``, ``"in"``, ``""``; anything else raises ValueError.
        """
        try:
            type_code = _TYPE_CODE[type]
            dir_code = _DIR_CODE[direction]
        except (KeyError, TypeError):
            raise self._bad_event(type, direction) from None
        if id is None:
            id = _NO_ID
        now = self._clock()
        with self._lock:
            state_code = self._state_code.get(state)
            if state_code is None:
                state_code = self._intern_state(state)
            peer_code = self._peer_code.get(peer)
            if peer_code is None:
                peer_code = self._intern_peer(peer)
            n = self._n
            if n < self._maxlen:
                try:  # the numeric columns reject bad values: keep all columns in step
                    self._time.append(now)
                    self._latency.append(latency_ms)
                    self._id.append(id)
                    self._size.append(size)
                except BaseException:
                    del self._time[n:], self._latency[n:], self._id[n:], self._size[n:]
                    raise
                self._type.append(type_code)
                self._dir.append(dir_code)
                self._state.append(state_code)
                self._peer.append(peer_code)
                self._detail.append(detail)
                self._n = n + 1
            else:
                h = self._head
                old = (self._time[h], self._latency[h], self._id[h], self._size[h])
                try:  # as above, but restore the oldest event's half-overwritten row
                    self._time[h] = now
                    self._latency[h] = latency_ms
                    self._id[h] = id
                    self._size[h] = size
                except BaseException:
                    self._time[h], self._latency[h], self._id[h], self._size[h] = old
                    raise
                self._type[h] = type_code
                self._dir[h] = dir_code
                self._state[h] = state_code
                self._peer[h] = peer_code
                self._detail[h] = detail
                h += 1
                self._head = 0 if h == n else h
                self.dropped_events += 1
            self.version += 1

    @staticmethod
    def _bad_event(type: object, direction: object) -> ValueError:
        if type not in EVENT_TYPES:
            return ValueError(f"unknown event type {type!r}; valid types: {', '.join(EVENT_TYPES)}")
        return ValueError(f"unknown direction {direction!r}; valid: 'out', 'in', ''")

    def _intern_state(self, state: str) -> int:
        """Code for a new ``state`` value (lock held)."""
        if not isinstance(state, str):
            raise TypeError(f"state must be a str, got {state!r}")
        if len(self._states) >= self._state_limit:
            self._states, self._state_code, self._state = _compact(self._states, self._state)
            self._state_limit = max(_INTERN_FLOOR, 2 * len(self._states))
        return _intern(self._states, self._state_code, state)

    def _intern_peer(self, peer: str) -> int:
        """Code for a new ``peer`` value (lock held)."""
        if not isinstance(peer, str):
            raise TypeError(f"peer must be a str, got {peer!r}")
        if len(self._peers) >= self._peer_limit:
            self._peers, self._peer_code, self._peer = _compact(self._peers, self._peer)
            self._peer_limit = max(_INTERN_FLOOR, 2 * len(self._peers))
        return _intern(self._peers, self._peer_code, peer)

    def clear(self) -> None:
        """Forget every event and reset ``dropped_events``; ``version`` still goes up."""
        with self._lock:
            self._reset()
            self.version += 1

    def counts(self) -> dict[str, int]:
        """Events per type (every type, zeros included) in the retained window,
        plus ``"dropped_events"``."""
        with self._lock:
            codes = np.frombuffer(self._type[:], dtype=np.uint8)
            dropped = self.dropped_events
        per_type = np.bincount(codes, minlength=len(EVENT_TYPES))
        out = {name: int(per_type[code]) for code, name in enumerate(EVENT_TYPES)}
        out["dropped_events"] = dropped
        return out

    def events(self, last: int | None = None) -> pd.DataFrame:
        """Every retained event (or the ``last`` newest) as a DataFrame, newest last."""
        return _frame(self._snapshot(_check_last(last)), None, None)

    def messages(self, last: int | None = None) -> pd.DataFrame:
        """Events of types sent, queued, written, resent, received, dropped, nack."""
        return _frame(self._snapshot(None), _MESSAGE_MASK, _check_last(last))

    def acks(self, last: int | None = None) -> pd.DataFrame:
        """Events of types acked and nack."""
        return _frame(self._snapshot(None), _ACK_MASK, _check_last(last))

    def states(self, last: int | None = None) -> pd.DataFrame:
        """Events of types state, close, error, chaos."""
        return _frame(self._snapshot(None), _STATE_MASK, _check_last(last))

    def requests(self) -> pd.DataFrame:
        """One row per `Client.request`: the application's id, when it was sent and
        answered, and the request-to-reply latency (NaN while unanswered)."""
        events = self.events()
        sent = events[events["type"] == "request"][["time", "detail", "peer"]]
        replies = events[events["type"] == "reply"][["time", "detail", "latency_ms"]]
        sent = sent.rename(columns={"time": "sent", "detail": "request"})
        replies = replies.rename(columns={"time": "replied", "detail": "request"})
        if sent.empty:
            return pd.DataFrame(columns=["request", "sent", "replied", "latency_ms", "peer"])
        merged = pd.merge_asof(replies.sort_values("replied"), sent.sort_values("sent"),
                               left_on="replied", right_on="sent", by="request",
                               direction="backward") if not replies.empty else None
        out = sent.merge(merged[["request", "sent", "replied", "latency_ms"]],
                         on=["request", "sent"], how="left") if merged is not None else \
            sent.assign(replied=pd.NaT, latency_ms=float("nan"))
        out["request"] = out["request"].str.removeprefix("id=")
        return out[["request", "sent", "replied", "latency_ms", "peer"]].reset_index(drop=True)

    # ----- files (wsnb.har) --------------------------------------------------

    @classmethod
    def from_har(cls, path: str | os.PathLike[str], maxlen: int | None = None) -> Timeline:
        """Read the WebSocket requests of a HAR file saved from Chrome or Firefox devtools.

        ``sent``/``received`` rows with sizes, ``peer`` = the request URL;
        wsnb protocol frames also give ids, ``acked`` latencies and pings.
        """
        from wsnb.har import read_har

        return read_har(path, maxlen)

    def to_har(self, path: str | os.PathLike[str], url: str | None = None) -> Path:
        """Write the retained events as a HAR file (one entry per connection, no payloads)."""
        from wsnb.har import write_har

        return write_har(self, path, url)

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the retained events to Parquet (needs the ``parquet`` extra: pyarrow)."""
        from wsnb.har import write_parquet

        return write_parquet(self, path)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str], maxlen: int | None = None) -> Timeline:
        """Read a timeline written by `to_parquet`."""
        from wsnb.har import read_parquet

        return read_parquet(path, maxlen)

    def _snapshot(self, last: int | None) -> _Snapshot:
        """Copy the newest ``last`` (default all) events out, in logical order."""
        with self._lock:
            n = self._n
            k = n if last is None else min(last, n)
            start = (self._head + n - k) % n if n else 0  # physical slot of the first one
            stop = start + k
            segments = ((start, stop),) if stop <= n else ((start, n), (0, stop - n))
            cols = [
                _take(col, segments)
                for col in (
                    self._time,
                    self._latency,
                    self._id,
                    self._size,
                    self._type,
                    self._dir,
                    self._state,
                    self._peer,
                )
            ]
            detail = _take(self._detail, segments)
            states = list(self._states)
            peers = list(self._peers)
        return _Snapshot(cols, detail, states, peers)


class _Snapshot:
    """Private copies of the columns, safe to convert without the lock."""

    __slots__ = ("cols", "detail", "states", "peers")

    def __init__(
        self, cols: list[array], detail: list[str], states: list[str], peers: list[str]
    ) -> None:
        self.cols = cols
        self.detail = detail
        self.states = states
        self.peers = peers


def _take(col: array | list, segments: tuple[tuple[int, int], ...]) -> array | list:
    if len(segments) == 1:
        a, b = segments[0]
        return col[a:b]
    (a1, b1), (a2, b2) = segments
    return col[a1:b1] + col[a2:b2]


def _check_last(last: int | None) -> int | None:
    if last is not None and (not isinstance(last, int) or last < 0):
        raise ValueError(f"last must be None or an int >= 0, got {last!r}")
    return last


def _intern(table: list[str], codes: dict[str, int], value: str) -> int:
    code = len(table)
    if code > 0xFFFFFFFF:
        raise OverflowError("too many distinct values in one Timeline column")
    table.append(value)
    codes[value] = code
    return code


def _compact(table: list[str], column: array) -> tuple[list[str], dict[str, int], array]:
    """Drop interned values no retained event uses; return new table, index and column.

    Keeps a server that sees ever-new peers (fresh ports) from growing its
    tables forever. ``""`` stays code 0.
    """
    old = np.frombuffer(column, dtype=np.uint32) if len(column) else np.zeros(0, np.uint32)
    used = np.union1d(np.unique(old), [0])
    remap = np.zeros(len(table), dtype=np.uint32)
    remap[used] = np.arange(len(used), dtype=np.uint32)
    new_column = array("I")
    new_column.frombytes(remap[old].tobytes())
    del old  # release the buffer export before the column is appended to again
    new_table = [table[int(i)] for i in used]
    return new_table, {v: i for i, v in enumerate(new_table)}, new_column


def _frame(snap: _Snapshot, type_mask: np.ndarray | None, last: int | None) -> pd.DataFrame:
    """Build the DataFrame from a snapshot, optionally keeping only some types."""
    t, lat, ids, size, types, dirs, states, peers = (
        np.frombuffer(c, dtype=c.typecode) if len(c) else np.empty(0, c.typecode) for c in snap.cols
    )
    detail = np.fromiter(snap.detail, dtype=object, count=len(snap.detail))
    if type_mask is not None:
        rows = np.flatnonzero(type_mask[types])
        if last is not None:
            rows = rows[len(rows) - min(last, len(rows)) :]
        t, lat, ids, size, types, dirs, states, peers, detail = (
            c[rows] for c in (t, lat, ids, size, types, dirs, states, peers, detail)
        )
    micros = np.rint(t * 1e6).astype(np.int64)
    columns = {
        "time": pd.array(micros.view("M8[us]"), dtype=_TIME_DTYPE),
        "type": pd.Categorical.from_codes(types, dtype=_TYPE_DTYPE, validate=False),
        "direction": pd.Categorical.from_codes(dirs, dtype=_DIR_DTYPE, validate=False),
        "id": pd.arrays.IntegerArray(ids.astype(np.int64, copy=False), ids == _NO_ID),
        "size": size.astype(np.int64, copy=False),
        "state": pd.Categorical.from_codes(
            states, dtype=pd.CategoricalDtype(snap.states), validate=False
        ),
        "detail": pd.Series(detail, dtype=object, copy=False),
        "latency_ms": lat.astype(np.float64, copy=False),
        "peer": pd.Categorical.from_codes(
            peers, dtype=pd.CategoricalDtype(snap.peers), validate=False
        ),
    }
    return pd.DataFrame(columns, columns=list(COLUMNS), copy=False)
