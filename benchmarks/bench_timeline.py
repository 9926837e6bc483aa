"""Speed and memory of `wsnb.timeline.Timeline` on 1 M events.

Run: ``python benchmarks/bench_timeline.py [N]`` (default N = 1_000_000).
Prints record() throughput (while growing and once the ring is full), bytes
per retained event (tracemalloc), the size of an empty Timeline and the time
to build events()/messages()/acks()/states()/counts() frames.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsnb.timeline import Timeline  # noqa: E402


def fill(tl: Timeline, n: int) -> None:
    """Record ``n`` events in the shape a client logs: sent, written, acked per message."""
    record = tl.record
    for i in range(n // 3):
        record("sent", direction="out", id=i, size=128, peer="ws://127.0.0.1:8765")
        record("written", direction="out", id=i, size=128, peer="ws://127.0.0.1:8765")
        record("acked", direction="in", id=i, latency_ms=0.8, peer="ws://127.0.0.1:8765")
    for _ in range(n - 3 * (n // 3)):
        record("state", state="READY")


def rate(tl: Timeline, n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fill(tl, n)
    return n / (time.perf_counter() - t0)


def best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def frames(tl: Timeline) -> None:
    """Time each DataFrame view of a full timeline."""
    size = f"{len(tl):,}"
    for name in ("events", "messages", "acks", "states"):
        method = getattr(tl, name)
        rows = len(method())
        took = best(method) * 1000
        print(f"{name + '()':<12} on {size} events: {took:8.1f} ms ({rows:,} rows)")
    print(f"messages(last=100):         {best(lambda: tl.messages(last=100)) * 1000:8.1f} ms")
    print(f"events(last=100):           {best(lambda: tl.events(last=100)) * 1000:8.1f} ms")
    print(f"counts():                   {best(tl.counts) * 1000:8.1f} ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000

    minimal = Timeline(maxlen=n)
    t0 = time.perf_counter()
    for _ in range(n):
        minimal.record("sent")
    print(f"record('sent') only:        {n / (time.perf_counter() - t0):>12,.0f} events/s")
    del minimal

    tl = Timeline(maxlen=n)
    print(f"record() growing to maxlen: {rate(tl, n):>12,.0f} events/s")
    print(f"record() ring full (evict): {rate(tl, n):>12,.0f} events/s")
    print(f"  len={len(tl):,} dropped_events={tl.dropped_events:,} version={tl.version:,}")

    frames(tl)
    del tl
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    empties = [Timeline(maxlen=n) for _ in range(1_000)]
    each = (tracemalloc.get_traced_memory()[0] - base) / len(empties)
    print(f"empty Timeline:             {each:>8,.0f} bytes (mean of 1,000)")
    del empties
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    empty = Timeline(maxlen=n)
    fill(empty, n)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    print(f"{n:,} events retained:     {used / n:8.1f} bytes/event ({used / 2**20:.1f} MiB)")
    tracemalloc.stop()


if __name__ == "__main__":
    main()
