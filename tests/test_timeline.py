"""Timeline: dtypes, filtering, last=N, ring eviction, clock, counts, threads, bounds."""

from __future__ import annotations

import itertools
import math
import threading
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from wsnb.timeline import EVENT_TYPES, Timeline

COLUMNS = ["time", "type", "direction", "id", "size", "state", "detail", "latency_ms", "peer"]
BASE = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def ticking(start: float = BASE, step: float = 0.25):
    """A fake clock returning start, start + step, ... (exact binary fractions)."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


def check_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert isinstance(df.index, pd.RangeIndex)
    assert df.index.start == 0 and df.index.step == 1
    assert isinstance(df["time"].dtype, pd.DatetimeTZDtype)
    assert str(df["time"].dtype.tz) == "UTC"
    assert df["time"].dtype.unit in ("ns", "us", "ms")
    assert isinstance(df["type"].dtype, pd.CategoricalDtype)
    assert list(df["type"].cat.categories) == list(EVENT_TYPES)
    for name in ("direction", "state", "peer"):
        assert isinstance(df[name].dtype, pd.CategoricalDtype), name
    assert df["id"].dtype == "Int64"
    assert df["size"].dtype == np.int64
    assert df["detail"].dtype == object or isinstance(df["detail"].dtype, pd.StringDtype)
    assert df["latency_ms"].dtype == np.float64


def test_dtypes_and_values() -> None:
    tl = Timeline(clock=ticking())
    tl.record("sent", direction="out", id=1, size=10, peer="ws://a")
    tl.record("acked", direction="in", id=1, latency_ms=2.5, peer="ws://a")
    tl.record("state", state="READY", detail="handshake ok")
    df = tl.events()
    check_dtypes(df)
    assert len(df) == len(tl) == 3
    assert df["type"].tolist() == ["sent", "acked", "state"]
    assert df["direction"].tolist() == ["out", "in", ""]
    assert df["id"].tolist() == [1, 1, pd.NA]
    assert df["size"].tolist() == [10, 0, 0]
    assert df["state"].tolist() == ["", "", "READY"]
    assert df["detail"].tolist() == ["", "", "handshake ok"]
    assert math.isnan(df["latency_ms"][0]) and df["latency_ms"][1] == 2.5
    assert df["peer"].tolist() == ["ws://a", "ws://a", ""]


@pytest.mark.parametrize("method", ["events", "messages", "acks", "states"])
def test_empty_frame_has_columns_and_dtypes(method: str) -> None:
    df = getattr(Timeline(), method)()
    assert len(df) == 0
    check_dtypes(df)


def test_filtered_empty_frame_has_dtypes() -> None:
    tl = Timeline()
    tl.record("ping")
    df = tl.messages()
    assert len(df) == 0
    check_dtypes(df)


def test_fake_clock_gives_exact_timestamps() -> None:
    tl = Timeline(clock=ticking(BASE + 0.123456, 1.5))
    for _ in range(3):
        tl.record("ping")
    times = tl.events()["time"].tolist()
    assert times == [
        pd.Timestamp("2023-11-14 22:13:20.123456", tz="UTC"),
        pd.Timestamp("2023-11-14 22:13:21.623456", tz="UTC"),
        pd.Timestamp("2023-11-14 22:13:23.123456", tz="UTC"),
    ]


def test_default_clock_is_wall_time() -> None:
    tl = Timeline()
    before = pd.Timestamp.now(tz="UTC").floor("us")
    tl.record("ping")
    after = pd.Timestamp.now(tz="UTC").ceil("us")
    assert before <= tl.events()["time"][0] <= after


def every_type(tl: Timeline) -> None:
    for i, name in enumerate(EVENT_TYPES):
        tl.record(name, id=i)


def test_messages_acks_states_filter_by_type() -> None:
    tl = Timeline(clock=ticking())
    every_type(tl)
    every_type(tl)
    messages = {"sent", "queued", "written", "resent", "received", "dropped", "nack"}
    for method, wanted in [
        (tl.messages, messages),
        (tl.acks, {"acked", "nack"}),
        (tl.states, {"state", "close", "error", "chaos"}),
        (tl.events, set(EVENT_TYPES)),
    ]:
        df = method()
        check_dtypes(df)
        assert set(df["type"]) == wanted
        assert len(df) == 2 * len(wanted)
        # oldest first, as recorded
        assert df["time"].is_monotonic_increasing
        assert df["type"].tolist()[: len(wanted)] == [t for t in EVENT_TYPES if t in wanted]


def test_last_n() -> None:
    tl = Timeline(clock=ticking())
    for i in range(10):
        tl.record("sent", id=i)
        tl.record("acked", id=i)
    assert tl.events(last=3)["id"].tolist() == [8, 9, 9]
    assert tl.events(last=3)["type"].tolist() == ["acked", "sent", "acked"]
    assert tl.messages(last=3)["id"].tolist() == [7, 8, 9]
    assert tl.acks(last=2)["id"].tolist() == [8, 9]
    assert tl.states(last=5).empty
    assert len(tl.events(last=0)) == 0
    check_dtypes(tl.events(last=0))
    assert len(tl.events(last=1000)) == 20
    assert isinstance(tl.messages(last=3).index, pd.RangeIndex)
    with pytest.raises(ValueError, match="last"):
        tl.events(last=-1)


def test_eviction_at_maxlen() -> None:
    tl = Timeline(maxlen=5, clock=ticking(0.0, 1.0))
    assert tl.maxlen == 5
    for i in range(5):
        tl.record("sent", id=i)
    assert len(tl) == 5 and tl.dropped_events == 0
    for i in range(5, 13):
        tl.record("sent", id=i)
    assert len(tl) == 5
    assert tl.dropped_events == 8
    df = tl.events()
    assert df["id"].tolist() == [8, 9, 10, 11, 12]  # oldest gone, newest last
    assert df["time"].tolist() == [pd.Timestamp(t, unit="s", tz="UTC") for t in range(8, 13)]
    # last=N across the ring's wrap point (the oldest slot is in the middle)
    assert tl.events(last=4)["id"].tolist() == [9, 10, 11, 12]
    assert tl.messages(last=2)["id"].tolist() == [11, 12]
    assert tl.counts()["dropped_events"] == 8


def test_maxlen_one_and_invalid() -> None:
    tl = Timeline(maxlen=1)
    tl.record("sent", id=1)
    tl.record("sent", id=2)
    assert tl.events()["id"].tolist() == [2]
    assert tl.dropped_events == 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="maxlen"):
            Timeline(maxlen=bad)  # type: ignore[arg-type]


def test_unknown_type_raises_and_records_nothing() -> None:
    tl = Timeline()
    with pytest.raises(ValueError) as err:
        tl.record("bogus")
    message = str(err.value)
    assert "'bogus'" in message
    for name in EVENT_TYPES:
        assert name in message
    with pytest.raises(ValueError, match="direction 'sideways'"):
        tl.record("sent", direction="sideways")
    assert len(tl) == 0 and tl.version == 0


@pytest.mark.parametrize("fill", [0, 3, 7])  # growing, growing, ring full
@pytest.mark.parametrize(
    "bad",
    [
        {"id": "x"},
        {"id": 2**63},
        {"size": 1.5},
        {"latency_ms": "slow"},
        {"state": 3},
        {"peer": None},
    ],
)
def test_bad_value_leaves_columns_in_step(fill: int, bad: dict) -> None:
    tl = Timeline(maxlen=5, clock=ticking(0.0, 1.0))
    for i in range(fill):
        tl.record("sent", id=i, size=i, latency_ms=float(i))
    before = tl.events()
    with pytest.raises((TypeError, OverflowError)):
        tl.record("sent", **bad)
    assert len(tl) == min(fill, 5) and tl.version == fill
    pd.testing.assert_frame_equal(tl.events(), before)
    tl.record("sent", id=99)
    assert tl.events()["id"].tolist()[-1] == 99


def test_counts() -> None:
    tl = Timeline(maxlen=4)
    assert tl.counts() == {**dict.fromkeys(EVENT_TYPES, 0), "dropped_events": 0}
    for name in ("sent", "sent", "acked", "ping", "pong", "sent"):
        tl.record(name)
    counts = tl.counts()
    assert list(counts) == [*EVENT_TYPES, "dropped_events"]
    # retained: acked, ping, pong, sent (the first two "sent" were evicted)
    assert counts["sent"] == 1 and counts["acked"] == 1
    assert counts["ping"] == 1 and counts["pong"] == 1
    assert counts["dropped_events"] == 2
    assert sum(counts[t] for t in EVENT_TYPES) == len(tl)


def test_version_and_clear() -> None:
    tl = Timeline(maxlen=2)
    assert tl.version == 0
    for i in range(5):
        tl.record("sent", id=i, peer=f"p{i}", state="READY")
    assert tl.version == 5 and tl.dropped_events == 3
    tl.clear()
    assert tl.version == 6
    assert len(tl) == 0 and tl.dropped_events == 0
    assert tl.events().empty and tl.counts()["sent"] == 0
    tl.record("sent", id=9)
    assert tl.events()["id"].tolist() == [9]
    assert list(tl.events()["peer"].cat.categories) == [""]


def test_many_distinct_peers_stay_bounded() -> None:
    """A server seeing ever-new peers (fresh ports) must not grow its tables forever."""
    tl = Timeline(maxlen=100)
    for i in range(20_000):
        tl.record("received", id=i, peer=f"127.0.0.1:{i}", state=f"s{i}")
    df = tl.events()
    assert df["peer"].tolist() == [f"127.0.0.1:{i}" for i in range(19_900, 20_000)]
    assert df["state"].tolist() == [f"s{i}" for i in range(19_900, 20_000)]
    assert len(df["peer"].cat.categories) <= 2_048
    assert len(df["state"].cat.categories) <= 2_048


def test_empty_timeline_is_tiny_and_lazy() -> None:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        timelines = [Timeline(maxlen=10_000_000) for _ in range(100)]
        per_instance = (tracemalloc.get_traced_memory()[0] - base) / len(timelines)
    finally:
        tracemalloc.stop()
    assert per_instance < 2_048


def test_memory_does_not_grow_past_maxlen() -> None:
    tl = Timeline(maxlen=1_000)
    tracemalloc.start()
    try:
        for i in range(10_000):
            tl.record("sent", id=i, detail=f"d{i}")
        full = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            tl.record("sent", id=i, detail=f"d{i}")
        grown = tracemalloc.get_traced_memory()[0] - full
    finally:
        tracemalloc.stop()
    assert len(tl) == 1_000 and tl.dropped_events == 59_000
    assert grown < 2_000  # overwritten details are freed; nothing accumulates


def test_reader_thread_sees_consistent_snapshots() -> None:
    """One writer, one reader: every frame is a contiguous, self-consistent window."""
    maxlen, total = 1_000, 100_000
    tl = Timeline(maxlen=maxlen, clock=ticking(0.0, 1.0))
    done = threading.Event()
    problems: list[str] = []
    frames = 0

    def write() -> None:
        try:
            for i in range(total):
                tl.record("sent" if i % 2 else "acked", id=i, size=i, latency_ms=float(i))
        finally:
            done.set()

    def read() -> None:
        nonlocal frames
        while not done.is_set() or frames == 0:
            for df in (tl.events(), tl.messages(), tl.events(last=10)):
                frames += 1
                ids = df["id"].to_numpy(dtype=np.int64)
                if len(df) > maxlen:
                    problems.append(f"len {len(df)} > maxlen")
                seconds = df["time"].astype("int64") // 10**6 if len(df) else ids
                if not (
                    np.array_equal(df["size"].to_numpy(), ids)
                    and np.array_equal(df["latency_ms"].to_numpy(), ids.astype(float))
                    and np.array_equal(np.asarray(seconds), ids)
                    and (np.diff(ids) > 0).all()
                ):
                    problems.append("columns out of step")

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not problems, problems[:5]
    assert frames > 0
    assert len(tl) == maxlen and tl.dropped_events == total - maxlen
    assert tl.events()["id"].tolist() == list(range(total - maxlen, total))


def test_concurrent_writers_lose_nothing() -> None:
    tl = Timeline(maxlen=5_000)
    per_thread, n_threads = 5_000, 4

    def write(k: int) -> None:
        for i in range(per_thread):
            tl.record("sent", id=k * per_thread + i, peer=f"w{k}", state=f"s{i % 7}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert tl.version == per_thread * n_threads
    assert len(tl) == 5_000
    assert tl.dropped_events == per_thread * n_threads - 5_000
    df = tl.events()
    # each writer's events stay in its own order, with its own peer label
    for k in range(n_threads):
        mine = df[df["peer"] == f"w{k}"]["id"].to_numpy(dtype=np.int64)
        assert (np.diff(mine) > 0).all()
        assert ((mine // per_thread) == k).all()
