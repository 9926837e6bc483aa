"""``python benchmarks/bench_store.py``: the session stores side by side (memory, SQLite, Redis).

Run from a checkout. Same house style as ``benchmarks/bench.py`` (whose helpers
it imports): servers run in their own processes on loopback, the client runs
here on one asyncio loop, every row is the median of ``--runs`` runs with the
min–max, the variants of a row take turns inside every run (order reversed on
odd runs) and every ratio is computed inside one run. PASS/MISS is
informational; the exit code is 0.

Rows (``--only 1,3`` picks some):

1. acked throughput at 100 B: a full `wsnb.Client` sends N messages as fast as
   its outbox allows, then ``drain()``, against ``Server(store=URL,
   log_delivered=True)`` in its own process (this file with ``--serve URL``),
   for ``sqlite:///…`` (sync=full, and sync=normal as an extra row) and
   ``redis://`` (a ``redis-server`` started here on a free loopback port,
   ``--appendonly yes --appendfsync everysec``, and ``always`` as an extra
   row), against ``memory://`` without the delivered log (see `throughput`:
   ``memory://`` with ``log_delivered=True`` closes every session with 1012).
   Each store's ``batches``/``changes`` counters are read from the server
   process before and after each run: messages per commit shows group commit
   at work. CPU per message of the server process, this process and
   ``redis-server``. Target: SQLite and Redis ≥ 0.3× memory.
2. ``wsnb serve --store URL --workers 3``: a client connected and sending
   (1 000 msg/s); the worker holding its TCP connection (found with psutil) is
   sent SIGKILL; time from the kill to the client's next READY (resumed on
   another worker), split into detection, the backoff the client waited and
   the reconnect itself, from the client's timeline. A fresh client per kill with
   ``Backoff(base=0.1)``. Afterwards the store's delivered log is checked:
   every id once, none missing. SQLite, and Redis when available.
3. bytes stored per in-flight message: a server sends N messages of 100 B to a
   session whose client is away, and a ``Client(store=URL)`` that never reaches
   a server sends N, so all N stay un-acked in the store. SQLite: growth of the
   file (db + WAL after a TRUNCATE checkpoint) per message. Redis: ``MEMORY
   USAGE`` of the outbox hash, the ``used_memory`` delta and the AOF growth,
   per message.

Redis rows need ``redis-server`` on PATH and ``wsnb.store.redis`` importable;
otherwise they print the reason they were skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout: import its wsnb
    sys.path.insert(0, str(ROOT))


def _load_bench() -> Any:
    """``benchmarks/bench.py`` by path (``benchmarks/`` is not a package): its helpers."""
    name = "wsnb_benchmarks_bench"  # the name tests/test_bench_smoke.py uses too
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
Line, Series, verdict = bench.Line, bench.Series, bench.verdict
f_rate, f_ratio, f_ms, f_us = bench.f_rate, bench.f_ratio, bench.f_ms, bench.f_us

ROWS = (1, 2, 3)
SIZE = 100
TARGET = 0.3  # durable store acked rate ÷ memory acked rate (the issue)


def f_b(x: float) -> str:
    return f"{x:,.0f} B"


def f_n(x: float) -> str:
    return f"{x:,.0f}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_missing() -> str | None:
    """Why the Redis rows cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server not on PATH"
    try:
        import wsnb.store.redis  # noqa: F401
    except Exception as exc:  # still being written, or redis-py missing
        return f"wsnb.store.redis does not import ({type(exc).__name__}: {exc})"[:150]
    return None


