"""``python benchmarks/crash.py``: SIGKILL the server mid-stream and count what was delivered.

Each scenario runs a real server process on loopback, a `wsnb.Client` in this
process sends ``--messages`` numbered messages (``{"n": 1}``, ``{"n": 2}``, …)
at a steady pace (``--rate`` messages a second, in bursts every 10 ms or more;
holding back while more than ``default_backlog`` messages are un-acked, so the
stream cannot run ahead of a dead server and every kill, the last included,
lands mid-stream), and the runner kills the server ``--crashes`` times
mid-stream (spread evenly over the stream by messages sent, each time once the
client is READY on the current server and acks flow on it, right after a
burst so messages are in flight), restarting it on the same port (it waits on the
server's URL line, never on a sleep). At the end it waits until every receipt
is acked (bounded), then counts from the *evidence* of what the server
delivered, by message number:

- ``lost``: numbers never delivered;
- ``repeated``: numbers delivered more than once;
- ``out of order``: first deliveries of a number lower than one delivered before it;
- ``at-least-once``: numbers the client marked as resent into a new session (the
  ``resent`` timeline rows "resent in a new session: at-least-once"; mapped to
  message numbers through the receipts of the messages renumbered at each READY).

Scenarios (``--scenarios``, ``--stores``):

- ``crash`` per store: ``wsnb serve --port P --store URL --heartbeat-ms 500 --quiet``,
  SIGKILLed and started again. Evidence: the store's delivered log
  (``open_store(url).delivered()``, written in the same commit as the delivery
  mark, before the ack), checked again with ``wsnb store dump URL``. The memory
  store keeps nothing across a crash, so for ``memory`` the server is this file
  run as ``--serve-memory``: a `wsnb.Server` with no store whose handler
  appends each delivered message number to a file with flush + fsync before
  returning (the ack is written after the handler returns); that file is the
  evidence, and the output says so.
- ``workers``: ``wsnb serve --workers 3 --store URL`` (sqlite, and redis when
  available); the worker process that holds the client's connection (found with
  psutil among the supervisor's children) is SIGKILLed; the supervisor starts it
  again and the client resumes on whichever worker it reaches.
- ``redis-down``: ``wsnb serve --store redis://…`` with Redis SIGKILLed mid-stream
  and started again (AOF, ``appendfsync always``) once the client has seen the
  server close (or refuse) it with 1011 "session store unavailable", or after
  ``REDIS_DOWN_MAX`` seconds.

Redis rows need ``redis-server`` on PATH and ``wsnb.store.redis`` importable;
otherwise they are skipped with the reason printed. Every Redis is started here
on a free loopback port with ``--appendonly yes --appendfsync always --save ''``
in a temporary directory. The exit code is 1 when a row misses its
expectation (durable stores: nothing lost, nothing repeated, in order, every
``handshake_ack`` durable; memory: nothing lost, every repeated number one the
client marked at-least-once), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a script from a checkout: import its wsnb
    sys.path.insert(0, str(HERE.parent))

import wsnb  # noqa: E402  (after the path fix)

STORES = ("memory", "sqlite", "redis")
SCENARIOS = ("crash", "workers", "redis-down")
HEARTBEAT_MS = 500
TICK = 0.01  # seconds between bursts of the steady sender (longer at low rates)
BURST = 5  # messages per burst at least: a kill right after one finds messages in flight
MAX_RATE = 400.0  # messages a second, unless --rate says otherwise
HOLD_TIMEOUT = 60.0  # seconds the sender waits at most for the backlog to shrink
GAP = 1.5  # seconds of stream at least between two kills (a restart plus a resume take ~0.6 s)
START_TIMEOUT = 20.0  # seconds for a server (or supervisor) to print its URL line
REDIS_DOWN_MAX = 3.0  # seconds Redis stays down at most (less once the client saw 1011)
AT_LEAST_ONCE = "resent in a new session: at-least-once"
MEMORY_EVIDENCE = ("memory: counted from a file the server's handler appends each delivered "
                   "number to (flush + fsync before the handler returns, so before the ack); "
                   "the memory store itself keeps nothing across a crash")


# ----- results -------------------------------------------------------------------------


@dataclass
class Result:
    """One scenario: what was sent, killed, delivered, and what the client saw."""

    scenario: str
    store: str
    messages: int
    crashes_planned: int
    crashes: int = 0
    lost: int = 0
    repeated: int = 0  # numbers delivered more than once
    extra: int = 0  # deliveries beyond the first, summed
    out_of_order: int = 0
    marked: int = 0  # distinct numbers the client marked at-least-once
    marked_rows: int = 0  # client timeline rows "resent in a new session: at-least-once"
    marked_ids: set[int] = field(default_factory=set)
    repeated_unmarked: list[int] = field(default_factory=list)
    unacked: int = 0
    seconds: float = 0.0
    #: per READY: (resumed, durable, messages renumbered into the new session)
    readies: list[tuple[bool, bool, int]] = field(default_factory=list)
    closes: Counter[str] = field(default_factory=Counter)  # client close rows, by code
    close_details: list[str] = field(default_factory=list)
    in_flight_at_kills: list[int] = field(default_factory=list)
    evidence: str = ""
    dump: str = ""
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    error: str = ""  # the scenario could not run to the end
    lost_ids: list[int] = field(default_factory=list)
    repeated_ids: list[int] = field(default_factory=list)

    @property
    def durable(self) -> bool | None:
        """True if every handshake_ack said durable (None before any READY)."""
        return all(d for _, d, _ in self.readies) if self.readies else None

    @property
    def new_sessions(self) -> int:
        """READYs after the first that did not resume (the session was lost)."""
        return sum(1 for resumed, _, _ in self.readies[1:] if not resumed)

    @property
    def problems(self) -> list[str]:
        """Expectations this row misses (empty: it holds)."""
        if self.skipped:
            return []
        out = [f"error: {self.error}"] if self.error else []
        if self.lost:
            out.append(f"{self.lost} lost (e.g. {self.lost_ids[:10]})")
        if self.unacked:
            out.append(f"{self.unacked} receipts not acked at the end")
        if self.out_of_order:
            out.append(f"{self.out_of_order} out of order")
        if self.crashes < self.crashes_planned:
            out.append(f"only {self.crashes} of {self.crashes_planned} crashes done")
        if self.store == "memory":
            if self.repeated_unmarked:
                out.append(f"{len(self.repeated_unmarked)} repeated numbers the client did not "
                           f"mark at-least-once (e.g. {self.repeated_unmarked[:10]})")
        else:
            if self.repeated:
                out.append(f"{self.repeated} repeated (e.g. {self.repeated_ids[:10]})")
            if self.durable is not True:
                out.append("a handshake_ack did not say durable")
            if self.new_sessions:
                out.append(f"{self.new_sessions} reconnect(s) got a new session instead of "
                           "resuming")
            if self.marked_rows:
                out.append(f"{self.marked_rows} at-least-once resend rows on the client")
            if self.dump and "(exactly once)" not in self.dump:
                out.append(f"wsnb store dump: {self.dump}")
            if self.scenario == "redis-down" and not any(
                    "session store unavailable" in d for d in self.close_details):
                out.append("the client never saw 1011 session store unavailable")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> list[str]:
        if self.skipped:
            return [self.scenario, self.store, str(self.messages), str(self.crashes_planned),
                    "-", "-", "-", "-", "-", "-", f"skipped: {self.skipped}"]
        durable = {True: "yes", False: "no" if self.store == "memory" else "NO",
                   None: "-"}[self.durable]
        return [self.scenario, self.store, str(self.messages), str(self.crashes),
                str(self.lost), str(self.repeated), str(self.out_of_order),
                f"{self.marked_rows}" if self.marked == self.marked_rows
                else f"{self.marked_rows} ({self.marked} msgs)", durable,
                f"{self.seconds:.1f}", "ok" if self.ok else "MISS: " + "; ".join(self.problems)]

    def details(self) -> str:
        if self.skipped:
            return f"- {self.scenario}/{self.store}: skipped: {self.skipped}"
        resumed = sum(1 for r, _, _ in self.readies if r)
        closes = ", ".join(f"{code} ×{n}" for code, n in sorted(self.closes.items())) or "none"
        lines = [f"- {self.scenario}/{self.store}: evidence: {self.evidence}",
                 f"  client: {len(self.readies)} READY ({resumed} resumed, "
                 f"{self.new_sessions} new sessions after the first, durable "
                 f"{self.durable}); closes seen: {closes}; un-acked messages at each kill: "
                 f"{self.in_flight_at_kills}"]
        if self.repeated:
            lines.append(f"  repeated: {self.repeated} numbers ({self.extra} extra deliveries), "
                         f"all marked at-least-once by the client: "
                         f"{not self.repeated_unmarked}")
        if self.dump:
            lines.append(f"  wsnb store dump: {self.dump}")
        odd = sorted({d for d in self.close_details if "1011" in d})[:3]
        if odd:
            lines.append(f"  1011 closes: {odd}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


HEAD = ["scenario", "store", "messages", "crashes", "lost", "repeated", "out of order",
        "client at-least-once resends", "durable ack", "time s", "result"]


def table(results: list[Result]) -> str:
    rows = [HEAD, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def count(result: Result, numbers: list[int], marked: set[int]) -> None:
    """Fill lost / repeated / out of order from the delivered numbers, in delivery order."""
    seen: Counter[int] = Counter()
    highest = 0
    for n in numbers:
        if not seen[n] and n < highest:
            result.out_of_order += 1
        seen[n] += 1
        highest = max(highest, n)
    result.lost_ids = [n for n in range(1, result.messages + 1) if not seen[n]]
    result.lost = len(result.lost_ids)
    result.repeated_ids = sorted(n for n, c in seen.items() if c > 1)
    result.repeated = len(result.repeated_ids)
    result.extra = sum(c - 1 for c in seen.values() if c > 1)
    result.repeated_unmarked = [n for n in result.repeated_ids if n not in marked]
    strays = sorted(n for n in seen if not 1 <= n <= result.messages)
    if strays:
        result.notes.append(f"delivered numbers outside 1..{result.messages}: {strays[:10]}")


# ----- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess whose first stdout line starts with its URL."""

    def __init__(self, argv_for: Callable[[int], list[str]], log: Path) -> None:
        self.argv_for = argv_for  # port -> argv
        self.log = log
        self.port = 0
        self.url = ""
        self.first_line = ""
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.starts = 0

    async def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start (on the port of the first start) and return once the URL line is printed."""
        assert self.process is None or self.process.returncode is not None
        with open(self.log, "ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv_for(self.port), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=stderr)
        self.starts += 1
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if not line.startswith(b"ws://"):
            await self.kill()
            raise RuntimeError(f"server did not print its URL within {timeout} s (exit "
                               f"{self.process.returncode}): {line[:200]!r}; stderr: "
                               f"{self.stderr_tail()}")
        self.first_line = line.decode().strip()
        self.url = self.first_line.split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._drain = asyncio.ensure_future(self._drain_stdout(self.process))
        return self.url

    @staticmethod
    async def _drain_stdout(process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while await process.stdout.read(65536):
            pass

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    async def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL and wait for the exit (bounded)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.wait_for(process.wait(), timeout)
        await self._stop_drain()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (closes clients with 1001, stops workers); SIGKILL after `timeout`."""
        process = self.process
        if process is None or process.returncode is not None:
            await self._stop_drain()
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            await self.kill()
        await self._stop_drain()

    async def _stop_drain(self) -> None:
        if self._drain is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._drain, 5)
            self._drain = None


