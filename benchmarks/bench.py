"""``python benchmarks/bench.py``: wsnb against the stack's limit and against Socket.IO.

Run from a checkout (``python benchmarks/bench.py``, ``python -m benchmarks.bench``
or ``wsnb bench``, which runs this file when it finds it). It uses only wsnb's
public API. Every server runs in its own process on loopback (this file with
``--serve KIND``, spoken to over stdin/stdout); the clients run here, on one
asyncio loop. Each row is the median of ``--runs`` alternating runs (the
variants of a row take turns inside every run) with the min–max, and each
ratio is computed inside one run, then summarised the same way.

Rows (``--only 1,3`` picks some):

1. acked throughput of a full `wsnb.Client` (outbox, resend state, timeline on;
   ``send`` without awaiting receipts, the outbox bounds the window, then
   ``drain``) vs a raw ``websockets`` pipelined echo of the same JSON text;
2. the same wsnb figure vs python-socketio ``emit`` with an ack callback
   (AsyncClient/AsyncServer on aiohttp, websocket transport, 1000 acks
   outstanding);
3. one-at-a-time ack latency p50/p99 vs a raw ``websockets`` ping-pong;
4. through a `wsnb.FaultProxy`: cut → READY again (resumed), blackhole →
   detection (client leaves OPEN), against ``2 × heartbeat + grace``;
5. `wsnb.Timeline`: events/s, bytes/event, ``messages()`` on 1 M events
   (``benchmarks/bench_timeline.py``);
6. a fleet of 1 000 clients on this loop: time to all READY, memory per
   client, reconnect storm after ``server.restart()`` with and without jitter;
7. the latency of a trivial cell in a real kernel during a 10 000 msg/s flood
   (server, client and flood on wsnb's loop thread inside the kernel);
8. 10 MB messages: acked MB/s of a `wsnb.Client` vs raw ``websockets`` sending
   the same text to a server that answers each with a 2-byte text;
9. one 20 MB send: the longest stall of a 1 ms ticker task on the sending
   client's loop, with the server (heartbeat 200 ms) in its own process, and
   the reconnects it caused (a false dead link would show as one).

Targets come from issues 5 and 10; PASS/MISS is informational and the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a script from a checkout: import its wsnb
    sys.path.insert(0, str(HERE.parent))

from wsnb._format import fmt_bytes, percentile  # noqa: E402  (after the path fix)

ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
SIZES = (100, 10_000)
BIG = 10_000_000  # row 8
STALL = 20_000_000  # row 9


# ----- helpers -----------------------------------------------------------------


def make_payload(size: int) -> dict[str, Any]:
    """A JSON object of sensor-like records whose compact form is exactly `size` bytes.

    Structured and not trivially compressible (random names and numbers,
    padded with random letters), so parsing and serializing cost what real
    messages cost, unlike one long string of ``"x"``.
    """
    rng = random.Random(size)
    obj: dict[str, Any] = {"kind": "bench", "seq": 0, "items": [], "pad": ""}

    def length() -> int:
        return len(json.dumps(obj, separators=(",", ":")))

    while True:
        item = {"id": len(obj["items"]), "name": f"sensor-{rng.randrange(10**6)}",
                "value": round(rng.uniform(-1000, 1000), 6), "ok": rng.random() < 0.5}
        obj["items"].append(item)
        if length() > size:
            obj["items"].pop()
            break
    obj["pad"] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(size - length()))
    return obj


def make_big_payload(size: int) -> dict[str, Any]:
    """`make_payload` for megabytes: the same records, built in linear time."""
    rng = random.Random(size)
    base = len(json.dumps({"kind": "bench", "seq": 0, "items": [], "pad": ""},
                          separators=(",", ":")))
    items: list[dict[str, Any]] = []
    length = base
    while True:
        item = {"id": len(items), "name": f"sensor-{rng.randrange(10**6)}",
                "value": round(rng.uniform(-1000, 1000), 6), "ok": rng.random() < 0.5}
        grow = len(json.dumps(item, separators=(",", ":"))) + (1 if items else 0)
        if length + grow > size:
            break
        items.append(item)
        length += grow
    letters = "abcdefghijklmnopqrstuvwxyz"
    pad = "".join(rng.choice(letters) for _ in range(size - length))
    return {"kind": "bench", "seq": 0, "items": items, "pad": pad}


def payload_text(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def size_label(size: int) -> str:
    return f"{size} B" if size < 1000 else f"{size // 1000} KB"


def peak_in_window(times: Iterable[float], window: float = 0.1) -> int:
    """The most events inside any `window`-second interval (sliding)."""
    ts = sorted(times)
    best = start = 0
    for end, t in enumerate(ts):
        while t - ts[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class Series:
    """Values of one measurement across runs: shown as ``median (min–max)``."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def show(self, fmt: Callable[[float], str]) -> str:
        if not self.values:
            return "–"
        if len(self.values) == 1:
            return fmt(self.values[0])
        return f"{fmt(self.median)} ({fmt(min(self.values))}–{fmt(max(self.values))})"


def f_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def f_us(x: float) -> str:
    return f"{x * 1e6:,.0f} µs"


def f_ms(x: float) -> str:
    return f"{x * 1e3:,.0f} ms" if x >= 0.01 else f"{x * 1e3:.1f} ms"


def f_s(x: float) -> str:
    return f"{x:.2f} s"


def f_mbs(x: float) -> str:
    return f"{x:,.1f} MB/s"


def f_ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def f_bytes(x: float) -> str:
    return fmt_bytes(x, exact=False)


def f_int(x: float) -> str:
    return f"{x:,.0f}"


@dataclass
class Line:
    """One line of the output table."""

    row: int
    what: str
    wsnb: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # PASS / MISS / info / error


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def render(lines: list[Line]) -> str:
    head = ("#", "measurement", "wsnb", "reference", "ratio", "target", "result")
    rows = [head] + [(str(li.row), li.what, li.wsnb, li.reference, li.ratio, li.target,
                      li.verdict) for li in lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(r) for r in rows[1:]]
    return "\n".join(out)