def fsync_cost(directory: str, n: int = 50) -> float:
    """Median seconds of write(4 KiB) + fdatasync in `directory` (what one commit waits for)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        times = []
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times)


def fs_type(directory: str) -> str:
    """The filesystem type of `directory` (from /proc/mounts; '?' elsewhere)."""
    best, kind = "", "?"
    real = os.path.realpath(directory)
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


# ----- processes: a store server, redis-server, wsnb serve --workers ---------------


class StoreServer(bench.ServerProc):
    """`bench.ServerProc`, but the process is this file with ``--serve URL``."""

    async def start(self) -> StoreServer:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--serve", self.kind,
            "--serve-opts", json.dumps(self.opts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._log)
        reply = await self._read(60)
        self.port = reply["port"]
        self.pid = reply["pid"]
        return self


async def _serve(url: str, opts: dict[str, Any]) -> None:
    """Body of a server process: ``Server(store=url, log_delivered=True)``; obey stdin."""
    import logging

    import wsnb

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    server = wsnb.Server("127.0.0.1", 0, loop="current", keep_delivered=0,
                         max_sessions_per_token=1_000_000, store=url,
                         log_delivered=opts.get("log_delivered", True),
                         timeline=wsnb.Timeline(maxlen=opts.get("timeline", 100_000)))
    await server.start()

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"port": server.port, "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        name = json.loads(line).get("cmd")
        if name == "quit":
            break
        if name == "stats":
            await server.store.flush()
            reply({"batches": server.store.batches, "changes": server.store.changes})
        else:
            reply({"error": f"unknown command {name!r}"})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.close(), 10)
    reply({"bye": True})


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, AOF on, no RDB snapshots."""

    def __init__(self, fsync: str) -> None:
        self.fsync = fsync
        self.port = 0
        self.dir = ""
        self.proc: asyncio.subprocess.Process | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> RedisServer:
        self.dir = tempfile.mkdtemp(prefix=f"wsnb-bench-redis-{self.fsync}-")
        for _ in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            self.proc = await asyncio.create_subprocess_exec(
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
                "--dir", self.dir, "--daemonize", "no", "--logfile", "",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            if await self._ping(10.0):
                return self
            await self._kill()
        raise RuntimeError("redis-server did not answer PING on loopback")

    async def _ping(self, timeout: float) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    return False
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return True
                await asyncio.sleep(0.05)
            return False
        finally:
            client.close()

    def cpu_seconds(self) -> float:
        import psutil

        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(port=self.port, db=db)

    def aof_bytes(self) -> int:
        total = 0
        for path in Path(self.dir).rglob("*"):
            if path.is_file() and ".aof" in path.name:
                total += path.stat().st_size
        return total

    async def _kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def stop(self) -> None:
        await self._kill()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Workers:
    """``wsnb serve --store URL --workers N --port 0``: the supervisor is our child."""

    def __init__(self, store: str, n: int = 3) -> None:
        self.store = store
        self.n = n
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.port = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.seen: set[int] = set()  # worker pids ever seen (killed at the end if alive)

    async def start(self) -> Workers:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wsnb", "serve", "--port", "0", "--store", self.store,
            "--workers", str(self.n), "--quiet", cwd=str(ROOT), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"wsnb serve --workers did not start: {self.log_tail()}")
        self.url = line.decode().split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-1500:].decode(errors="replace")

    def workers(self) -> list[Any]:
        import psutil

        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        self.seen.update(child.pid for child in children)
        return children

    def listening(self) -> list[int]:
        """Pids of the workers listening on the port now."""
        import psutil

        out = []
        for child in self.workers():
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for c in child.net_connections("tcp")):
                    out.append(child.pid)
        return out

    async def wait_all_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.listening()) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.listening())} of {self.n} workers "
                                   f"listening after {timeout:g} s: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def holder(self, client_port: int) -> int | None:
        """The pid of the worker whose socket is connected to the client's `client_port`."""
        import psutil

        for child in self.workers():
            with contextlib.suppress(psutil.Error):
                for c in child.net_connections("tcp"):
                    if (c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.port
                            and c.raddr and c.raddr.port == client_port):
                        return int(child.pid)
        return None

    async def stop(self) -> None:
        import psutil

        try:
            self.workers()
            if self.proc is not None and self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)  # stops its workers too
                try:
                    await asyncio.wait_for(self.proc.wait(), 15)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
            for pid in self.seen:  # a worker the supervisor did not reap: ours to end
                with contextlib.suppress(psutil.Error):
                    child = psutil.Process(pid)
                    if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                        child.kill()
        finally:
            self._log.close()


# ----- the benchmark ---------------------------------------------------------------


class StoreBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rows: list[int] = args.rows
        self.quick: bool = args.quick
        self.runs: int = args.runs
        self.lines: list[Line] = []
        self.notes: list[str] = []
        self.dir = tempfile.mkdtemp(prefix="wsnb-bench-store-", dir=args.dir)
        self.payload = bench.make_payload(SIZE)
        self.redis_skip = redis_missing()
        self.redis: dict[str, RedisServer] = {}
        self.n_thr = args.messages or (1_000 if self.quick else 30_000)
        self.n_kills = args.kills or (1 if self.quick else 5)
        self.n_fill = 500 if self.quick else 10_000

    def progress(self, what: str) -> None:
        if not self.quiet:
            print(f"  … {what}", file=sys.stderr, flush=True)

    quiet = False

    async def redis_server(self, fsync: str) -> RedisServer:
        if fsync not in self.redis:
            self.redis[fsync] = await RedisServer(fsync).start()
        return self.redis[fsync]

    def sqlite_url(self, name: str, sync: str = "full") -> str:
        path = os.path.join(self.dir, f"{name}.db")
        return f"sqlite:///{path}" + ("?sync=normal" if sync == "normal" else "")

    async def run(self) -> None:
        try:
            for row, fn in ((1, self.throughput), (2, self.kills), (3, self.bytes_stored)):
                if row in self.rows:
                    await self.guard(row, fn)
        finally:
            for server in self.redis.values():
                await server.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    async def guard(self, row: int, fn: Any) -> None:
        await bench.guard(self.lines, row, fn)

    def skip(self, row: int, what: str) -> None:
        self.lines.append(Line(row, what, "skipped", self.redis_skip or "", verdict="skip"))

    # ----- row 1 ---------------------------------------------------------------------

    async def throughput(self) -> None:
        n = self.n_thr
        variants: list[tuple[str, str, bool]] = [  # label, store URL, counts toward the target
            ("memory://", "memory://", False),
            ("sqlite sync=full", self.sqlite_url("thr-full"), True),
            ("sqlite sync=normal", self.sqlite_url("thr-normal", "normal"), False),
        ]
        if self.redis_skip is None:
            everysec = await self.redis_server("everysec")
            always = await self.redis_server("always")
            variants += [("redis appendfsync everysec", everysec.url(0), True),
                         ("redis appendfsync always", always.url(0), False)]
        redis_of = {label: server for label, server in (
            ("redis appendfsync everysec", self.redis.get("everysec")),
            ("redis appendfsync always", self.redis.get("always"))) if server is not None}
        # memory:// without the delivered log: with log_delivered=True a memory store has no
        # record of the session (the server only claims sessions in durable stores), so the
        # first logged delivery fails as StaleSession and the server closes with 1012
        servers = {label: StoreServer(url, log_delivered=not url.startswith("memory:"))
                   for label, url, _ in variants}
        try:
            await asyncio.gather(*(s.start() for s in servers.values()))
            rates = {label: Series() for label in servers}
            ratios = {label: Series() for label in servers}
            per_commit = {label: Series() for label in servers}
            changes_per_commit = {label: Series() for label in servers}
            commits_s = {label: Series() for label in servers}
            cpu = {label: Series() for label in servers}  # server process, per message
            cpu_client = {label: Series() for label in servers}  # this process
            cpu_redis = {label: Series() for label in redis_of}  # redis-server
            for srv in servers.values():  # warm-up, not counted
                await bench.wsnb_acked_rate(srv.url, self.payload, 200)
            for run in range(self.runs):
                order = list(servers) if run % 2 == 0 else list(servers)[::-1]
                got: dict[str, float] = {}
                for label in order:
                    self.progress(f"row 1: {label}, run {run + 1}/{self.runs}")
                    srv = servers[label]
                    gc.collect()
                    before = await srv.command("stats")
                    cpu0, here0 = srv.cpu_seconds(), time.process_time()
                    redis0 = redis_of[label].cpu_seconds() if label in redis_of else 0.0
                    got[label] = rate = await bench.wsnb_acked_rate(srv.url, self.payload, n)
                    cpu1, here1 = srv.cpu_seconds(), time.process_time()
                    if label in redis_of:
                        cpu_redis[label].add((redis_of[label].cpu_seconds() - redis0) / n)
                    after = await srv.command("stats")
                    batches = max(1, after["batches"] - before["batches"])
                    rates[label].add(rate)
                    per_commit[label].add(n / batches)
                    changes_per_commit[label].add((after["changes"] - before["changes"]) / batches)
                    commits_s[label].add(batches / (n / rate))
                    cpu[label].add((cpu1 - cpu0) / n)
                    cpu_client[label].add((here1 - here0) / n)
                for label in servers:
                    ratios[label].add(got[label] / got["memory://"])
        finally:
            await asyncio.gather(*(s.stop() for s in servers.values()), return_exceptions=True)
        for label, _, target in variants:
            base = label == "memory://"
            self.lines.append(Line(
                1, f"acked msg/s, 100 B, {label}", rates[label].show(f_rate),
                "" if base else "memory " + rates["memory://"].show(f_rate),
                "" if base else ratios[label].show(f_ratio),
                f"≥ {TARGET}×" if target else "",
                verdict(ratios[label].median >= TARGET) if target else "info"))
        for label, _, _ in variants:
            if label == "memory://":
                self.lines.append(Line(1, f"group commit, {label}", "no store writes",
                                       "acked at delivery", "", "", "info"))
            else:
                self.lines.append(Line(
                    1, f"group commit, {label}", f"{per_commit[label].show(f_n)} msgs/commit",
                    f"{commits_s[label].show(f_n)} commits/s · "
                    f"{changes_per_commit[label].show(lambda x: f'{x:,.1f}')} changes/commit",
                    "", "", "info"))
            others = f"client {cpu_client[label].show(f_us)}"
            if label in cpu_redis:
                others += f" · redis-server {cpu_redis[label].show(f_us)}"
            self.lines.append(Line(
                1, f"CPU per msg: server process, {label}", cpu[label].show(f_us), others,
                "", "", "info"))
        fsync = fsync_cost(self.dir)
        self.lines.append(Line(1, "write 4 KiB + fdatasync in the store dir", f_ms(fsync),
                               f"{fs_type(self.dir)} ({os.path.dirname(self.dir)})", "", "",
                               "info"))
        if self.redis_skip is not None:
            self.skip(1, "acked msg/s, 100 B, redis")
        self.notes.append(
            f"row 1: N = {n:,} messages of 100 B per run; every server runs in its own process: "
            "memory:// is Server() as before stores (no store writes, acks at delivery); the "
            "durable ones are Server(store=URL, log_delivered=True), so each delivery is also "
            "appended to the store's delivered log and acked after its commit; msgs/commit = "
            "N ÷ store.batches during the run (changes/commit includes the close record)")

    # ----- row 2 ---------------------------------------------------------------------

    async def kills(self) -> None:
        stores = [("sqlite sync=full", self.sqlite_url("kill"))]
        if self.redis_skip is None:
            stores.append(("redis everysec", (await self.redis_server("everysec")).url(1)))
        for label, url in stores:
            await self.kill_row(label, url)
        if self.redis_skip is not None:
            self.skip(2, "kill -9 worker → READY, redis")
        self.notes.append(
            "row 2: wsnb serve --store URL --workers 3 (SO_REUSEPORT); a fresh client per "
            "kill with Backoff(base=0.1, cap=2) sending 1,000 msg/s; the worker holding its "
            "TCP connection (psutil) gets SIGKILL; the kernel closes the socket at once, so "
            "no dead-link detection is involved: kill → READY = detection (the client reads "
            "EOF/RST) + the backoff it drew, uniform(0, 0.1 s) + connect, handshake and the "
            "store claim on another worker")

    async def kill_row(self, label: str, url: str) -> None:
        import wsnb
        from wsnb.cli.store import check
        from wsnb.store import open_store

        total, detect, backoff, reconnect = Series(), Series(), Series(), Series()
        resumed = sent = 0
        workers = await Workers(url).start()
        try:
            for k in range(self.n_kills):
                self.progress(f"row 2: {label}, kill {k + 1}/{self.n_kills}")
                await workers.wait_all_listening()
                client = bench.new_client(workers.url, backoff=wsnb.Backoff(base=0.1, cap=2),
                                          name=f"kill{k}")
                await client.connect(timeout=30)
                stop = asyncio.Event()
                counter = [0]
                sender = asyncio.ensure_future(self._send_steadily(client, stop, counter))
                try:
                    await asyncio.sleep(0.5)  # sending, acks flowing
                    link = client.link
                    assert link is not None and link.ws is not None and link.ws.transport
                    client_port = link.ws.transport.get_extra_info("sockname")[1]
                    pid = workers.holder(client_port)
                    if pid is None:
                        raise RuntimeError("no worker holds the client's connection")
                    reconnects = client.reconnects
                    t_wall = time.time()
                    t0 = time.perf_counter()
                    os.kill(pid, signal.SIGKILL)
                    await client.wait_until(lambda c, r=reconnects: c.reconnects > r and c.ready,
                                            timeout=30)
                    total.add(time.perf_counter() - t0)
                    resumed += bool(client.resumed)
                    parts = self._split(client, t_wall)
                    if parts is not None:
                        detect.add(parts[0])
                        backoff.add(parts[1])
                        reconnect.add(parts[2])
                    await asyncio.sleep(0.3)  # sending on the new worker
                finally:
                    stop.set()
                    await sender
                await client.drain(timeout=30)
                sent += counter[0]
                await client.close()
            frame = open_store(url).delivered()
            counts = check(frame)
        finally:
            await workers.stop()
        k = self.n_kills
        self.lines.append(Line(
            2, f"kill -9 worker → READY on another, {label}", total.show(f_ms),
            f"resumed {resumed}/{k}", "", "", "info"))
        self.lines.append(Line(
            2, f"  kill → client sees the close, {label}", detect.show(f_ms),
            f"then backoff waited {backoff.show(f_ms)} · connect → READY {reconnect.show(f_ms)}",
            "", "", "info"))
        ok = counts["repeated"] == 0 and counts["missing"] == 0 and counts["messages"] == sent
        self.lines.append(Line(
            2, f"delivered log after {k} kills, {label}",
            f"{counts['messages']:,} of {sent:,} sent",
            f"{counts['repeated']} repeated, {counts['missing']} missing", "",
            "exactly once", verdict(ok)))

    @staticmethod
    async def _send_steadily(client: Any, stop: asyncio.Event, counter: list[int]) -> None:
        """About 1 000 msg/s: 10 sends, then 10 ms of sleep, until `stop`."""
        payload = bench.make_payload(SIZE)
        while not stop.is_set():
            for _ in range(10):
                await client.send(payload)
                counter[0] += 1
            await asyncio.sleep(0.01)

    @staticmethod
    def _split(client: Any, t_kill: float) -> tuple[float, float, float] | None:
        """(kill → CLOSED, CLOSED → CONNECTING (the backoff), CONNECTING → READY), from the
        client's timeline (wall-clock rows, µs resolution)."""
        states = client.timeline.states()
        states = states[states["type"] == "state"]
        times = [ts.timestamp() for ts in states["time"]]
        rows = [(t, str(s), str(d)) for t, s, d in zip(times, states["state"], states["detail"],
                                                        strict=True) if t >= t_kill - 0.001]
        closed = next((t for t, s, _ in rows if s == "CLOSED"), None)
        if closed is None:
            return None
        connecting = next((t for t, s, _ in rows if s == "CONNECTING" and t >= closed), None)
        ready = next((t for t, s, _ in rows if s == "READY" and connecting is not None
                      and t >= connecting), None)
        if connecting is None or ready is None:
            return None
        return closed - t_kill, connecting - closed, ready - connecting

    # ----- row 3 ---------------------------------------------------------------------

    async def bytes_stored(self) -> None:
        n = self.n_fill
        for side in ("server", "client"):
            url = self.sqlite_url(f"hold-{side}")
            path = url.removeprefix("sqlite://")

            def size(_key: str, path: str = path) -> int:
                with contextlib.closing(sqlite3.connect(path)) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                wal = path + "-wal"
                return os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal)
                                                else 0)

            self.progress(f"row 3: sqlite, {n:,} messages held by the {side}")
            after, before = await self._hold(side, url, n, size)
            grew = after - before
            self.lines.append(Line(
                3, f"bytes per un-acked 100 B msg, {WHO[side]}, sqlite (db+wal checkpointed)",
                f_b(grew / n), f"+{grew / 1024:,.0f} KiB for {n:,} msgs", "", "", "info"))
        if self.redis_skip is not None:
            self.skip(3, "bytes per un-acked 100 B msg, redis")
            return
        server = await self.redis_server("everysec")
        for db, side in ((2, "server"), (3, "client")):
            redis_client = server.client(db)
            try:
                def measure(key: str, redis_client: Any = redis_client) -> tuple[int, int, int]:
                    used = int(redis_client.info("memory")["used_memory"])
                    usage = int(redis_client.memory_usage(f"wsnb:o:{key}", samples=0) or 0)
                    return used, usage, server.aof_bytes()

                self.progress(f"row 3: redis, {n:,} messages held by the {side}")
                after, before = await self._hold(side, server.url(db), n, measure)
            finally:
                redis_client.close()
            (used1, usage1, aof1), (used0, usage0, aof0) = after, before
            self.lines.append(Line(
                3, f"bytes per un-acked 100 B msg, {WHO[side]}, redis MEMORY USAGE outbox",
                f_b((usage1 - usage0) / n), f"used_memory delta {f_b((used1 - used0) / n)}/msg",
                "", "", "info"))
            self.lines.append(Line(
                3, f"AOF bytes written per 100 B msg held, {WHO[side]}, redis",
                f_b((aof1 - aof0) / n), "", "", "", "info"))
        self.notes.append(
            "row 3: server side: a client connects, closes, and the server (in this process) "
            f"sends {n:,} messages to its session, held un-acked until the session expires "
            "(the sqlite row key is the 33-character session id); client side: a "
            "Client(store=URL, store_key='away') that never reaches a server sends them (its "
            "durable outbox); sizes measured after one message, so the session record is "
            "not counted")

    async def _hold(self, side: str, url: str, n: int, measure: Any) -> tuple[Any, Any]:
        """(after, before) of ``measure(key)`` around N more un-acked messages held in `url`.

        Sizes, not speed, are measured here, so the server runs in this process.
        """
        if side == "client":
            client = bench.new_client(f"ws://127.0.0.1:{free_port()}", store=url,
                                      store_key="away", max_outbox=n + 100, name="away")
            try:
                await client.send(self.payload)  # opens the store and claims the key
                assert client.store is not None
                await client.store.flush()
                before = measure("away")
                await asyncio.gather(*(client.send(self.payload) for _ in range(n)))
                await client.store.flush()
                if client.pending != n + 1:
                    raise RuntimeError(f"{client.pending} messages held, expected {n + 1}")
                return measure("away"), before
            finally:
                await client.close()
        import wsnb

        server = wsnb.Server("127.0.0.1", 0, loop="current", store=url, keep_delivered=0,
                             max_unacked=n + 100, timeline=wsnb.Timeline(maxlen=4 * n + 100))
        await server.start()
        try:
            client = bench.new_client(server.url, name="away")
            await client.connect(timeout=30)
            key = client.session_id
            await client.close()
            session = server.sessions[key]
            deadline = time.monotonic() + 10
            while session.link is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await server.send(key, self.payload)  # the first outbox entry
            await server.store.flush()
            before = measure(key)
            await asyncio.gather(*(server.send(key, self.payload) for _ in range(n)))
            await server.store.flush()
            held = session.state.sender.pending
            if held != n + 1:
                raise RuntimeError(f"{held} messages held in the session, expected {n + 1}")
            return measure(key), before
        finally:
            await server.close()