class Redis:
    """A redis-server on a free loopback port, AOF with fsync at every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]

    def start(self, timeout: float = 10.0) -> Redis:
        """Start (the first time on a free port, then on the same one) and wait for PING."""
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between the check and the bind
            if not self.port:
                self.port = free_port()
            self.process = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            self.starts += 1
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                                 socket_connect_timeout=0.5)
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline and self.process.poll() is None:
                    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError,
                                             redis.BusyLoadingError):
                        if client.ping():
                            return self
                    time.sleep(0.02)  # poll interval; bounded by the deadline
            finally:
                client.close()
            self.kill()
            if self.starts == 1 and "Address already in use" in self.log():
                self.port = 0
                continue
            break
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}: "
                           f"{self.log()[-1500:]}")

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def redis_unavailable() -> str:
    """Why the Redis rows cannot run here ("" when they can)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (not on PATH)"
    try:
        import wsnb.store.redis  # noqa: F401
    except Exception as exc:  # ImportError, or a module still being written
        return f"wsnb.store.redis does not import: {type(exc).__name__}: {exc}"
    return ""


def wsnb_serve(store_url: str, *extra: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", "wsnb", "serve", "--port", str(port),
                         "--store", store_url, "--heartbeat-ms", str(HEARTBEAT_MS), "--quiet",
                         *extra]


