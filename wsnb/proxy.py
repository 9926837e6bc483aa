"""A fault-injecting TCP proxy on loopback, for producing WebSocket failures on purpose.

`FaultProxy` sits between a WebSocket client and server and pumps bytes both
ways without parsing WebSocket. Its fault methods act on every connection at
once and take effect before they return:

- `cut()`: abort both sides of every connection (peers see 1006, no close frame).
- `blackhole()`: keep every TCP connection open but pass nothing: a half-open link.
- `latency(ms)`: delay every chunk by ``ms`` in each direction, order kept.
- `bandwidth(bytes_per_s)`: throttle each direction, with real backpressure.
- `restore()`: back to a clean link.

Usage::

    async with FaultProxy("ws://127.0.0.1:8765/ws") as proxy:
        client = connect(proxy.url)   # goes through the proxy
        proxy.blackhole()
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wsnb.loop import LoopChoice, choose_loop, on_own_loop

if TYPE_CHECKING:
    from wsnb.timeline import Timeline

__all__ = ["FaultProxy"]

_EOF = object()  # queue sentinel: forward the source's end-of-stream (FIN)
_APPLY_TIMEOUT = 5.0  # seconds a fault method waits for the proxy's loop
_CONNECT_TIMEOUT = 10.0  # seconds to reach the target for each new client
_MAX_QUEUE = 8 * 1024 * 1024  # most bytes held per direction under latency/bandwidth
_MIN_QUEUE = 16 * 1024  # least high-water mark under bandwidth
_SLICE_S = 0.02  # under bandwidth, send slices of about this many seconds' worth
_MIN_SLICE = 1024
_MAX_SLICE = 64 * 1024


def _num(x: float) -> str:
    """1000.0 -> '1000', 0.5 -> '0.5' (for timeline details)."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Side(asyncio.Protocol):
    """One TCP leg of a proxied connection: the client's or the target's."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.out: _Flow  # bytes this side reads
        self.inn: _Flow  # bytes this side writes
        self.pauses: set[str] = set()
        self.gone = False

    def pause(self, reason: str) -> None:
        if not self.pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.pauses.add(reason)

    def unpause(self, reason: str) -> None:
        if reason not in self.pauses:
            return
        self.pauses.discard(reason)
        if not self.pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.conn.aborted:  # cut or closed while the target was being reached
            transport.abort()
            return
        if self.pauses:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        flow = self.out
        proxy = flow.proxy
        if proxy._direct and not flow.queue:  # fast path: clean link, nothing pending
            flow.dst.transport.write(data)  # type: ignore[union-attr]
            proxy._bytes_forwarded += len(data)
        else:
            flow.feed(data)

    def eof_received(self) -> bool:
        self.out.feed_eof()
        return True  # keep the write half open: TCP half-close is passed on

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.side_lost(self, exc)

    def pause_writing(self) -> None:
        self.inn.writing_paused = True
        self.inn.src.pause("writing")

    def resume_writing(self) -> None:
        self.inn.writing_paused = False
        self.inn.src.unpause("writing")
        self.inn.pump()


class _Flow:
    """One direction of a connection: bytes read from `src`, written to `dst`."""

    def __init__(self, proxy: FaultProxy, src: _Side, dst: _Side) -> None:
        self.proxy = proxy
        self.src = src
        self.dst = dst
        src.out = self
        dst.inn = self
        self.queue: deque[tuple[float, Any]] = deque()  # (due time, bytes | _EOF)
        self.queued = 0  # bytes in `queue`
        self.last_due = 0.0
        self.next_free = 0.0  # loop time the bandwidth allows the next slice
        self.timer: asyncio.TimerHandle | None = None
        self.writing_paused = False
        self.eof_held = False  # a FIN that arrived during a blackhole
        self.eof_sent = False

    def feed(self, data: Any) -> None:
        """Take bytes (or `_EOF`) read from `src`: drop, forward or queue them."""
        proxy = self.proxy
        if proxy._blackholed or self.src.conn.aborted:
            if data is _EOF:
                self.eof_held = True
            return
        if proxy._direct and not self.queue:
            self._write(data)
            return
        due = max(proxy._loop.time() + proxy._latency, self.last_due)
        self.last_due = due
        self.queue.append((due, data))
        if data is not _EOF:
            self.queued += len(data)
            if self.queued > proxy._high_water():
                self.src.pause("queue")
        if self.timer is None:
            self.pump()

    def feed_eof(self) -> None:
        self.feed(_EOF)

    def _write(self, data: Any) -> None:
        transport = self.dst.transport
        assert transport is not None
        if data is _EOF:
            self.eof_sent = True
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self.src.conn.eof_sent()
        else:
            transport.write(data)
            self.proxy._bytes_forwarded += len(data)

    def pump(self) -> None:
        """Send whatever is due, then arm a timer for the next item."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        proxy = self.proxy
        loop = proxy._loop
        now = loop.time()
        while self.queue and not self.writing_paused and not self.src.conn.aborted:
            due, data = self.queue[0]
            rate = proxy._rate
            start = due if rate is None or data is _EOF else max(due, self.next_free)
            if start > now:
                self.timer = loop.call_at(start, self.pump)
                break
            if data is _EOF:
                self.queue.popleft()
                self._write(data)
                continue
            n = len(data)
            if rate is not None:
                n = min(n, max(_MIN_SLICE, min(_MAX_SLICE, int(rate * _SLICE_S))))
                self.next_free = start + n / rate
            if n < len(data):  # slice without copying the rest
                view = data if isinstance(data, memoryview) else memoryview(data)
                self.queue[0] = (due, view[n:])
                data = view[:n]
            else:
                self.queue.popleft()
            self.queued -= n
            self._write(data)
        if self.queued <= proxy._high_water() // 2:
            self.src.unpause("queue")

    def drop(self) -> None:
        """Discard everything queued (a blackhole or an abort); hold a queued FIN."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if any(data is _EOF for _, data in self.queue):
            self.eof_held = True
        self.queue.clear()
        self.queued = 0
        self.src.unpause("queue")


class _Conn:
    """A proxied connection: the client's leg and the target's leg."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.target = _Side(self)
        self.up = _Flow(proxy, self.client, self.target)
        self.down = _Flow(proxy, self.target, self.client)
        self.client.pause("connect")  # read nothing until the target is reached
        self.aborted = False
        self.closing = False
        self.broken = False  # a leg was lost during a blackhole; abort the other on restore
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        proxy = self.proxy
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                await proxy._loop.create_connection(
                    lambda: self.target, proxy._target_host, proxy._target_port
                )
        except (OSError, TimeoutError):
            self.abort()
            return
        if self.aborted:  # the client left meanwhile
            assert self.target.transport is not None
            self.target.transport.abort()
            return
        self.client.unpause("connect")

    def eof_sent(self) -> None:
        if self.up.eof_sent and self.down.eof_sent and not self.closing:
            self.closing = True  # both FINs passed: close both legs once flushed
            for side in (self.client, self.target):
                if side.transport is not None:
                    side.transport.close()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.target if side is self.client else self.client
        if other.gone or (other is self.target and other.transport is None):
            self.abort()
            return
        if self.aborted or self.closing:
            return
        side.inn.drop()
        if self.proxy._blackholed:
            self.broken = True  # the other peer must not learn of it yet
            return
        self.abort()  # reset, or write to a closed peer: pass it on abruptly

    def abort(self) -> None:
        self.proxy._conns.discard(self)
        if self.aborted:
            return
        self.aborted = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for flow in (self.up, self.down):
            flow.drop()
        for side in (self.client, self.target):
            if side.transport is not None:
                side.transport.abort()