# ----- server processes ---------------------------------------------------------


class ServerProc:
    """A benchmark server in its own process, driven by JSON lines on stdin/stdout."""

    def __init__(self, kind: str, **opts: Any) -> None:
        self.kind = kind
        self.opts = opts
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.pid = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ServerProc:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "bench.py"), "--serve", self.kind,
            "--serve-opts", json.dumps(self.opts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._log,
            limit=64 * 1024 * 1024,
        )
        reply = await self._read(60)
        self.port = reply["port"]
        self.pid = reply["pid"]
        return self

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            self._log.seek(0)
            tail = self._log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{self.kind} server process died:\n{tail}")
        return json.loads(line)

    async def command(self, cmd: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def stop(self) -> None:
        try:
            if self.proc is None or self.proc.returncode is not None:
                return
            with contextlib.suppress(Exception):
                await self.command("quit", timeout=5)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        finally:
            self._log.close()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process used so far."""
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    async def __aenter__(self) -> ServerProc:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(kind: str, opts: dict[str, Any]) -> None:
    """Body of a server process: listen, print the port, obey commands on stdin."""
    import logging

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    loop = asyncio.get_running_loop()
    closer: Callable[[], Awaitable[None]]
    restart: Callable[[], Awaitable[None]] | None = None
    extra: Callable[[], dict[str, Any]] = dict

    def ready_times(since: float) -> list[float]:
        return []

    if kind == "raw":
        from websockets.asyncio.server import serve

        async def echo(ws: Any) -> None:
            # "/ack": answer each message with a 2-byte text, the raw analogue of an ack
            ack = ws.request is not None and ws.request.path == "/ack"
            with contextlib.suppress(Exception):
                async for message in ws:
                    await ws.send("ok" if ack else message)

        raw_server = await serve(echo, "127.0.0.1", 0, compression=None, max_size=None,
                                 ping_interval=None)
        port = raw_server.sockets[0].getsockname()[1]

        async def closer() -> None:
            raw_server.close()
            await raw_server.wait_closed()

    elif kind == "wsnb":
        import wsnb

        server = wsnb.Server(
            "127.0.0.1", 0, loop="current", heartbeat_ms=opts.get("heartbeat_ms", 15_000),
            keep_delivered=0, max_sessions_per_token=1_000_000,
            session_ttl=opts.get("session_ttl", 300.0),
            timeline=wsnb.Timeline(maxlen=opts.get("timeline", 100_000)),
        )
        await server.start()
        port = server.port
        closer = server.close

        async def restart() -> None:
            await server.restart(keep_sessions=True)

        def extra() -> dict[str, Any]:
            return {"sessions": len(server.sessions), "connections": len(server.connections)}

        def ready_times(since: float) -> list[float]:
            """Wall times of sessions becoming READY on the server (its public timeline)."""
            st = server.timeline.states()
            st = st[st["state"] == "READY"]
            return [t for t in (ts.timestamp() for ts in st["time"]) if t >= since]

    elif kind == "sio":
        import socketio
        from aiohttp import web

        sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

        @sio.on("msg")
        async def on_msg(sid: str, data: Any) -> None:
            return None  # an empty ack, like wsnb's

        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        closer = runner.cleanup
    else:
        raise SystemExit(f"unknown server kind {kind!r}")

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"port": port, "pid": os.getpid()})
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        name = cmd.get("cmd")
        if name == "quit":
            break
        if name == "restart" and restart is not None:
            t0 = time.time()
            await restart()
            reply({"t0": t0, "t1": time.time()})
        elif name == "ready":
            reply({"ready": ready_times(cmd.get("since", 0.0))})
        elif name == "stats":
            reply(extra())
        else:
            reply({"error": f"unknown command {name!r}"})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closer(), 5)
    reply({"bye": True})


# ----- measurements --------------------------------------------------------------


async def raw_echo_rate(url: str, text: str, n: int) -> float:
    """Raw websockets: send `n` frames back to back while a reader counts `n` echoes.

    With ``url`` ending in ``/ack`` the server answers each frame with ``"ok"``.
    """
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        async def reader() -> None:
            recv = ws.recv
            for _ in range(n):
                await recv()

        t0 = time.perf_counter()
        task = asyncio.ensure_future(reader())
        send = ws.send
        for _ in range(n):
            await send(text)
        await task
        return n / (time.perf_counter() - t0)


def new_client(url: str, **kwargs: Any) -> Any:
    import wsnb

    kwargs.setdefault("loop", "current")
    kwargs.setdefault("name", "bench")
    return wsnb.Client(url, **kwargs)


async def wsnb_acked_rate(url: str, payload: Any, n: int, **kwargs: Any) -> float:
    """A full wsnb client: `send` without awaiting receipts (the outbox bounds the window)."""
    client = new_client(url, **kwargs)
    await client.connect(timeout=30)
    try:
        t0 = time.perf_counter()
        send = client.send
        for _ in range(n):
            await send(payload)
        await client.drain(timeout=300)
        return n / (time.perf_counter() - t0)
    finally:
        await client.close()


async def sio_acked_rate(url: str, payload: Any, n: int, window: int = 1000) -> float:
    """python-socketio emit with an ack callback, at most `window` acks outstanding."""
    import socketio

    sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
    await sio.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        room = asyncio.Semaphore(window)
        done = asyncio.Event()
        acked = 0

        def on_ack(*_: Any) -> None:
            nonlocal acked
            acked += 1
            room.release()
            if acked == n:
                done.set()

        t0 = time.perf_counter()
        for _ in range(n):
            await room.acquire()
            await sio.emit("msg", payload, callback=on_ack)
        await asyncio.wait_for(done.wait(), 300)
        return n / (time.perf_counter() - t0)
    finally:
        await sio.disconnect()


async def raw_pingpong(url: str, text: str, n: int) -> list[float]:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        for _ in range(20):
            await ws.send(text)
            await ws.recv()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await ws.send(text)
            await ws.recv()
            out.append(time.perf_counter() - t0)
        return out


async def wsnb_one_at_a_time(client: Any, payload: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        receipt = await client.send(payload)
        await receipt
        out.append(time.perf_counter() - t0)
    return out


async def ticker(gaps: list[float], stop: asyncio.Event, every: float = 0.001) -> None:
    """Sleep `every` seconds in a loop until `stop`, appending each measured gap."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(every)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


# ----- the benchmark --------------------------------------------------------------


@dataclass
class Counts:
    """Message counts per measurement; `--quick` and `--scale` shrink them."""

    raw: dict[int, int]
    wsnb: dict[int, int]
    sio: dict[int, int]
    latency: int
    faults: int
    timeline: int
    fleet: int
    cells: int
    flood_rate: int
    big: int = 10
    big_size: int = BIG
    stall_size: int = STALL

    @classmethod
    def make(cls, quick: bool, scale: float) -> Counts:
        def s(x: int, lo: int = 10) -> int:
            return max(lo, int(x * scale))

        if quick:
            return cls(raw={100: s(3000), 10_000: s(1000)}, wsnb={100: s(1500), 10_000: s(500)},
                       sio={100: s(500), 10_000: s(200)}, latency=s(300), faults=1,
                       timeline=s(100_000, 1000), fleet=s(100, 5), cells=s(10, 3),
                       flood_rate=10_000, big=s(3, 1),
                       big_size=s(BIG // 10, 200_000), stall_size=s(STALL // 10, 300_000))
        return cls(raw={100: s(60_000), 10_000: s(20_000)},
                   wsnb={100: s(30_000), 10_000: s(8_000)},
                   sio={100: s(10_000), 10_000: s(3_000)}, latency=s(3000), faults=1,
                   timeline=s(1_000_000, 1000), fleet=s(1000, 5), cells=s(30, 3),
                   flood_rate=10_000, big=s(10, 2))


class Bench:
    def __init__(self, rows: list[int], runs: int, counts: Counts, bar: Any) -> None:
        self.rows = rows
        self.runs = runs
        self.counts = counts
        self.bar = bar
        self.lines: list[Line] = []
        self.notes: list[str] = []
        self.acked_rate_100: float | None = None  # row 1/2, for row 5's "keeps up" ratio
        self._open_step = False

    def step(self, what: str) -> None:
        """Start the next step (counts the previous one as done)."""
        if self._open_step:
            self.bar.update(1)
        self._open_step = True
        self.bar.set_description(what[:48])

    def finish(self) -> None:
        if self._open_step:
            self.bar.update(1)
            self._open_step = False

    @staticmethod
    def planned_steps(rows: list[int], runs: int) -> int:
        n = 0
        thr = [r for r in rows if r in (1, 2)]
        if thr:
            n += len(SIZES) * runs * (1 + len(thr))
        if 3 in rows:
            n += runs * 2
        if 4 in rows:
            n += runs * 2
        if 5 in rows:
            n += runs
        if 6 in rows:
            n += runs * 5
        if 7 in rows:
            n += 1 + runs * 2
        if 8 in rows:
            n += runs * 5
        if 9 in rows:
            n += runs
        return n

    async def run(self) -> None:
        if 1 in self.rows or 2 in self.rows:
            await self.guard((1 if 1 in self.rows else 2), self.throughput)
        if 3 in self.rows:
            await self.guard(3, self.latency)
        if 4 in self.rows:
            await self.guard(4, self.faults)
        if 5 in self.rows:
            await self.guard(5, self.timeline)
        if 6 in self.rows:
            await self.guard(6, self.fleet)
        if 7 in self.rows:
            await self.guard(7, self.notebook)
        if 8 in self.rows:
            await self.guard(8, self.big_messages)
        if 9 in self.rows:
            await self.guard(9, self.stall)
        self.finish()

    async def guard(self, row: int, fn: Callable[[], Awaitable[None]]) -> None:
        await guard(self.lines, row, fn)

    # ----- rows 1 and 2 ------------------------------------------------------------

    async def throughput(self) -> None:
        want_raw, want_sio = 1 in self.rows, 2 in self.rows
        c = self.counts
        servers = {"wsnb": ServerProc("wsnb")}
        if want_raw:
            servers["raw"] = ServerProc("raw")
        if want_sio:
            servers["sio"] = ServerProc("sio")
        await asyncio.gather(*(s.start() for s in servers.values()))
        self.notes.append(
            "rows 1-2: payload = JSON records (ids, names, floats, bools) padded to the size; "
            "raw echo sends the pre-serialized text, wsnb and socket.io serialize each send; "
            "wsnb window = the default outbox (10,000 messages / 64 MiB), socket.io window = "
            "1,000 acks; CPU lines are process CPU time per message (robust to machine noise)")
        try:
            for size in SIZES:
                payload = make_payload(size)
                text = payload_text(payload)
                rates = {k: Series() for k in servers}
                cpu = {k: Series() for k in servers}  # client CPU seconds per message
                cpu_srv = {k: Series() for k in servers}  # server CPU seconds per message
                vs_raw, vs_sio = Series(), Series()
                # warm-up, not counted: imports, first connections, JIT-free caches
                await wsnb_acked_rate(servers["wsnb"].url, payload, 200)
                if want_raw:
                    await raw_echo_rate(servers["raw"].url, text, 200)
                if want_sio:
                    await sio_acked_rate(servers["sio"].http_url, payload, 100)
                for run in range(self.runs):
                    order = list(servers)
                    if run % 2:
                        order.reverse()  # alternate who goes first
                    got: dict[str, float] = {}
                    for kind in order:
                        self.step(f"{kind} {size_label(size)} run {run + 1}")
                        gc.collect()
                        srv = servers[kind]
                        cpu0, srv0 = time.process_time(), srv.cpu_seconds()
                        if kind == "raw":
                            n = c.raw[size]
                            got[kind] = await raw_echo_rate(srv.url, text, n)
                        elif kind == "wsnb":
                            n = c.wsnb[size]
                            got[kind] = await wsnb_acked_rate(srv.url, payload, n)
                        else:
                            n = c.sio[size]
                            got[kind] = await sio_acked_rate(srv.http_url, payload, n)
                        rates[kind].add(got[kind])
                        cpu[kind].add((time.process_time() - cpu0) / n)
                        cpu_srv[kind].add((srv.cpu_seconds() - srv0) / n)
                    if want_raw:
                        vs_raw.add(got["wsnb"] / got["raw"])
                    if want_sio:
                        vs_sio.add(got["wsnb"] / got["sio"])
                if size == 100:
                    self.acked_rate_100 = rates["wsnb"].median
                label = size_label(size)
                if want_raw:
                    need = 0.85 if size == 100 else 0.45
                    self.lines.append(Line(
                        1, f"acked msg/s vs raw echo, {label}", rates["wsnb"].show(f_rate),
                        "echo " + rates["raw"].show(f_rate), vs_raw.show(f_ratio),
                        f"≥ {need}×", verdict(vs_raw.median >= need)))
                if want_sio:
                    self.lines.append(Line(
                        2, f"acked msg/s vs socket.io, {label}", rates["wsnb"].show(f_rate),
                        "sio " + rates["sio"].show(f_rate), vs_sio.show(f_ratio), "≥ 5×",
                        verdict(vs_sio.median >= 5)))
                others = " · ".join(
                    f"{k} {f_us(cpu[k].median)} + {f_us(cpu_srv[k].median)}"
                    for k in servers if k != "wsnb")
                self.lines.append(Line(
                    1 if want_raw else 2, f"CPU per msg client + server, {label}",
                    f"{f_us(cpu['wsnb'].median)} + {f_us(cpu_srv['wsnb'].median)}", others,
                    "", "", "info"))
        finally:
            await asyncio.gather(*(s.stop() for s in servers.values()))

    # ----- row 3 -------------------------------------------------------------------

    async def latency(self) -> None:
        n = self.counts.latency
        payload = make_payload(100)
        text = payload_text(payload)
        async with ServerProc("wsnb") as ws_srv, ServerProc("raw") as raw_srv:
            client = new_client(ws_srv.url)
            await client.connect(timeout=30)
            try:
                await wsnb_one_at_a_time(client, payload, 50)  # warm-up
                p50 = {"wsnb": Series(), "raw": Series()}
                p99 = {"wsnb": Series(), "raw": Series()}
                r50, r99 = Series(), Series()
                for run in range(self.runs):
                    got: dict[str, list[float]] = {}
                    for kind in (("raw", "wsnb") if run % 2 == 0 else ("wsnb", "raw")):
                        self.step(f"latency {kind} run {run + 1}")
                        gc.collect()
                        if kind == "raw":
                            got[kind] = await raw_pingpong(raw_srv.url, text, n)
                        else:
                            got[kind] = await wsnb_one_at_a_time(client, payload, n)
                        p50[kind].add(percentile(got[kind], 50))
                        p99[kind].add(percentile(got[kind], 99))
                    r50.add(percentile(got["wsnb"], 50) / percentile(got["raw"], 50))
                    r99.add(percentile(got["wsnb"], 99) / percentile(got["raw"], 99))
            finally:
                await client.close()
        self.lines.append(Line(3, "one-at-a-time ack p50 vs ping-pong", p50["wsnb"].show(f_us),
                               "raw " + p50["raw"].show(f_us), r50.show(f_ratio), "≤ 1.3×",
                               verdict(r50.median <= 1.3)))
        self.lines.append(Line(3, "one-at-a-time ack p99 vs ping-pong", p99["wsnb"].show(f_us),
                               "raw " + p99["raw"].show(f_us), r99.show(f_ratio), "",
                               "info"))

    # ----- row 4 -------------------------------------------------------------------

    async def faults(self) -> None:
        import wsnb
        from wsnb.protocol.heartbeat import dead_link_bound

        heartbeat_ms = 200
        backoff = wsnb.Backoff(base=0.1, cap=2.0)
        bound = dead_link_bound(heartbeat_ms)
        payload = make_payload(100)
        cut, cut_bound, cut_ratio = Series(), Series(), Series()
        detect, left_ready = Series(), Series()
        async with ServerProc("wsnb", heartbeat_ms=heartbeat_ms) as srv:
            proxy = wsnb.FaultProxy(srv.url, loop="current")
            await proxy.start()
            try:
                for run in range(self.runs):
                    # a fresh client per run: its first backoff delay is attempt 0's
                    client = new_client(proxy.url, backoff=backoff)
                    await client.connect(timeout=30)
                    try:
                        rtts = await wsnb_one_at_a_time(client, payload, 30)
                        rtt = percentile(rtts, 50)
                        await asyncio.sleep(0.3)
                        self.step(f"cut → READY run {run + 1}")
                        reconnects = client.reconnects
                        t0 = time.perf_counter()
                        proxy.cut()
                        await client.wait_until(
                            lambda c, r=reconnects: c.ready and c.reconnects > r, timeout=10)
                        took = time.perf_counter() - t0
                        if not client.resumed:
                            self.notes.append(f"row 4 run {run + 1}: session not resumed")
                        limit = backoff.upper(0) + 3 * rtt
                        cut.add(took)
                        cut_bound.add(limit)
                        cut_ratio.add(took / limit)
                        await asyncio.sleep(0.5)
                        self.step(f"blackhole → detected run {run + 1}")
                        t0 = time.perf_counter()
                        proxy.blackhole()
                        await client.wait_until(lambda c: not c.ready, timeout=10)
                        left_ready.add(time.perf_counter() - t0)
                        await client.wait_until(
                            lambda c: c.ready_state != wsnb.ReadyState.OPEN, timeout=10)
                        detect.add(time.perf_counter() - t0)
                        proxy.restore()
                    finally:
                        proxy.restore()
                        await client.close()
            finally:
                await proxy.close()
        self.lines.append(Line(
            4, "proxy cut → READY again (resumed)", cut.show(f_ms),
            "bound " + cut_bound.show(f_ms), cut_ratio.show(f_ratio),
            "≤ backoff + 3 RTT", verdict(cut_ratio.median <= 1)))
        self.lines.append(Line(
            4, f"blackhole → left OPEN (hb {heartbeat_ms} ms)", detect.show(f_ms),
            f"bound {bound * 1000:.0f} ms", Series([d / bound for d in detect.values])
            .show(f_ratio), "≤ 2×hb + grace", verdict(max(detect.values) <= bound)))
        self.lines.append(Line(4, "blackhole → left READY", left_ready.show(f_ms), "", "", "",
                               "info"))

    # ----- row 5 -------------------------------------------------------------------

    async def timeline(self) -> None:
        bt = load_bench_timeline()
        from wsnb.timeline import Timeline

        n = self.counts.timeline
        rates, ring, per_event, msgs = Series(), Series(), Series(), Series()
        for run in range(self.runs):
            self.step(f"timeline {n:,} events run {run + 1}")
            tl = Timeline(maxlen=n)
            rates.add(bt.rate(tl, n))
            ring.add(bt.rate(tl, n))
            msgs.add(bt.best(tl.messages, repeat=1))
            del tl
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                tl = Timeline(maxlen=n)
                bt.fill(tl, n)
                gc.collect()
                per_event.add((tracemalloc.get_traced_memory()[0] - base) / n)
            finally:
                tracemalloc.stop()
            del tl
            gc.collect()
            await asyncio.sleep(0)
        if self.acked_rate_100:
            need = 3 * self.acked_rate_100
            ratio = Series([r / need for r in rates.values])
            self.lines.append(Line(5, "timeline record() events/s", rates.show(f_rate),
                                   f"3 × acked 100 B = {need:,.0f}/s", ratio.show(f_ratio),
                                   "≥ 1×", verdict(ratio.median >= 1)))
        else:
            self.lines.append(Line(5, "timeline record() events/s", rates.show(f_rate),
                                   "(row 1 not run: no acked rate)", "", "≥ 3 × acked rate",
                                   "n/a"))
        self.lines.append(Line(5, "timeline record(), ring full", ring.show(f_rate), "", "", "",
                               "info"))
        self.lines.append(Line(5, "timeline bytes per event", per_event.show(f_bytes), "", "",
                               "≤ 100 B", verdict(per_event.median <= 100)))
        self.lines.append(Line(5, f"timeline messages() on {n:,} events", msgs.show(f_s), "",
                               "", "≤ 0.5 s", verdict(msgs.median <= 0.5)))

    # ----- row 6 -------------------------------------------------------------------

    async def fleet(self) -> None:
        import wsnb

        n = self.counts.fleet
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2 * n + 256
        if soft < need:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        soft_now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.notes.append(f"row 6: ulimit -n soft {soft} (raised to {soft_now}), hard {hard}"
                          if soft_now != soft else f"row 6: ulimit -n {soft} (hard {hard})")
        self.notes.append(
            "row 6: 'backoff schedule' = when each client's backoff told it to reconnect (the "
            "attempts the jitter shapes); 'clients'/'server' = when a 2-core box got to run "
            "them: 1,000 handshakes take about a second of CPU on each side, which smears "
            "both distributions")
        # (backoff base, jitter): the protocol's default base 0.5 s and 1 s. Full jitter
        # spreads the first retry over uniform(0, base), so a base no wider than the 100 ms
        # bucket (e.g. 0.1 s) cannot reach 1/5 of the no-jitter peak in principle.
        variants = [(0.5, False), (0.5, True), (1.0, False), (1.0, True)]
        ready_t, traced_per = Series(), Series()
        peaks = {v: Series() for v in variants}
        client_peaks = {v: Series() for v in variants}
        spans = {v: Series() for v in variants}
        ratios = {base: Series() for base in (0.5, 1.0)}
        client_ratios = {base: Series() for base in (0.5, 1.0)}
        sched_peaks = {v: Series() for v in variants}
        sched_ratios = {base: Series() for base in (0.5, 1.0)}

        async def connect_all(backoff: Any) -> tuple[list[Any], float]:
            clients = [new_client(srv.url, backoff=backoff, name=f"fleet{i}") for i in range(n)]
            t0 = time.perf_counter()
            await asyncio.gather(*(cl.connect(timeout=60) for cl in clients))
            return clients, time.perf_counter() - t0

        async def close_all(clients: list[Any]) -> None:
            await asyncio.gather(*(cl.close() for cl in clients), return_exceptions=True)

        async def storm(variant: tuple[float, bool]) -> tuple[int, int, int]:
            base, jitter = variant
            clients, took = await connect_all(wsnb.Backoff(base=base, cap=2.0, jitter=jitter))
            ready_t.add(took)
            await asyncio.sleep(0.5)
            wall0 = time.time()
            reconnects = [cl.reconnects for cl in clients]
            restarted = await srv.command("restart")
            await asyncio.gather(*(
                cl.wait_until(lambda c, r=r: c.ready and c.reconnects > r, timeout=60)
                for cl, r in zip(clients, reconnects, strict=True)))
            opens = (await srv.command("ready", since=restarted["t0"]))["ready"]
            spans[variant].add(max(opens) - restarted["t0"] if opens else math.nan)
            at_server = peak_in_window(opens)
            attempts = []
            for cl in clients:  # client side: every CONNECTING after the restart
                st = cl.timeline.states()
                st = st[st["state"] == "CONNECTING"]
                attempts += [t.timestamp() for t in st["time"] if t.timestamp() >= wall0]
            at_clients = peak_in_window(attempts)
            scheduled = []  # when each client's backoff told it to try: "reconnect in X s"
            for cl in clients:
                st = cl.timeline.states()
                st = st[(st["state"] == "CLOSED") & st["detail"].str.startswith("reconnect in")]
                scheduled += [t.timestamp() + float(d.split()[2]) for t, d in
                              zip(st["time"], st["detail"], strict=True)
                              if t.timestamp() >= wall0]
            at_schedule = peak_in_window(scheduled)
            peaks[variant].add(at_server)
            client_peaks[variant].add(at_clients)
            sched_peaks[variant].add(at_schedule)
            await close_all(clients)
            return at_server, at_clients, at_schedule

        async with ServerProc("wsnb", session_ttl=5.0, timeline=1_000_000) as srv:
            for run in range(self.runs):
                got: dict[tuple[float, bool], tuple[int, int, int]] = {}
                for variant in (variants if run % 2 == 0 else variants[::-1]):
                    base, jitter = variant
                    self.step(f"fleet {n} base {base} jitter={jitter} run {run + 1}")
                    gc.collect()
                    got[variant] = await storm(variant)
                for base in (0.5, 1.0):
                    plain, jittered = got[(base, False)], got[(base, True)]
                    if plain[0]:
                        ratios[base].add(jittered[0] / plain[0])
                    if plain[1]:
                        client_ratios[base].add(jittered[1] / plain[1])
                    if plain[2]:
                        sched_ratios[base].add(jittered[2] / plain[2])
                # memory: Python heap traced while a separate fleet connects
                self.step(f"fleet {n} tracemalloc run {run + 1}")
                gc.collect()
                tracemalloc.start()
                try:
                    base_mem = tracemalloc.get_traced_memory()[0]
                    clients, _ = await connect_all(wsnb.Backoff(base=0.1, cap=2.0))
                    gc.collect()
                    traced_per.add((tracemalloc.get_traced_memory()[0] - base_mem) / n)
                finally:
                    tracemalloc.stop()
                await close_all(clients)
                del clients
                await asyncio.sleep(0.2)
        self.lines.append(Line(6, f"{n:,} clients on one loop: all READY", ready_t.show(f_s),
                               "", "", "≤ 5 s", verdict(ready_t.median <= 5)))
        self.lines.append(Line(6, "memory per client (tracemalloc)", traced_per.show(f_bytes),
                               "", "", "≤ 100 KiB", verdict(traced_per.median <= 100 * 1024)))
        for base in (0.5, 1.0):
            plain, jittered = (base, False), (base, True)
            # Full jitter spreads attempt 0 over uniform(0, base): the best sliding 100 ms peak
            # is a bit over 0.1 s / base of the no-jitter one, so 1/5 needs base > 0.5 s.
            target = base >= 1.0
            self.lines.append(Line(
                6, f"restart storm, base {base:g} s: peak attempts/100 ms (backoff schedule)",
                "jitter " + sched_peaks[jittered].show(f_int),
                "no jitter " + sched_peaks[plain].show(f_int), sched_ratios[base].show(f_ratio),
                "≤ 0.2×" if target else "", verdict(sched_ratios[base].median <= 0.2)
                if target else "info"))
            self.lines.append(Line(
                6, f"restart storm, base {base:g} s: peak READY/100 ms (server)",
                "jitter " + peaks[jittered].show(f_int),
                "no jitter " + peaks[plain].show(f_int), ratios[base].show(f_ratio),
                "", "info"))
            self.lines.append(Line(
                6, f"restart storm, base {base:g} s: peak attempts/100 ms (clients)",
                "jitter " + client_peaks[jittered].show(f_int),
                "no jitter " + client_peaks[plain].show(f_int),
                client_ratios[base].show(f_ratio), "", "info"))
            self.lines.append(Line(
                6, f"restart storm, base {base:g} s: restart → last READY",
                "jitter " + spans[jittered].show(f_s), "no jitter " + spans[plain].show(f_s),
                "", "", "info"))

    # ----- row 7 -------------------------------------------------------------------

    async def notebook(self) -> None:
        from jupyter_client.manager import start_new_async_kernel

        self.step("starting a kernel")
        km, kc = await start_new_async_kernel(kernel_name="python3",
                                              stderr=subprocess.DEVNULL)
        idle, flood, ratio, achieved = Series(), Series(), Series(), Series()
        flood_max = Series()
        try:
            setup = NOTEBOOK_SETUP.replace("RATE", str(self.counts.flood_rate))
            reply = await kc.execute_interactive(setup, timeout=120, output_hook=_quiet)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"kernel setup failed: {reply['content'].get('evalue')}")
            panels = await kernel_eval(kc, "_bench_panels")
            if panels != "live":
                self.notes.append(f"row 7: panels not live ({panels}); flood without panels")
            for _ in range(3):  # warm-up
                await time_cell(kc, "1+1")
            for run in range(self.runs):
                got = {}
                for mode in (("idle", "flood") if run % 2 == 0 else ("flood", "idle")):
                    self.step(f"cell latency {mode} run {run + 1}")
                    await kernel_eval(kc, "_bench_flood_start()" if mode == "flood"
                                      else "_bench_flood_stop()")
                    await asyncio.sleep(1.0)  # let the flood settle
                    times = [await time_cell(kc, "1+1") for _ in range(self.counts.cells)]
                    got[mode] = statistics.median(times)
                    if mode == "flood":
                        flood_max.add(max(times))
                        rate = await kernel_eval(kc, "_bench_flood_rate()")
                        achieved.add(float(rate))
                    await kernel_eval(kc, "_bench_flood_stop()")
                idle.add(got["idle"])
                flood.add(got["flood"])
                ratio.add(got["flood"] / got["idle"])
            await kc.execute_interactive("_bench_teardown()", timeout=30, output_hook=_quiet)
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        rate_note = f"flood achieved {achieved.show(f_rate)} of {self.counts.flood_rate:,}/s"
        panels_note = "panels live" if panels == "live" else "no panels"
        self.lines.append(Line(7, f"cell `1+1` during flood ({panels_note})", flood.show(f_ms),
                               "idle " + idle.show(f_ms), ratio.show(f_ratio), "≤ 100 ms",
                               verdict(flood.median <= 0.1)))
        self.lines.append(Line(7, "cell `1+1` during flood, worst", flood_max.show(f_ms),
                               rate_note, "", "", "info"))


    # ----- row 8 -------------------------------------------------------------------

    async def big_messages(self) -> None:
        n = self.counts.big
        size = self.counts.big_size
        mb = size / 1e6
        records = make_big_payload(size)
        letters = random.Random(size).choices("abcdefghijklmnopqrstuvwxyz", k=size - 2)
        blob = "".join(letters)  # one JSON string of `size` bytes serialized
        # (label, payload, client options, counts toward the target)
        variants = [
            ("records, default client", records, {}, True),
            ("records, compress_min=None", records, {"compress_min": None}, False),
            ("one string, default client", blob, {}, False),
        ]
        texts = {id(records): payload_text(records), id(blob): payload_text(blob)}
        rates = {v[0]: Series() for v in variants}
        raw_rates = {k: Series() for k in texts}
        ratios = {v[0]: Series() for v in variants}
        async with ServerProc("wsnb") as ws_srv, ServerProc("raw") as raw_srv:
            ack_url = raw_srv.url + "/ack"
            await wsnb_acked_rate(ws_srv.url, records, 1)  # warm-up
            await raw_echo_rate(ack_url, texts[id(records)], 1)
            for run in range(self.runs):
                got_raw: dict[int, float] = {}
                for key, text in (texts.items() if run % 2 == 0 else reversed(texts.items())):
                    self.step(f"raw {mb:g} MB run {run + 1}")
                    gc.collect()
                    got_raw[key] = await raw_echo_rate(ack_url, text, n) * mb
                    raw_rates[key].add(got_raw[key])
                for label, payload, options, _ in (variants if run % 2 == 0
                                                    else variants[::-1]):
                    self.step(f"wsnb {mb:g} MB {label[:20]} run {run + 1}")
                    gc.collect()
                    rate = await wsnb_acked_rate(ws_srv.url, payload, n, **options) * mb
                    rates[label].add(rate)
                    ratios[label].add(rate / got_raw[id(payload)])
        for label, payload, _, target in variants:
            self.lines.append(Line(
                8, f"acked MB/s vs raw send, {mb:g} MB msgs, {label}", rates[label].show(f_mbs),
                "raw " + raw_rates[id(payload)].show(f_mbs), ratios[label].show(f_ratio),
                "≥ 0.5×" if target else "", verdict(ratios[label].median >= 0.5)
                if target else "info"))
        self.notes.append(
            "row 8: raw = a websockets client sending the same serialized text, pipelined, to a "
            "websockets server that answers each message with 'ok'; records = the JSON records "
            "of rows 1-2 at 10 MB; one string = 10 MB of random letters; the default client "
            "compresses payloads over 64 KiB when that makes them smaller (zlib level 6)")

    # ----- row 9 -------------------------------------------------------------------

    async def stall(self) -> None:
        heartbeat_ms = 200
        size = self.counts.stall_size
        payload = make_big_payload(size)
        mb = size / 1e6
        worst, p99, took, reconnects = Series(), Series(), Series(), Series()
        async with ServerProc("wsnb", heartbeat_ms=heartbeat_ms) as srv:
            client = new_client(srv.url)
            await client.connect(timeout=30)
            try:
                await client.wait_until(lambda c: c.server_heartbeat_ms == heartbeat_ms,
                                        timeout=10)
                receipt = await client.send(make_big_payload(100_000))  # warm-up
                await receipt
                for run in range(self.runs):
                    self.step(f"stall during {mb:g} MB send run {run + 1}")
                    gc.collect()
                    before = client.reconnects
                    gaps: list[float] = []
                    stop = asyncio.Event()
                    tick = asyncio.ensure_future(ticker(gaps, stop))
                    await asyncio.sleep(0.05)  # the ticker is running
                    t0 = time.perf_counter()
                    receipt = await client.send(payload)
                    await receipt
                    took.add(time.perf_counter() - t0)
                    await asyncio.sleep(2 * heartbeat_ms / 1000)  # a late dead-link verdict
                    stop.set()
                    await tick
                    worst.add(max(gaps))
                    p99.add(percentile(gaps, 99))
                    reconnects.add(client.reconnects - before)
            finally:
                await client.close()
        self.lines.append(Line(
            9, f"loop stall during a {mb:g} MB send (1 ms ticker)", worst.show(f_ms),
            "p99 tick " + p99.show(f_ms), "", "≤ 50 ms", verdict(worst.median <= 0.05)))
        self.lines.append(Line(
            9, f"reconnects during the {mb:g} MB send (server hb {heartbeat_ms} ms)",
            reconnects.show(f_int), f"acked in {took.show(f_s)}", "", "= 0",
            verdict(max(reconnects.values) == 0)))


def _quiet(msg: dict[str, Any]) -> None:
    if msg["msg_type"] == "error":
        sys.stderr.write("\n".join(msg["content"].get("traceback", [])) + "\n")
    elif msg["msg_type"] == "stream" and msg["content"].get("name") == "stderr":
        sys.stderr.write(msg["content"].get("text", ""))


async def kernel_eval(kc: Any, expr: str) -> Any:
    """Evaluate `expr` in the kernel and return its repr, decoded with `ast.literal_eval`."""
    import ast

    reply = await kc.execute_interactive("", user_expressions={"v": expr}, timeout=60,
                                         output_hook=_quiet)
    value = reply["content"]["user_expressions"]["v"]
    if value.get("status") != "ok":
        raise RuntimeError(f"{expr}: {value.get('ename')}: {value.get('evalue')}")
    text = value["data"]["text/plain"]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


async def time_cell(kc: Any, code: str) -> float:
    """Wall time from sending execute_request to the kernel going idle again."""
    t0 = time.perf_counter()
    reply = await kc.execute_interactive(code, timeout=60, output_hook=_quiet)
    took = time.perf_counter() - t0
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content'].get('evalue')}")
    return took


NOTEBOOK_SETUP = r'''
import asyncio, time
import wsnb
from wsnb.loop import background_loop

_bench_server = wsnb.Server(keep_delivered=0)
await _bench_server.start()
_bench_client = wsnb.Client(_bench_server.url)
await _bench_client.connect()
_bench_loop = background_loop()
_bench_state = {"run": False, "sent": 0, "t0": 0.0, "t1": 0.0, "task": None}
_bench_payload = {"kind": "flood", "seq": 0, "data": "x" * 60}

async def _bench_flood(rate=RATE):
    st = _bench_state
    st["sent"], st["t0"] = 0, time.perf_counter()
    send = _bench_client.send
    while st["run"]:
        due = int((time.perf_counter() - st["t0"]) * rate)
        while st["sent"] < due:
            await send(_bench_payload)
            st["sent"] += 1
        await asyncio.sleep(0.005)
    st["t1"] = time.perf_counter()

def _bench_flood_start():
    _bench_state["run"] = True
    _bench_state["task"] = asyncio.run_coroutine_threadsafe(_bench_flood(), _bench_loop)
    return "started"

def _bench_flood_stop():
    if _bench_state["run"]:
        _bench_state["run"] = False
        _bench_state["task"].result(30)
    return "stopped"

def _bench_flood_rate():
    st = _bench_state
    end = st["t1"] if not st["run"] else time.perf_counter()
    return st["sent"] / max(1e-9, end - st["t0"])

_bench_panels = "not available: wsnb.Dashboard missing"
if hasattr(wsnb, "Dashboard"):
    try:
        from IPython.display import display
        _bench_dash = wsnb.Dashboard(_bench_client, server=_bench_server)
        display(_bench_dash)
        _bench_panels = "live"
    except Exception as _exc:
        _bench_panels = f"failed: {type(_exc).__name__}: {_exc}"

def _bench_teardown():
    _bench_flood_stop()
    if _bench_panels == "live":
        _bench_dash.close()
    asyncio.run_coroutine_threadsafe(_bench_client.close(), _bench_loop).result(10)
    asyncio.run_coroutine_threadsafe(_bench_server.close(), _bench_loop).result(10)
'''


def load_bench_timeline() -> Any:
    """Import benchmarks/bench_timeline.py from the source tree (its fill/rate/best)."""
    path = HERE / "bench_timeline.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: row 5 needs benchmarks/bench_timeline.py")
    spec = importlib.util.spec_from_file_location("bench_timeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----- command line ----------------------------------------------------------------


def machine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    pkgs = ", ".join(f"{p} {v(p)}" for p in ("wsnb", "websockets", "python-socketio",
                                              "aiohttp", "orjson", "pandas"))
    return (f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{pkgs}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Benchmark wsnb against raw websockets and python-socketio on loopback.")
    parser.add_argument("--quick", action="store_true",
                        help="far fewer messages: a smoke test, not a measurement")
    parser.add_argument("--only", default="", metavar="ROWS",
                        help="comma-separated rows to run, e.g. 1,3 (default: all 1-9)")
    parser.add_argument("--runs", type=int, default=3,
                        help="alternating runs per row (median, min–max); default 3")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every message/event/client count by this factor")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-opts", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    args.rows = parse_rows(parser, args.only, ROWS)
    return args


async def guard(lines: list[Line], row: int, fn: Callable[[], Awaitable[None]]) -> None:
    """Run one row; if it raises, print the traceback and add an ``error`` line instead."""
    try:
        await fn()
    except Exception as exc:  # one broken row must not hide the others
        import traceback

        traceback.print_exc(file=sys.stderr)
        lines.append(Line(row, "failed", f"{type(exc).__name__}: {exc}"[:120], verdict="error"))


def parse_rows(parser: argparse.ArgumentParser, only: str, known: tuple[int, ...]) -> list[int]:
    """``--only 1,3`` -> [1, 3] (empty: every row in `known`); a bad value is a usage error."""
    try:
        rows = sorted({int(x) for x in only.split(",") if x.strip()}) or list(known)
    except ValueError:
        parser.error(f"--only takes row numbers like 1,3, not {only!r}")
    bad = [r for r in rows if r not in known]
    if bad:
        parser.error(f"no such row: {bad} (rows are {known[0]}-{known[-1]})")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, json.loads(args.serve_opts)))
        return 0
    counts = Counts.make(args.quick, args.scale)
    total = Bench.planned_steps(args.rows, args.runs)
    from wsnb.progress import progress

    # tqdm if installed (the bench extra), on a terminal or in a notebook; else a quiet bar
    bar = progress(total, enabled=False if args.no_progress else None, file=sys.stderr,
                   unit="step", dynamic_ncols=True)
    bench = Bench(args.rows, args.runs, counts, bar)
    started = time.time()
    try:
        asyncio.run(bench.run())
    finally:
        bar.close()
    took = time.time() - started
    mode = "quick (smoke test, not a measurement)" if args.quick else "full"
    print(f"wsnb bench: {mode}, rows {','.join(map(str, args.rows))}, {args.runs} runs "
          f"(median (min–max); ratios computed within each run), {took:.0f} s")
    print(machine())
    print()
    print_report(bench.lines, bench.notes)
    return 0


def print_report(lines: list[Line], notes: list[str]) -> None:
    """The table, its notes, and the PASS/MISS count (benchmarks never fail the exit code)."""
    print(render(lines))
    for note in notes:
        print(f"note: {note}")
    misses = sum(li.verdict == "MISS" for li in lines)
    passes = sum(li.verdict == "PASS" for li in lines)
    print(f"\n{passes} PASS, {misses} MISS (informational; exit code 0)")


if __name__ == "__main__":
    sys.exit(main())