def memory_server(evidence: Path) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, str(Path(__file__).resolve()), "--serve-memory",
                         "--port", str(port), "--evidence", str(evidence)]


def worker_holding(supervisor: asyncio.subprocess.Process, port: int) -> tuple[list[int], bool]:
    """Pids of the supervisor's workers, those with an established connection on `port`
    first; and whether one has one."""
    import psutil  # type: ignore[import-untyped]  # a test dependency of wsnb

    try:
        children = psutil.Process(supervisor.pid).children()
    except psutil.NoSuchProcess:
        return [], False
    holding: list[int] = []
    others: list[int] = []
    for child in children:
        try:
            conns = child.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        busy = any(c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
                   for c in conns)
        (holding if busy else others).append(child.pid)
    return holding + others, bool(holding)


# ----- the client side -------------------------------------------------------------------


class Stream:
    """The client, its receipts, and what it saw at each READY."""

    def __init__(self, url: str, messages: int, rate: float, backlog: int) -> None:
        self.messages = messages
        self.rate = rate
        self.backlog = backlog
        self.sent = 0
        self.opens = 0
        self.acked_at_open = 0  # the client's acked rows when the last READY came
        self._burst = asyncio.Event()  # set (and replaced) after each burst is sent
        self.receipts: list[Any] = []
        self.number_of: dict[int, int] = {}  # id(receipt) -> message number
        self.marked: set[int] = set()  # numbers the client resent into a new session
        self.readies: list[tuple[bool, bool, int]] = []
        self.client = wsnb.Client(url, backoff=wsnb.Backoff(base=0.05, cap=0.5),
                                  loop="current", on_open=self._on_open, name="crash",
                                  max_outbox=max(10_000, messages + 10), seed=1)

    def _on_open(self, client: wsnb.Client) -> None:
        """At every READY, before the outbox flushes: note resumed/durable and renumbered."""
        renumbered = 0
        for out in client.session.sender.unsent:
            if out.renumbered and out.handle is not None:
                renumbered += 1
                self.marked.add(self.number_of[id(out.handle)])
        self.readies.append((client.resumed, client.durable, renumbered))
        self.acked_at_open = self.acked()
        self.opens += 1

    def acked(self) -> int:
        return self.client.timeline.counts()["acked"]

    async def send_all(self) -> None:
        """Send 1..messages at `rate` a second, in bursts every TICK seconds (or more, at
        low rates), holding back while `backlog` messages are un-acked (the server is down);
        after a hold the pace goes on from there, without a catch-up burst."""
        loop = asyncio.get_running_loop()
        per_tick = max(BURST, round(self.rate * TICK))
        next_at = loop.time()
        while self.sent < self.messages:  # bounded: `sent` grows every pass
            if self.client.pending >= self.backlog:  # acks wake it; bounded by the timeout
                await self.client.wait_until(lambda c: c.pending < self.backlog,
                                             timeout=HOLD_TIMEOUT)
                next_at = loop.time()
            for _ in range(min(per_tick, self.messages - self.sent)):
                receipt = await self.client.send({"n": self.sent + 1})
                self.receipts.append(receipt)
                self.number_of[id(receipt)] = self.sent + 1
                self.sent += 1
            self._burst.set()
            self._burst = asyncio.Event()
            next_at = max(next_at + per_tick / self.rate, loop.time() - TICK)
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation

    async def next_burst(self, timeout: float) -> None:
        """Return right after the sender's next burst (or after `timeout`, or at once if done)."""
        if self.sent < self.messages:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._burst.wait(), timeout)

    def over(self) -> bool:
        return self.sent >= self.messages and self.client.pending == 0

    def delivering_since(self, opens: int) -> bool:
        """READY on a connection opened after the `opens`-th one, and acks came on it
        (the server is up and delivering, not just resuming)."""
        return (self.client.ready and self.opens > opens
                and self.acked() > self.acked_at_open)

    def close_rows(self) -> list[str]:
        frame = self.client.timeline.events()
        rows = frame[frame["type"] == "close"]
        return [str(d) for d in rows["detail"].tolist()]