class FaultProxy:
    """A loopback TCP proxy in front of a ``ws://`` target that injects faults on demand.

    Connect clients to `url` instead of the target. The fault methods are
    thread-safe and in effect when they return; each is recorded on
    `timeline` (if given) as a ``"chaos"`` event.
    """

    def __init__(
        self,
        target_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: LoopChoice = "auto",
        timeline: Timeline | None = None,
    ) -> None:
        try:
            parts = urlsplit(target_url)
            target_port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid ws:// URL: {target_url!r}: {exc}") from None
        if parts.scheme != "ws":
            raise ValueError(f"FaultProxy needs a ws:// target URL, not {target_url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in target URL {target_url!r}")
        self._target_url = target_url
        self._target_host = parts.hostname
        self._target_port = target_port if target_port is not None else 80
        self._resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host = host
        self._port = port
        self._loop = choose_loop(loop)
        self._timeline = timeline
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._bytes_forwarded = 0
        self._blackholed = False
        self._latency = 0.0  # seconds
        self._rate: float | None = None  # bytes per second
        self._direct = True  # no fault active: data_received writes straight through

    # ------------------------------------------------------------------ info

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` of the proxy plus the target's path and query."""
        if self._port == 0:
            raise RuntimeError("FaultProxy.url: call start() first (port 0 is not bound yet)")
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self._port}{self._resource}"

    @property
    def port(self) -> int:
        """The port the proxy listens on (the bound one once started)."""
        return self._port

    @property
    def connections(self) -> int:
        """Proxied connections currently open (counted from accept until both legs close)."""
        return len(self._conns)

    @property
    def bytes_forwarded(self) -> int:
        """Bytes written onward so far, both directions, all connections."""
        return self._bytes_forwarded

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this proxy runs on (panels schedule their commands there)."""
        return self._loop

    @property
    def timeline(self) -> Timeline | None:
        """Where the fault methods record their ``"chaos"`` events (None: nowhere)."""
        return self._timeline

    # -------------------------------------------------------------- lifecycle

    @on_own_loop
    async def start(self) -> FaultProxy:
        """Listen on ``host:port``; returns self. A second call does nothing."""
        if self._server is None:
            self._server = await self._loop.create_server(self._accept, self._host, self._port)
            self._port = self._server.sockets[0].getsockname()[1]
        return self

    @on_own_loop
    async def close(self) -> None:
        """Stop listening and abort every connection."""
        server, self._server = self._server, None
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _accept(self) -> _Side:
        conn = _Conn(self)
        self._conns.add(conn)
        conn.task = self._loop.create_task(conn.connect())
        return conn.client

    # ----------------------------------------------------------------- faults

    def cut(self) -> None:
        """Abort every current connection on both legs (RST, no close frame: peers see 1006).

        New connections are still accepted.
        """
        self._apply("cut", self._cut)

    def blackhole(self) -> None:
        """Pass no bytes either way from now on, keeping every TCP connection open.

        Bytes read while blackholed (and any still queued by latency or
        bandwidth) are discarded, not held: like a real dead link, they are
        lost, and a reliable client must resend them. A FIN, or a leg lost,
        during the blackhole is held back and passed on at `restore()` (a
        lost leg then aborts the other). New connections are accepted and
        connected to the target, but also get nothing forwarded.
        """
        self._apply("blackhole", self._blackhole)

    def latency(self, ms: float) -> None:
        """Delay every chunk by `ms` milliseconds in each direction, order preserved.

        ``latency(0)`` removes the delay. Chunks already queued keep their times.
        """
        if not (math.isfinite(ms) and ms >= 0):
            raise ValueError(f"latency must be a finite number of ms >= 0, not {ms!r}")
        self._apply(f"latency {_num(ms)} ms", self._set_latency, ms / 1000)

    def bandwidth(self, bytes_per_s: float | None) -> None:
        """Throttle each direction to `bytes_per_s` (``None``: unlimited).

        Over the rate the proxy stops reading from the sender, so backpressure
        reaches it through TCP; at most a bounded amount is queued per direction.
        """
        if bytes_per_s is not None and not (math.isfinite(bytes_per_s) and bytes_per_s > 0):
            raise ValueError(f"bandwidth must be None or a finite rate > 0, not {bytes_per_s!r}")
        detail = (
            "bandwidth unlimited" if bytes_per_s is None else f"bandwidth {_num(bytes_per_s)} B/s"
        )
        self._apply(detail, self._set_bandwidth, bytes_per_s)

    def restore(self) -> None:
        """Clear blackhole, latency and bandwidth.

        Bytes discarded during a blackhole stay lost, so a connection that lost
        some mid-message is likely corrupt; new connections are clean.
        """
        self._apply("restore", self._restore)

    # ------------------------------------------------------- fault internals

    def _apply(self, detail: str, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the proxy's loop and record `detail`; return once applied."""

        def run() -> None:
            fn(*args)
            if self._timeline is not None:
                self._timeline.record("chaos", detail=detail)

        if _on_loop(self._loop) or not self._loop.is_running():
            run()
            return
        done = threading.Event()
        errors: list[BaseException] = []

        def run_and_signal() -> None:
            try:
                run()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run_and_signal)
        if not done.wait(_APPLY_TIMEOUT):
            raise TimeoutError(f"FaultProxy: {detail!r} not applied within {_APPLY_TIMEOUT} s")
        if errors:
            raise errors[0]

    def _flows(self) -> list[_Flow]:
        return [flow for conn in self._conns for flow in (conn.up, conn.down)]

    def _update(self) -> None:
        self._direct = not self._blackholed and self._latency == 0 and self._rate is None
        for flow in self._flows():
            flow.pump()  # reschedule queued items for the new timing

    def _high_water(self) -> int:
        """Bytes queued per direction past which the proxy stops reading the sender."""
        if self._rate is None:
            return _MAX_QUEUE
        return int(min(_MAX_QUEUE, max(_MIN_QUEUE, self._rate * (self._latency + 0.05))))

    def _cut(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    def _blackhole(self) -> None:
        self._blackholed = True
        self._direct = False
        for flow in self._flows():
            flow.drop()

    def _set_latency(self, seconds: float) -> None:
        self._latency = seconds
        self._update()

    def _set_bandwidth(self, rate: float | None) -> None:
        self._rate = rate
        self._update()

    def _restore(self) -> None:
        self._blackholed = False
        self._latency = 0.0
        self._rate = None
        for conn in list(self._conns):
            if conn.broken:
                conn.abort()
                continue
            for flow in (conn.up, conn.down):
                if flow.eof_held:
                    flow.eof_held = False
                    flow.feed(_EOF)
        self._update()
