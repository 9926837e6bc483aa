"""``wsnb serve --echo`` and ``--raw``: plain WebSocket servers, no wsnb protocol.

Built on `wsnb.transport.serve`: websockets' Sans-I/O layer answers pings,
negotiates permessage-deflate and subprotocols, and enforces ``--max-size``
(1009). Each connection gets a `PlainHandler`:

* ``echo`` sends every text and binary message back unchanged (a text
  message that is not UTF-8 closes the connection with 1007, as RFC 6455
  asks); reading pauses while the socket's write buffer is full;
* ``raw`` prints one line per message received and answers nothing.

Both print connections opening and closing, keep a status line, and with
``--record FILE`` append every message received to FILE as JSON lines.
``--idle-timeout S`` closes (1001) a connection that sent nothing for S
seconds: every received byte counts as life, WebSocket pings included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl as ssl_module
import time
from datetime import datetime
from typing import IO, Any, TextIO

from wsnb.cli._common import EXIT_OK, err, status_lines

#: Characters of a text message shown by ``--raw`` (the rest is counted).
PREVIEW = 200


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _path(path: str) -> str:
    base, sep, _ = path.partition("?")
    return base + ("?…" if sep else "")


class PlainServer:
    """What every connection of one plain server shares: counters, output, the record."""

    def __init__(self, args: argparse.Namespace, mode: str, out: TextIO,
                 record: IO[str] | None) -> None:
        self.mode = mode
        self.out = out
        self.tty = out.isatty()
        self.record = record
        self.idle_timeout: float | None = args.idle_timeout
        self.token: str | None = args.token or None
        self.allowed = set(args.allow_origin or ())
        self.handlers: set[PlainHandler] = set()
        self.opened = 0
        self.received = 0
        self.received_bytes = 0
        self.sent = 0

    def mask(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    def say(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")  # over the status line; the next refresh redraws it
        print(text, file=self.out, flush=True)

    def handler_for(self, ws: Any) -> PlainHandler:
        self.opened += 1
        return PlainHandler(self, ws, self.opened)

    def process_request(self, ws: Any, request: Any) -> Any:
        """HTTP 403 for a browser Origin not in ``--allow-origin`` (when given)."""
        origin = request.headers.get("Origin")
        if self.allowed and origin is not None and origin not in self.allowed:
            return ws.reject(403, "Origin not allowed\n")
        return None

    def note(self, handler: PlainHandler, kind: str, data: bytes) -> None:
        self.received += 1
        self.received_bytes += len(data)
        if self.record is not None:
            entry: dict[str, Any] = {"t": round(time.time(), 6), "conn": handler.n,
                                     "peer": handler.ws.peer, "type": kind, "size": len(data)}
            if kind == "text":
                entry["text"] = self.mask(data.decode("utf-8", "replace"))
            else:
                entry["base64"] = base64.b64encode(data).decode("ascii")
            self.record.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.record.flush()
        if self.mode == "raw":
            if kind == "text":
                text = self.mask(data.decode("utf-8", "replace"))
                shown = repr(text[:PREVIEW]) + (f"… ({len(text) - PREVIEW} more characters)"
                                                 if len(text) > PREVIEW else "")
            else:
                shown = data[:32].hex(" ") + (" …" if len(data) > 32 else "")
            self.say(f"{_clock()}  #{handler.n} {kind} {len(data)} B: {shown}")

    def status(self, rate: float) -> str:
        line = (f"connections {len(self.handlers)} · received {self.received} "
                f"({rate:.1f}/s)")
        return line + (f" · echoed {self.sent}" if self.mode == "echo" else "")


class PlainHandler:
    """One connection of a plain server (a `wsnb.transport.Handler`)."""

    def __init__(self, server: PlainServer, ws: Any, n: int) -> None:
        self.server = server
        self.ws = ws
        self.n = n
        self.last_life = time.monotonic()
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- Handler

    def on_open(self, ws: Any) -> None:
        server = self.server
        server.handlers.add(self)
        request = ws.request
        extras = [f"subprotocol {ws.subprotocol}"] if ws.subprotocol else []
        extras += ws.extensions
        server.say(f"{_clock()}  #{self.n} open from {ws.peer} "
                   f"GET {_path(request.path) if request is not None else '?'}"
                   + (f" ({', '.join(extras)})" if extras else ""))
        if server.idle_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(server.idle_timeout,
                                                                self._check_idle)

    def on_life(self) -> None:
        self.last_life = time.monotonic()

    def on_text(self, data: bytes) -> None:
        self.server.note(self, "text", data)
        if self.server.mode == "echo":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.ws.close(1007, "invalid UTF-8 in a text message")
                return
            self.ws.send_text_bytes([data])
            self._sent()

    def on_binary(self, data: bytes) -> None:
        self.server.note(self, "binary", data)
        if self.server.mode == "echo":
            self.ws.send([data])
            self._sent()

    def on_pong(self, data: bytes) -> None:
        pass

    def on_writable(self) -> None:
        if self.paused:
            self.paused = False
            self.ws.resume_reading()

    def on_input_done(self) -> None:
        pass

    def on_closed(self, code: int | None, reason: str, by_us: bool) -> None:
        from wsnb.client import describe_close

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server = self.server
        if self in server.handlers:
            server.handlers.discard(self)
            by = "by the server" if by_us else "by the client"
            server.say(f"{_clock()}  #{self.n} closed {by}: "
                       f"{describe_close(code or 1006, reason)}")

    # -- helpers

    def _sent(self) -> None:
        self.server.sent += 1
        if not self.ws.writable and not self.paused:  # a slow reader: stop reading from it
            self.paused = True
            self.ws.pause_reading()

    def _check_idle(self) -> None:
        limit = self.server.idle_timeout
        assert limit is not None
        idle = time.monotonic() - self.last_life
        if idle >= limit:
            self._timer = None
            self.ws.close(1001, f"idle for {limit:g} s")
        else:
            self._timer = asyncio.get_running_loop().call_later(limit - idle, self._check_idle)


def _url(sock: Any, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if tls else 'ws'}://{host}:{port}/"


async def serve_plain(args: argparse.Namespace, mode: str, tls: ssl_module.SSLContext | None,
                      out: TextIO) -> int:
    """Run ``wsnb serve --echo`` or ``--raw`` until Ctrl-C or SIGTERM; the exit code."""
    from wsnb.cli.serve import stop_on_signals
    from wsnb.transport import CLOSE_TIMEOUT, serve

    record: IO[str] | None = None
    if args.record:
        try:
            record = open(args.record, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            err("serve", f"cannot write --record {args.record}: {exc.strerror or exc}")
            return 1
    state = PlainServer(args, mode, out, record)
    try:
        async with stop_on_signals() as (stop, received):  # before the URL line
            try:
                listener = await serve(
                    state.handler_for, args.host, args.port, ssl=tls, max_size=args.max_size,
                    process_request=state.process_request, open_timeout=args.open_timeout,
                    subprotocols=args.subprotocol, compression=True)
            except OSError as exc:
                err("serve", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
                return 1
            print(f"{_url(listener.sockets[0], tls is not None)}  {_banner(args, mode)}",
                  file=out, flush=True)
            try:
                await status_lines(stop, out, interval=args.status_interval, quiet=args.quiet,
                                   count=lambda: state.received, render=state.status)
                listener.close()
                handlers = list(state.handlers)
                for handler in handlers:
                    handler.ws.close(1001, "server shutting down")
                if handlers:
                    await asyncio.wait([h.ws.closed for h in handlers],
                                       timeout=CLOSE_TIMEOUT + 1)
            except asyncio.CancelledError:
                for handler in list(state.handlers):
                    handler.ws.abort()
                if state.tty:
                    out.write("\n")
                err("serve", "stopped without waiting for clients")
                return 130
        if state.tty and not args.quiet:
            out.write("\n")
        counted = f"{state.received} message(s) received" + (
            f", {state.sent} echoed" if mode == "echo" else "")
        print(f"stopped ({', '.join(received) or 'done'}): closed {len(handlers)} "
              f"connection(s) with 1001 going away; {counted}", file=out, flush=True)
        return EXIT_OK
    finally:
        if record is not None:
            record.close()


def _banner(args: argparse.Namespace, mode: str) -> str:
    what = ("a plain WebSocket echo server: every message comes back unchanged"
            if mode == "echo" else
            "a plain WebSocket server that prints what it receives and answers nothing")
    notes = ["no wsnb protocol"]
    if args.idle_timeout:
        notes.append(f"idle timeout {args.idle_timeout:g} s")
    if args.token:
        notes.append("token not checked")
    if args.record:
        notes.append(f"recording to {args.record}")
    return f"wsnb serve --{mode}: {what} ({', '.join(notes)}); Ctrl-C stops (1001 to every client)"