# ----- scenarios -------------------------------------------------------------------------


def default_backlog(messages: int, crashes: int) -> int:
    """Un-acked messages at most: half the stream between two kills (so every kill, even
    the last, finds the stream still going), at least two bursts, at most 1000."""
    return max(2 * BURST, min(1000, messages // (2 * (crashes + 1))))


def default_rate(messages: int, crashes: int) -> float:
    """MAX_RATE, or slower so the stream lasts GAP seconds per kill (kills stay mid-stream)."""
    return min(MAX_RATE, messages / ((crashes + 1) * GAP))


async def run_scenario(scenario: str, store: str, *, messages: int = 300, crashes: int = 3,
                       workdir: Path | str | None = None, rate: float | None = None,
                       workers: int = 3, timeout: float | None = None) -> Result:
    """Run one scenario and count; see the module docstring. `timeout` bounds the final drain."""
    rate = rate or default_rate(messages, crashes)
    if scenario not in SCENARIOS or store not in STORES:
        raise ValueError(f"unknown scenario/store {scenario}/{store}")
    result = Result(scenario, store, messages, crashes)
    if store == "memory" and scenario != "crash":
        raise ValueError("the memory store runs only the crash scenario")
    if scenario == "redis-down" and store != "redis":
        raise ValueError("redis-down needs the redis store")
    if store == "redis":
        why = redis_unavailable()
        if why:
            result.skipped = why
            return result
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="wsnb-crash-"))
        base = Path(workdir) / f"{scenario}-{store}"
        base.mkdir(parents=True, exist_ok=True)
        await _run(result, base, rate=rate, workers=workers,
                   timeout=timeout if timeout is not None else 30.0 + messages / rate)
    return result