WHO = {"server": "server → away client", "client": "Client(store=) outbox"}


# ----- command line ----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_store.py",
        description="Benchmark wsnb's session stores (memory, SQLite, Redis) on loopback.")
    parser.add_argument("--quick", action="store_true",
                        help="far fewer messages and kills: a smoke test, not a measurement")
    parser.add_argument("--only", default="", metavar="ROWS",
                        help="comma-separated rows to run, e.g. 1,3 (default: all 1-3)")
    parser.add_argument("--runs", type=int, default=None,
                        help="interleaved runs of row 1 (median, min–max); default 3, quick 1")
    parser.add_argument("--messages", type=int, default=0, metavar="N",
                        help="row 1: messages per run (default 30000, quick 1000)")
    parser.add_argument("--kills", type=int, default=0, metavar="N",
                        help="row 2: kills per store (default 5, quick 1; at most 8: the "
                             "supervisor stops restarting after 10 deaths a minute)")
    parser.add_argument("--dir", default=None,
                        help="where the SQLite files go (default: the system temp dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-opts", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if not 0 <= args.kills <= 8:
        parser.error("--kills must be 1..8")
    args.rows = bench.parse_rows(parser, args.only, ROWS)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, json.loads(args.serve_opts)))
        return 0
    command = shlex.join(["python", "benchmarks/bench_store.py", *argv])
    store_bench = StoreBench(args)
    store_bench.quiet = args.quiet
    started = time.time()
    asyncio.run(store_bench.run())
    took = time.time() - started
    mode = "quick (smoke test, not a measurement)" if args.quick else "full"
    print(f"wsnb store bench: {mode}, rows {','.join(map(str, args.rows))}, {args.runs} runs "
          f"(median (min–max); ratios computed within each run), {took:.0f} s")
    print(f"command: {command}")
    redis_version = "-"
    if shutil.which("redis-server"):
        with contextlib.suppress(Exception):
            out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            redis_version = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")),
                                 out.strip())
    print(f"{bench.machine()}, SQLite {sqlite3.sqlite_version}, redis-server {redis_version}")
    print()
    notes = list(store_bench.notes)
    if store_bench.redis_skip is not None:
        notes.append(f"Redis rows skipped: {store_bench.redis_skip}")
    bench.print_report(store_bench.lines, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