async def _run(result: Result, base: Path, *, rate: float, workers: int, timeout: float) -> None:
    scenario, store = result.scenario, result.store
    redis = Redis(base / "redis") if store == "redis" else None
    evidence = base / "delivered.txt"
    server: ServerProcess | None = None
    stream: Stream | None = None
    try:
        if redis is not None:
            await asyncio.to_thread(redis.start)
        if store == "memory":
            store_url = "memory://"
            server = ServerProcess(memory_server(evidence), base / "server.err")
            result.evidence = MEMORY_EVIDENCE
        else:
            store_url = redis.url if redis is not None else f"sqlite:///{base / 'store.db'}"
            extra = ("--workers", str(workers)) if scenario == "workers" else ()
            server = ServerProcess(wsnb_serve(store_url, *extra), base / "server.err")
            result.evidence = (f"the store's delivered log ({store_url.split(':')[0]}), "
                               "recorded in the commit of each delivery, before its ack")
        url = await server.start()
        stream = Stream(url, result.messages, rate, default_backlog(result.messages,
                                                                     result.crashes_planned))
        client = stream.client
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.connect(timeout=15)
        sender = asyncio.ensure_future(stream.send_all())
        try:
            await _crash_loop(result, stream, server, redis)
            await asyncio.wait_for(sender, timeout)
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
        try:
            await client.drain(timeout=timeout)
        except TimeoutError as exc:
            result.notes.append(f"drain: {exc}")
        result.seconds = loop.time() - started
        result.unacked = sum(1 for r in stream.receipts if r.state != "acked")
        result.unacked += result.messages - len(stream.receipts)
        counts = client.timeline.events()
        rows = counts[(counts["type"] == "resent") & (counts["detail"] == AT_LEAST_ONCE)]
        result.marked_rows = len(rows)
        result.marked = len(stream.marked)
        result.marked_ids = set(stream.marked)
        result.readies = list(stream.readies)
        details = stream.close_rows()
        result.close_details = details
        result.closes = Counter(d.split()[0] if d[:4].isdigit() else "no connection"
                                for d in details)
        extra = sum(n for code, n in result.closes.items() if code[:1].isdigit()) - (
            result.crashes * (2 if scenario == "redis-down" else 1))
        if extra > 0:
            result.notes.append(f"{extra} connection close(s) on the client beyond the ones "
                                "the kills explain (e.g. a dead link declared under load, or "
                                "more refused reconnects while Redis was down)")
        await client.close()
        await server.stop()
        numbers = await asyncio.to_thread(_read_evidence, result, store_url, evidence)
        count(result, numbers, stream.marked)
        if store != "memory":
            result.dump = await asyncio.to_thread(_dump, store_url)
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.client.close()
        if server is not None:
            await _stop_tree(server)
        if redis is not None:
            redis.kill()


async def _crash_loop(result: Result, stream: Stream, server: ServerProcess,
                      redis: Redis | None) -> None:
    """Kill `crashes` times, evenly spread over the stream, each once the server delivers."""
    k = result.crashes_planned
    opens = 0
    for i in range(k):
        threshold = max(1, round(result.messages * (i + 1) / (k + 1)))
        try:  # re-checked at every change of the client (each ack, each state)
            await stream.client.wait_until(lambda _, t=threshold, o=opens: stream.sent >= t
                                           and (stream.delivering_since(o) or stream.over()),
                                           timeout=30.0)
        except TimeoutError:
            result.notes.append(f"crash {i + 1}: message {threshold} not sent, or no ack on a "
                                "new connection, within 30 s")
            return
        if not stream.delivering_since(opens):
            result.notes.append(f"crash {i + 1}: the stream was over (all sent and acked) "
                                "before it could be killed mid-stream")
            return
        await stream.next_burst(timeout=2.0)  # kill with the burst just written in flight
        opens = stream.opens
        result.in_flight_at_kills.append(stream.client.pending)
        if not stream.client.pending:
            result.notes.append(f"kill {i + 1} found nothing in flight (the stream was over)")
        if result.scenario == "crash":
            await server.kill()
            await server.start()
        elif result.scenario == "workers":
            await _kill_worker(result, stream, server)
        else:
            assert redis is not None
            await _redis_down(result, stream, redis)
        result.crashes += 1


async def _kill_worker(result: Result, stream: Stream, server: ServerProcess) -> None:
    assert server.process is not None
    pids, holding = worker_holding(server.process, server.port)
    if not pids:
        result.notes.append("no worker process found to kill")
        return
    if not holding:
        result.notes.append(f"kill {result.crashes + 1}: no worker held the client's "
                            "connection; killed another one")
    os.kill(pids[0], signal.SIGKILL)  # a worker the supervisor started for this scenario
    # the supervisor restarts it; the client reconnects to any worker on the port meanwhile


async def _redis_down(result: Result, stream: Stream, redis: Redis) -> None:
    """SIGKILL Redis; start it again once the client saw 1011 twice (or REDIS_DOWN_MAX)."""
    client = stream.client
    before = sum(1 for d in stream.close_rows() if d.startswith("1011"))
    redis.kill()
    seen = [before]

    def refused_twice(_: wsnb.Client) -> bool:
        if client.ready:  # closes happen only once READY is gone: skip building a frame
            return False
        seen[0] = sum(1 for d in stream.close_rows() if d.startswith("1011"))
        return seen[0] >= before + 2  # the live link closed, and one reconnect refused

    with contextlib.suppress(TimeoutError):
        await client.wait_until(refused_twice, timeout=REDIS_DOWN_MAX)
    if seen[0] == before:
        result.notes.append(f"redis down {result.crashes + 1}: no 1011 close on the client "
                            f"within {REDIS_DOWN_MAX} s")
    await asyncio.to_thread(redis.start)


def _read_evidence(result: Result, store_url: str, evidence: Path) -> list[int]:
    if result.store == "memory":
        if not evidence.exists():
            return []
        text = evidence.read_text()
        lines = text.split("\n")
        if lines and lines[-1]:
            result.notes.append(f"evidence file ends in a torn line {lines[-1]!r} (ignored)")
        return [int(line.split()[1]) for line in lines[:-1] if line]
    from wsnb.store import open_store

    store = open_store(store_url)
    try:
        frame = store.delivered()
    finally:
        closer = getattr(store, "close_sync", None)
        with contextlib.suppress(Exception):
            if closer is not None:
                closer()
            else:
                asyncio.run(store.close())  # this thread has no loop of its own
    sessions = int(frame["session"].nunique()) if len(frame) else 0
    if sessions > 1:
        result.notes.append(f"the delivered log has {sessions} sessions (expected 1)")
    return [int(p["n"]) if isinstance(p, dict) and "n" in p else -1
            for p in frame["payload"].tolist()]


def _dump(store_url: str) -> str:
    done = subprocess.run([sys.executable, "-m", "wsnb", "store", "dump", store_url,
                           "--last", "1"], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else done.stderr.strip()[-300:]
    return f"{last} (exit {done.returncode})"


async def _stop_tree(server: ServerProcess) -> None:
    """Stop the server (a supervisor stops its workers); kill any worker it left behind."""
    process = server.process
    leftovers: list[int] = []
    if process is not None and process.returncode is None:
        with contextlib.suppress(Exception):
            import psutil  # type: ignore[import-untyped]

            leftovers = [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
    await server.stop()
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ----- the memory case's server -----------------------------------------------------------


async def serve_memory(port: int, evidence: Path) -> int:
    """A `wsnb.Server` with no store whose handler appends ``"<session> <n>"`` to `evidence`
    with flush + fsync before returning: the ack is written only after the handler returns."""
    from wsnb.cli.serve import stop_on_signals

    out = open(evidence, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life

    def handler(session: Any, payload: Any) -> None:
        out.write(f"{session.id[:8]} {payload['n']}\n")
        out.flush()
        os.fsync(out.fileno())

    server = wsnb.Server("127.0.0.1", port, heartbeat_ms=HEARTBEAT_MS, handler=handler,
                         keep_delivered=0, loop="current")
    async with stop_on_signals() as (stop, _):
        await server.start()
        print(f"{server.url}  crash.py --serve-memory: evidence {evidence}", flush=True)
        await stop.wait()
        await server.close()
    out.close()
    return 0


# ----- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SIGKILL the wsnb server mid-stream and count lost, repeated and "
                    "out-of-order messages, per session store.")
    parser.add_argument("--messages", type=int, default=2000, metavar="N")
    parser.add_argument("--crashes", type=int, default=5, metavar="K")
    parser.add_argument("--stores", default="memory,sqlite,redis",
                        help="comma-separated: memory, sqlite, redis (default all)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated: crash, workers, redis-down (default all)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help=f"messages a second (default {MAX_RATE:g}, or slower so the "
                             f"stream lasts {GAP:g} s per kill)")
    parser.add_argument("--workers", type=int, default=3, help="processes in the workers scenario")
    parser.add_argument("--workdir", help="keep the stores, logs and evidence here")
    parser.add_argument("--serve-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--evidence", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.crashes < 0 or args.workers < 2 or not (
            args.rate is None or args.rate > 0):
        parser.error("need --messages >= 1, --crashes >= 0, --rate > 0, --workers >= 2")
    return args


def plan(stores: list[str], scenarios: list[str]) -> list[tuple[str, str]]:
    runs = []
    if "crash" in scenarios:
        runs += [("crash", s) for s in STORES if s in stores]
    if "workers" in scenarios:
        runs += [("workers", s) for s in ("sqlite", "redis") if s in stores]
    if "redis-down" in scenarios and "redis" in stores:
        runs.append(("redis-down", "redis"))
    return runs


async def amain(args: argparse.Namespace) -> int:
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in stores if s not in STORES] + [s for s in scenarios if s not in SCENARIOS]
    if bad:
        print(f"crash.py: unknown store/scenario {bad}", file=sys.stderr)
        return 2
    results = []
    rate = args.rate or default_rate(args.messages, args.crashes)
    for scenario, store in plan(stores, scenarios):
        print(f"running {scenario}/{store}: {args.messages} messages, {args.crashes} kills …",
              file=sys.stderr, flush=True)
        try:
            results.append(await run_scenario(scenario, store, messages=args.messages,
                                              crashes=args.crashes, workdir=args.workdir,
                                              rate=rate, workers=args.workers))
        except Exception as exc:  # a scenario that could not run is a row, not a traceback
            failed = Result(scenario, store, args.messages, args.crashes)
            failed.error = f"could not run: {type(exc).__name__}: {exc}"[:300]
            results.append(failed)
    print(f"wsnb crash runner: SIGKILL mid-stream, {args.messages} messages at "
          f"{rate:g}/s (at most {default_backlog(args.messages, args.crashes)} un-acked), "
          f"{args.crashes} kills per scenario, heartbeat {HEARTBEAT_MS} ms, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print(table(results))
    print()
    for result in results:
        print(result.details())
    misses = [r for r in results if not r.ok]
    print()
    print(f"{len(results) - len(misses)} of {len(results)} scenarios as expected"
          + (f"; MISS: {', '.join(r.scenario + '/' + r.store for r in misses)}" if misses else ""))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_memory:
        if not args.evidence:
            print("crash.py --serve-memory needs --evidence FILE", file=sys.stderr)
            return 2
        return asyncio.run(serve_memory(args.port, Path(args.evidence)))
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
