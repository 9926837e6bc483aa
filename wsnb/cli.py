"""The ``wsnb`` command (also ``python -m wsnb``).

``wsnb serve``     the reference server in the foreground, with a live status line;
``wsnb probe URL`` connect once like wscat/websocat and show everything that happened;
``wsnb timeline``  print or convert a saved timeline (csv, parquet, HAR);
``wsnb bench``     benchmarks (runs ``benchmarks/bench.py`` of a checkout);
``wsnb doctor``    diagnose a server (`wsnb.doctor`);
``wsnb soak``      a bounded chaos soak on loopback: nothing lost, duplicated or reordered.

Tokens and HMAC keys are never printed. They may come from ``--token`` /
``--secret`` or, to keep them out of ``ps`` and shell history, from the
environment variables ``WSNB_TOKEN`` / ``WSNB_SECRET``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl as ssl_module
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

# Exit codes of `wsnb probe` (and the kinds of failure they stand for).
EXIT_OK, EXIT_CLOSED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = {"closed": 1, "protocol": 1, "dns": 3, "refused": 4, "tls": 5, "upgrade": 6,
              "timeout": 7, "handshake": 8, "network": 9}

__all__ = ["EXIT_CODES", "build_parser", "classify", "main", "parse_chaos"]

CHAOS_KEYS = "drop=P (0..1: drop a frame and its TCP connection), reorder=N (N workers " \
             "process out of order), delay-ack=MS (hold acks back)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsnb`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # benchmarks/ is not installed: run it from a checkout
        import subprocess

        found = [p / "benchmarks" / "bench.py" for p in (Path(__file__).resolve().parents[1],
                                                          Path.cwd())]
        found = [p for p in found if p.is_file()]
        if not found:
            print("wsnb bench: the benchmarks live in the source tree, not in the installed "
                  "package; from a checkout run: python benchmarks/bench.py [--quick] "
                  "[--only ROWS]", file=sys.stderr)
            return EXIT_USAGE
        return subprocess.call([sys.executable, str(found[0]), *argv[1:]])
    if argv[:1] == ["doctor"]:
        try:
            from wsnb.doctor import cli_main
        except ImportError as exc:
            print(f"wsnb doctor: not available in this installation ({exc})", file=sys.stderr)
            return EXIT_USAGE
        return cli_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"wsnb {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsnb", description="WebSocket behaviour made visible: serve, probe, timelines.",
        epilog="Also: wsnb bench [...] (benchmarks), wsnb doctor URL [...] (diagnosis).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the reference server in the foreground",
        description="Run the wsnb reference server until Ctrl-C or SIGTERM, which close every "
                    "client with 1001. The first line printed is the URL to connect to.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    serve.add_argument("--token", default=os.environ.get("WSNB_TOKEN"),
                       help="token clients must present (default: $WSNB_TOKEN, else none)")
    serve.add_argument("--secret", default=os.environ.get("WSNB_SECRET"),
                       help="HMAC key for signed envelopes (default: $WSNB_SECRET)")
    serve.add_argument("--heartbeat-ms", type=int, default=15_000, metavar="N",
                       help="server ping interval; 0 turns heartbeats off (default 15000)")
    serve.add_argument("--chaos", default="", metavar="SPEC",
                       help=f"comma-separated key=value faults: {CHAOS_KEYS}")
    serve.add_argument("--echo", action="store_true",
                       help="send every delivered message back to its session")
    serve.add_argument("--max-size", type=int, default=1 << 20, metavar="BYTES",
                       help="largest frame accepted; bigger ones close with 1009 (default 1 MiB)")
    serve.add_argument("--max-message", type=int, default=64 << 20, metavar="BYTES",
                       help="largest message, chunked or inflated (default 64 MiB)")
    serve.add_argument("--handshake-timeout", type=float, default=5.0, metavar="S",
                       help="seconds to get the wsnb handshake frame, else 4408 (default 5)")
    serve.add_argument("--open-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to complete the HTTP upgrade (slowloris guard; default 10)")
    serve.add_argument("--rate-limit", type=_rate, metavar="N/S",
                       help="more than N frames in S seconds on one connection closes it with "
                            "4429 and a retry hint (e.g. 100/1)")
    serve.add_argument("--throttle", type=_rate, metavar="N/S",
                       help="more than N new connections in S seconds get HTTP 429")
    serve.add_argument("--max-conns-per-token", type=int, metavar="N",
                       help="live connections allowed per token (4429 beyond)")
    serve.add_argument("--max-sessions-per-token", type=int, default=1000, metavar="N")
    serve.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                       help="browser Origin allowed (repeatable); others get HTTP 403")
    serve.add_argument("--certfile", help="PEM certificate chain: serve wss://")
    serve.add_argument("--keyfile", help="PEM private key (default: in --certfile)")
    serve.add_argument("--seed", type=int, help="seed for chaos randomness")
    serve.add_argument("--status-interval", type=float, default=1.0, metavar="S",
                       help="refresh the status line every S seconds (default 1)")
    serve.add_argument("--quiet", action="store_true", help="no status line")
    serve.set_defaults(run=cmd_serve)

    probe = sub.add_parser(
        "probe", help="connect once and show the upgrade, states, RTT and close",
        description="Connect to any WebSocket server and show the HTTP upgrade exchange, "
                    "readyState transitions with times, round-trip times from pings, and the "
                    "close code in words. Exit codes: 0 ok, 1 closed by the server or not "
                    "wsnb, 2 usage, 3 DNS, 4 refused, 5 TLS, 6 upgrade refused (4xx/5xx), "
                    "7 timeout, 8 bad HTTP handshake, 9 other network error.")
    probe.add_argument("url", help="ws:// or wss:// URL")
    probe.add_argument("--token", default=os.environ.get("WSNB_TOKEN"),
                       help="token for the wsnb handshake (default: $WSNB_TOKEN)")
    probe.add_argument("--raw", action="store_true",
                       help="plain WebSocket: no wsnb handshake (any server)")
    probe.add_argument("--count", type=int, default=3, metavar="N",
                       help="WebSocket pings to time (default 3; 0: none)")
    probe.add_argument("--send", action="append", default=[], metavar="TEXT",
                       help="send TEXT (a wsnb msg unless --raw) and wait for its ack or a reply")
    probe.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="limit for the upgrade, the handshake and each answer (default 10)")
    probe.add_argument("--origin", help="send this Origin header, as a browser would")
    probe.add_argument("--subprotocol", action="append", metavar="NAME",
                       help="offer a subprotocol (repeatable)")
    probe.add_argument("--no-compression", action="store_true",
                       help="do not offer permessage-deflate")
    probe.add_argument("--cafile", help="trust this CA bundle (PEM) for wss://")
    probe.add_argument("--insecure", action="store_true",
                       help="wss:// without certificate verification")
    probe.add_argument("--json", action="store_true", help="one JSON object on stdout")
    probe.set_defaults(run=cmd_probe)

    timeline = sub.add_parser(
        "timeline", help="print or convert a saved timeline (csv, parquet, har)",
        description="Print a timeline saved as .csv (timeline.events().to_csv(path, "
                    "index=False)), .parquet (timeline.to_parquet) or .har/.json (browser "
                    "devtools or timeline.to_har), or convert it with --to.")
    timeline.add_argument("file")
    timeline.add_argument("--to", choices=("csv", "parquet", "har"), help="convert")
    timeline.add_argument("-o", "--output", help="where to write (default: FILE with the new "
                                                 "suffix)")
    timeline.add_argument("--last", type=int, default=50, metavar="N",
                          help="rows to print (default 50; 0: all)")
    timeline.add_argument("--type", metavar="T1,T2", help="only these event types")
    timeline.add_argument("--url", help="--to har: URL for peers that are not ws:// URLs")
    timeline.set_defaults(run=cmd_timeline)

    soak = sub.add_parser(
        "soak", help="chaos soak on loopback: nothing lost, duplicated or reordered",
        description="Run a wsnb server, a FaultProxy and a client on 127.0.0.1, send N messages "
                    "each way while the link is cut, blackholed (and, with --restart, the "
                    "server restarted), then print one verdict line. Exit 0 when nothing was "
                    "lost, duplicated or delivered out of order either way, 1 otherwise.")
    soak.add_argument("--messages", type=int, default=SOAK_MESSAGES, metavar="N",
                      help=f"messages each way (default {SOAK_MESSAGES})")
    soak.add_argument("--cuts", type=int, default=10, metavar="K",
                      help="TCP cuts, both legs reset mid-traffic (default 10)")
    soak.add_argument("--blackholes", type=int, default=2, metavar="B",
                      help="blackholes: no bytes pass until the client sees the link dead "
                           "(default 2)")
    soak.add_argument("--restart", action="store_true",
                      help="also restart the server once (sessions kept)")
    soak.add_argument("--seconds", type=float, default=60.0, metavar="S",
                      help="time limit: what has not arrived by then counts as lost (default 60)")
    soak.add_argument("--seed", type=int, metavar="X",
                      help="seed for the order of faults (default: random, printed in the "
                           "verdict)")
    soak.add_argument("--no-progress", action="store_true", help="no progress bar")
    soak.set_defaults(run=cmd_soak)
    return parser


def _rate(text: str) -> tuple[int, float]:
    try:
        n, _, s = text.partition("/")
        rate = int(n), float(s or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS like 100/1, got {text!r}") from None
    if rate[0] < 1 or not rate[1] > 0:
        raise argparse.ArgumentTypeError(f"expected N >= 1 and SECONDS > 0, got {text!r}")
    return rate


def _err(command: str, message: str) -> None:
    print(f"wsnb {command}: {message}", file=sys.stderr, flush=True)


# ----- serve ---------------------------------------------------------------------------


def parse_chaos(spec: str) -> dict[str, Any]:
    """``"drop=0.01,reorder=4,delay-ack=200"`` -> Server keyword arguments.

    ``reorder=N`` is ``workers=N`` with a small random processing delay (out
    of order inside, in order at delivery); ``drop=P`` drops an incoming frame
    together with its TCP connection (a lost frame over TCP); ``delay-ack=MS``
    holds each ack back.
    """
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not sep:
            raise ValueError(f"chaos item {item!r} needs key=value ({CHAOS_KEYS})")
        try:
            if key == "drop":
                p = float(value)
                if not 0 <= p <= 1:
                    raise ValueError
                options["drop_rate"] = p
            elif key == "reorder":
                n = int(value)
                if n < 1:
                    raise ValueError
                options["workers"] = n
                options["process_delay"] = (0.0, 0.002)
            elif key in ("delay-ack", "ack-delay"):
                ms = float(value)
                if not 0 <= ms <= 60_000:
                    raise ValueError
                options["ack_delay"] = ms / 1000
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"unsupported chaos key {key!r}; supported: {CHAOS_KEYS}") from None
        except ValueError:
            raise ValueError(f"bad chaos value {item!r}: drop takes 0..1, reorder an int >= 1, "
                             f"delay-ack milliseconds 0..60000") from None
    return options


def _server_ssl(args: argparse.Namespace) -> ssl_module.SSLContext | None:
    if not args.certfile:
        if args.keyfile:
            raise ValueError("--keyfile needs --certfile")
        return None
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        chaos = parse_chaos(args.chaos)
        tls = _server_ssl(args)
    except (ValueError, OSError) as exc:
        _err("serve", str(exc))
        return EXIT_USAGE
    return asyncio.run(_serve(args, chaos, tls, sys.stdout))


def _status(server: Any, delivered: int, rate: float) -> str:
    return (f"connections {len(server.connections)} · sessions {len(server.sessions)} · "
            f"delivered {delivered} ({rate:.1f}/s) · refused handshakes "
            f"{server.refused_handshakes}")


async def _serve(args: argparse.Namespace, chaos: dict[str, Any],
                 tls: ssl_module.SSLContext | None, out: TextIO) -> int:
    from wsnb.server import Server

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    received: list[str] = []

    def on_signal(signum: int) -> None:
        if stop.is_set() and main_task is not None:  # a second Ctrl-C: stop waiting
            main_task.cancel()
        received.append(signal.Signals(signum).name)
        stop.set()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)

    count = 0

    async def handler(session: Any, payload: Any) -> None:
        nonlocal count
        count += 1
        if args.echo:
            await server.send(session.id, payload)

    server = Server(
        args.host, args.port, token=args.token, secret=args.secret,
        heartbeat_ms=args.heartbeat_ms, handler=handler, keep_delivered=0,
        max_size=args.max_size, max_message=args.max_message,
        handshake_timeout=args.handshake_timeout, open_timeout=args.open_timeout,
        rate_limit=args.rate_limit, throttle=args.throttle,
        max_connections_per_token=args.max_conns_per_token,
        max_sessions_per_token=args.max_sessions_per_token,
        allowed_origins=args.allow_origin, ssl=tls, loop="current", seed=args.seed,
        timeline=_small_timeline(), **chaos)
    try:
        await server.start()
    except OSError as exc:
        _err("serve", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    notes = [f"token {'required' if args.token else 'not required'}",
             f"HMAC {'on' if args.secret else 'off'}",
             f"heartbeat {args.heartbeat_ms} ms" if args.heartbeat_ms else "heartbeat off"]
    if args.chaos:
        notes.append(f"chaos {args.chaos}")
    print(f"{server.url}  wsnb serve: {', '.join(notes)}; Ctrl-C stops (1001 to every client)",
          file=out, flush=True)
    if args.host not in ("127.0.0.1", "::1", "localhost") and not args.token:
        _err("serve", f"warning: listening on {args.host} without a token: anyone who can "
                      "reach this port can connect")
    tty = out.isatty()
    last_line = ""
    last_count, last_time = 0, time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, args.status_interval))
            if args.quiet:
                continue
            now = time.monotonic()
            rate = (count - last_count) / max(now - last_time, 1e-9)
            last_count, last_time = count, now
            line = _status(server, count, rate)
            if tty:
                out.write("\r" + line + "\x1b[K")
                out.flush()
            elif line != last_line:
                print(line, file=out, flush=True)
            last_line = line
        open_connections = len(server.connections)
        await server.close(1001, "server shutting down")
    except asyncio.CancelledError:
        if tty:
            out.write("\n")
        _err("serve", "stopped without waiting for clients")
        return 130
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    if tty and not args.quiet:
        out.write("\n")
    print(f"stopped ({', '.join(received) or 'done'}): closed {open_connections} connection(s) "
          f"with 1001 going away; {count} message(s) delivered", file=out, flush=True)
    return EXIT_OK


def _small_timeline() -> Any:
    from wsnb.timeline import Timeline

    return Timeline(10_000)  # the status line does not need history; keep memory flat


# ----- probe ---------------------------------------------------------------------------


class ProbeFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_HIDDEN_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


def _headers(headers: Any) -> list[list[str]]:
    items = []
    for name, value in headers.raw_items():
        if name.lower() in _HIDDEN_HEADERS:
            value = "***"
        items.append([name, value])
    return items


def _path(path: str) -> str:
    base, sep, _ = path.partition("?")
    return base + ("?…" if sep else "")


def classify(exc: BaseException, url: str, timeout: float, phase: str) -> ProbeFailed:
    """One line naming the cause of a failed connection attempt."""
    from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    if isinstance(exc, ProbeFailed):
        return exc
    if isinstance(exc, socket.gaierror):
        return ProbeFailed("dns", f"DNS: cannot resolve {host!r}: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeFailed("refused", f"refused: nothing accepts connections on {host}:{port} "
                                      "(is the server running? right port?)")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ProbeFailed("tls", f"TLS: certificate verification failed: "
                                  f"{exc.verify_message or exc.reason} (pass --cafile CA.pem, "
                                  "or --insecure to skip verification)")
    if isinstance(exc, ssl_module.SSLError):
        hint = " (is this a plain ws:// server?)" if "WRONG_VERSION" in str(exc).upper() else ""
        return ProbeFailed("tls", f"TLS: handshake failed: {exc.reason or exc}{hint}")
    if isinstance(exc, (ConnectionResetError, EOFError)) and parts.scheme == "wss" \
            and phase == "connect":
        return ProbeFailed("tls", "TLS: the server dropped the connection during the TLS "
                                  "handshake (is this a plain ws:// server? try ws://)")
    if isinstance(exc, InvalidStatus):
        response = exc.response
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()
        body = f": {body[:120]}" if body else ""
        return ProbeFailed("upgrade", f"upgrade refused: HTTP {response.status_code} "
                                      f"{response.reason_phrase}{body}")
    if isinstance(exc, TimeoutError):
        where = ("no TCP/TLS connection" if phase == "connect"
                 else "connected, but no HTTP 101 upgrade response")
        return ProbeFailed("timeout", f"timeout: {where} within {timeout:g} s")
    if isinstance(exc, InvalidURI):
        return ProbeFailed("handshake", "invalid URL")
    if isinstance(exc, InvalidMessage):
        hint = (" (is this a TLS server? try wss://)" if parts.scheme == "ws" else "")
        cause = exc.__cause__
        why = f": {cause}" if cause is not None and str(cause) else ""
        return ProbeFailed("handshake", f"handshake: no valid HTTP response{why}{hint}")
    if isinstance(exc, InvalidHandshake):
        return ProbeFailed("handshake", f"handshake: {exc}")
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc) or type(exc).__name__
        return ProbeFailed("network", f"network: {why} ({host}:{port})")
    return ProbeFailed("network", f"{type(exc).__name__}: {exc}")


class Probe:
    """One connection, recorded step by step (printed as it goes unless ``--json``)."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.t0 = time.monotonic()
        self.report: dict[str, Any] = {
            "url": _masked(args.url), "mode": "raw" if args.raw else "wsnb", "ok": False,
            "request": None, "response": None, "subprotocol": None, "extensions": [],
            "states": [], "handshake": None, "rtt_ms": [], "sent": [], "close": None,
            "error": None}
        self.ws: Any = None
        self.frames: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None

    # -- output

    def say(self, text: str = "") -> None:
        if not self.args.json:
            print(text, file=self.out, flush=True)

    def ms(self) -> float:
        return round((time.monotonic() - self.t0) * 1000, 3)

    def state(self, name: str, detail: str = "") -> None:
        t = self.ms()
        self.report["states"].append({"state": name, "t_ms": t, "detail": detail})
        self.say(f"  {t:9.1f} ms  {name:<10} {detail}".rstrip())

    # -- steps

    async def run(self) -> int:
        try:
            await self._connect()
            if not self.args.raw:
                await self._wsnb_handshake()
            await self._pings()
            for text in self.args.send:
                await self._send(text)
            await self._close()
            self.report["ok"] = True
            return EXIT_OK
        except ProbeFailed as exc:
            return self._fail(exc)
        finally:
            if self.reader is not None:
                self.reader.cancel()
                with contextlib.suppress(BaseException):
                    await self.reader
            if self.ws is not None:
                self.ws.transport.abort()
            if self.args.json:
                print(json.dumps(self.report, indent=2), file=self.out, flush=True)

    def _fail(self, exc: ProbeFailed) -> int:
        code = EXIT_CODES.get(exc.kind, 1)
        self.report["error"] = {"kind": exc.kind, "message": exc.message, "exit_code": code}
        if not self.report["states"] or self.report["states"][-1]["state"] != "CLOSED":
            self.state("CLOSED", exc.kind)
        _err("probe", exc.message)
        return code

    def _ssl(self) -> ssl_module.SSLContext | None:
        if urlsplit(self.args.url).scheme.lower() != "wss":
            if self.args.cafile or self.args.insecure:
                raise ProbeFailed("handshake", "--cafile/--insecure are for wss:// URLs")
            return None
        if self.args.insecure:
            context = ssl_module.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
            return context
        try:
            return ssl_module.create_default_context(cafile=self.args.cafile)
        except (OSError, ssl_module.SSLError) as exc:
            raise ProbeFailed("tls", f"TLS: cannot load --cafile: {exc}") from None

    async def _connect(self) -> None:
        from websockets.asyncio.client import ClientConnection, connect

        from wsnb._secret import TRANSPORT_LOGGER

        args = self.args
        made: list[Any] = []
        connected_at: list[float] = []

        class Recording(ClientConnection):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                made.append(self)

            def connection_made(self, transport: Any) -> None:
                connected_at.append(time.monotonic())
                super().connection_made(transport)

        self.say(f"probe {_masked(args.url)} ({self.report['mode']} mode)")
        self.state("CONNECTING")
        context = self._ssl()
        try:
            self.ws = await connect(
                args.url, ssl=context, open_timeout=args.timeout, ping_interval=None,
                close_timeout=min(args.timeout, 5), origin=args.origin,  # type: ignore[arg-type]
                subprotocols=args.subprotocol,
                compression=None if args.no_compression else "deflate",
                max_size=None if args.raw else 64 << 20, user_agent_header="wsnb-probe",
                proxy=None, logger=TRANSPORT_LOGGER, create_connection=Recording)
        except Exception as exc:
            if made and getattr(made[-1], "request", None) is not None:
                self._show_request(made[-1].request)
            response = getattr(exc, "response", None)
            if response is not None:
                self._show_response(response)
            raise classify(exc, args.url, args.timeout,
                           "upgrade" if connected_at else "connect") from None
        if connected_at:
            t = round((connected_at[0] - self.t0) * 1000, 3)
            self.report["tcp_connected_ms"] = t
        self._show_request(self.ws.request)
        self._show_response(self.ws.response)
        extensions = self.ws.response.headers.get_all("Sec-WebSocket-Extensions")
        self.report["subprotocol"] = self.ws.subprotocol
        self.report["extensions"] = extensions
        self.say(f"  subprotocol: {self.ws.subprotocol or '(none)'}; extensions: "
                 f"{', '.join(extensions) or '(none)'}")
        self.state("OPEN", "HTTP 101 Switching Protocols")
        self.reader = asyncio.ensure_future(self._read())

    def _show_request(self, request: Any) -> None:
        self.report["request"] = {"method": "GET", "path": _path(request.path),
                                  "headers": _headers(request.headers)}
        self.say(f"> GET {_path(request.path)} HTTP/1.1")
        for name, value in self.report["request"]["headers"]:
            self.say(f"> {name}: {value}")

    def _show_response(self, response: Any) -> None:
        self.report["response"] = {"status": response.status_code,
                                   "reason": response.reason_phrase,
                                   "headers": _headers(response.headers)}
        self.say(f"< HTTP/1.1 {response.status_code} {response.reason_phrase}")
        for name, value in self.report["response"]["headers"]:
            self.say(f"< {name}: {value}")

    async def _read(self) -> None:
        """Keep reading so control frames flow; answer wsnb pings; queue the rest."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                if not self.args.raw and isinstance(raw, str) and '"ping"' in raw:
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        frame = json.loads(raw)
                        if isinstance(frame, dict) and frame.get("type") == "ping":
                            await self.ws.send(json.dumps({"type": "pong", "ts": frame["ts"]}))
                            continue
                await self.frames.put(raw)

    async def _next_frame(self, what: str) -> str | bytes:
        """The next queued frame, or ProbeFailed if the server closes or is silent."""
        getter = asyncio.ensure_future(self.frames.get())
        assert self.reader is not None
        done, _ = await asyncio.wait({getter, self.reader}, timeout=self.args.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.reader in done:
            raise self._closed_by_server(what)
        raise ProbeFailed("timeout", f"timeout: no {what} within {self.args.timeout:g} s")

    def _closed_by_server(self, what: str) -> ProbeFailed:
        code = self.ws.close_code
        reason = self.ws.close_reason or ""
        self.state("CLOSING", "by the server")
        text = _words(code, reason)
        self.report["close"] = {"code": code, "reason": reason, "text": text, "by": "server"}
        self.state("CLOSED", text)
        return ProbeFailed("closed", f"server closed the connection before {what}: {text}")

    async def _wsnb_handshake(self) -> None:
        hello = {"type": "handshake", "v": 1, "token": self.args.token, "session": None,
                 "last_seen": 0, "features": ["chunk", "z", "upto"]}
        await self.ws.send(json.dumps(hello))
        while True:
            try:
                raw = await self._next_frame("wsnb handshake_ack")
            except ProbeFailed as exc:
                if exc.kind == "timeout":
                    exc.kind = "protocol"
                    exc.message += " (not a wsnb server? use --raw)"
                raise
            frame = _json_object(raw)
            kind = frame.get("type") if frame else None
            if kind == "handshake_ack":
                break
            if kind == "error":
                raise ProbeFailed("protocol", f"server refused the handshake: "
                                              f"{frame.get('code')}: {frame.get('reason')}")
            if kind not in ("ping", "pong"):
                raise ProbeFailed("protocol", f"expected handshake_ack, got {_preview(raw)} "
                                              "(not a wsnb server? use --raw)")
        session = str(frame.get("session", ""))
        info = {"session": session[:8] + "…", "resumed": frame.get("resumed"),
                "heartbeat_ms": frame.get("heartbeat_ms"), "max_size": frame.get("max_size")}
        self.report["handshake"] = info
        self.state("READY", f"session {info['session']} heartbeat {info['heartbeat_ms']} ms "
                            f"max_size {info['max_size']}")

    async def _pings(self) -> None:
        if self.args.count <= 0:
            return
        rtts = self.report["rtt_ms"]
        for i in range(self.args.count):
            start = time.monotonic()
            try:
                waiter = await self.ws.ping()
            except Exception:
                raise self._closed_by_server("the pings") from None
            assert self.reader is not None
            done, _ = await asyncio.wait({waiter, self.reader}, timeout=self.args.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                if self.reader in done:
                    raise self._closed_by_server("the pings")
                raise ProbeFailed("timeout", f"timeout: no pong to ping {i + 1} within "
                                             f"{self.args.timeout:g} s (server ignores pings?)")
            rtts.append(round((time.monotonic() - start) * 1000, 3))
        self.say(f"  rtt: {len(rtts)} ping(s): min {min(rtts):.3f} / avg "
                 f"{sum(rtts) / len(rtts):.3f} / max {max(rtts):.3f} ms")

    async def _send(self, text: str) -> None:
        msg_id = len(self.report["sent"]) + 1
        start = time.monotonic()
        if self.args.raw:
            await self.ws.send(text)
            reply = await self._next_frame(f"reply to --send #{msg_id}")
            entry = {"id": msg_id, "reply": _preview(reply), "ms": _since(start)}
            self.say(f"  sent #{msg_id}; reply after {entry['ms']:.1f} ms: {entry['reply']}")
        else:
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            frame = {"type": "msg", "v": 1, "id": msg_id, "ts": int(time.time() * 1000),
                     "z": 0, "d": payload}
            await self.ws.send(json.dumps(frame, separators=(",", ":")))
            while True:
                answer = _json_object(await self._next_frame(f"ack for --send #{msg_id}"))
                kind = answer.get("type") if answer else None
                acked = kind == "ack" and (answer.get("id") == msg_id or (
                    isinstance(answer.get("upto"), int) and answer["upto"] >= msg_id))
                if acked or (kind == "nack" and answer.get("id") == msg_id):
                    break
            entry = {"id": msg_id, "answer": kind, "ms": _since(start)}
            if kind == "nack":
                entry["refused"] = f"{answer.get('code')}: {answer.get('reason')}"
            self.say(f"  sent #{msg_id}: {kind} after {entry['ms']:.1f} ms"
                     + (f" ({entry['refused']})" if kind == "nack" else ""))
        self.report["sent"].append(entry)

    async def _close(self) -> None:
        self.state("CLOSING", "1000 by the probe")
        await self.ws.close(1000, "probe done")
        code, reason = self.ws.close_code, self.ws.close_reason or ""
        text = _words(code, reason)
        self.report["close"] = {"code": code, "reason": reason, "text": text, "by": "probe"}
        self.state("CLOSED", text)
        if code != 1000:
            raise ProbeFailed("closed", f"closing handshake did not complete: {text}")


def _words(code: int | None, reason: str) -> str:
    """`describe_close`, without repeating a reason that only restates the code's words."""
    from wsnb.client import CLOSE_CODES, describe_close

    if reason and reason.lower() in CLOSE_CODES.get(code or 0, "").lower():
        reason = ""
    return describe_close(code, reason)


def _since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 3)


def _json_object(raw: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _preview(raw: str | bytes, limit: int = 120) -> str:
    if isinstance(raw, bytes):
        return f"<{len(raw)} bytes binary>"
    return repr(raw[:limit]) + ("…" if len(raw) > limit else "")


def _masked(url: str) -> str:
    from wsnb._secret import masked_url

    return masked_url(url)


def cmd_probe(args: argparse.Namespace) -> int:
    from wsnb.client import check_url

    try:
        check_url(args.url)
    except (TypeError, ValueError) as exc:
        _err("probe", str(exc).replace(args.url, _masked(args.url)))
        return EXIT_USAGE
    if args.count < 0 or not args.timeout > 0:
        _err("probe", "--count must be >= 0 and --timeout > 0")
        return EXIT_USAGE
    return asyncio.run(Probe(args, sys.stdout).run())


# ----- timeline ------------------------------------------------------------------------


def cmd_timeline(args: argparse.Namespace) -> int:
    import pandas as pd

    from wsnb import har

    path = Path(args.file)
    try:
        timeline = har.read_timeline(path)
    except FileNotFoundError:
        _err("timeline", f"no such file: {path}")
        return 1
    except (ValueError, KeyError, ImportError, OSError) as exc:
        _err("timeline", f"cannot read {path}: {exc}")
        return 1
    if args.to:
        target = Path(args.output) if args.output else path.with_suffix(
            {"csv": ".csv", "parquet": ".parquet", "har": ".har"}[args.to])
        if target.resolve() == path.resolve():
            _err("timeline", f"refusing to overwrite the input {path}; pass -o OUT")
            return EXIT_USAGE
        try:
            har.write_timeline(timeline, target, args.to, url=args.url)
        except (ImportError, OSError, ValueError) as exc:
            _err("timeline", f"cannot write {target}: {exc}")
            return 1
        print(f"wrote {len(timeline)} events to {target} ({args.to})")
        return EXIT_OK
    df = timeline.events()
    if args.type:
        wanted = [t.strip() for t in args.type.split(",") if t.strip()]
        df = df[df["type"].isin(wanted)]
    counts = {k: v for k, v in timeline.counts().items() if v and k != "dropped_events"}
    print(f"{path}: {len(timeline)} events; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    shown = df if args.last <= 0 else df.tail(args.last)
    if len(shown) < len(df):
        print(f"(last {len(shown)} of {len(df)} rows; --last 0 prints all)")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 60):
        print(shown.to_string(index=False) if len(shown) else "(no events)")
    return EXIT_OK


# ----- soak ----------------------------------------------------------------------------

SOAK_MESSAGES = 10_000


def tally(got: list[int], n: int) -> tuple[int, int, int, int]:
    """``(delivered, lost, duplicated, out_of_order)`` for ids ``0..n-1`` arrived as `got`.

    Out of order: a first arrival of an id below one already seen.
    """
    seen: set[int] = set()
    duplicated = out_of_order = 0
    top = -1
    for i in got:
        if i in seen:
            duplicated += 1
            continue
        seen.add(i)
        if i < top:
            out_of_order += 1
        else:
            top = i
    delivered = sum(1 for i in seen if 0 <= i < n)
    return delivered, n - delivered, duplicated, out_of_order


def cmd_soak(args: argparse.Namespace) -> int:
    import random

    if args.messages < 1 or args.cuts < 0 or args.blackholes < 0 or not args.seconds > 0:
        _err("soak", "--messages must be >= 1, --cuts and --blackholes >= 0, --seconds > 0")
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    return asyncio.run(_soak(args, seed, sys.stdout))


async def _soak(args: argparse.Namespace, seed: int, out: TextIO) -> int:
    import random

    from wsnb.client import Client, ReadyState
    from wsnb.progress import POLL_INTERVAL, progress
    from wsnb.protocol.backoff import Backoff
    from wsnb.proxy import FaultProxy
    from wsnb.server import Server

    n = args.messages
    plan = ["cut"] * args.cuts + ["blackhole"] * args.blackholes + ["restart"] * args.restart
    random.Random(seed).shuffle(plan)
    # Fault k lands when the client has sent (k + 1) / (faults + 1) of its messages: both
    # senders stop there until it is applied, so every fault hits mid-traffic.
    marks = [n * (k + 1) // (len(plan) + 1) for k in range(len(plan))]
    reached = [asyncio.Event() for _ in plan]
    applied = [asyncio.Event() for _ in plan]
    faults = dict.fromkeys(("cut", "blackhole", "restart"), 0)
    down: list[int] = []  # server -> client ids, in arrival order
    started = time.monotonic()
    deadline = started + args.seconds
    error = ""
    bar = progress(2 * n, "soak", enabled=False if args.no_progress else None, unit="msg")
    async with Server(port=0, token="soak", heartbeat_ms=100) as srv, \
            FaultProxy(srv.url) as proxy:
        client = Client(proxy.url, token="soak", backoff=Backoff(base=0.01, cap=0.1))
        session: str | None = None

        async def pause_at(i: int, k: int, *, lead: bool) -> int:
            while k < len(marks) and marks[k] == i:
                if lead:
                    reached[k].set()
                await applied[k].wait()
                k += 1
            return k

        async def send_up() -> None:
            k = 0
            for i in range(n):
                k = await pause_at(i, k, lead=True)
                await client.send({"c": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let the other direction interleave

        async def send_down() -> None:
            k = 0
            for i in range(n):
                k = await pause_at(i, k, lead=False)
                await srv.send(session, {"s": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)

        async def receive() -> None:
            for _ in range(n):
                down.append((await client.recv())["s"])

        async def chaos() -> None:
            before = client.reconnects
            for k, fault in enumerate(plan):
                await reached[k].wait()
                # on a link the client has not yet seen fail and replace, a fault is a no-op
                await client.wait_until(lambda c, after=before: c.ready and c.reconnects >= after,
                                        timeout=None)
                before = client.reconnects + 1
                if fault == "cut":
                    proxy.cut()
                    applied[k].set()
                elif fault == "blackhole":
                    proxy.blackhole()
                    applied[k].set()
                    await client.wait_until(lambda c: c.ready_state != ReadyState.OPEN,
                                            timeout=None)
                    proxy.restore()
                else:
                    applied[k].set()
                    await srv.restart(keep_sessions=True)
                faults[fault] += 1

        async def watch() -> None:  # the bar, at 10 Hz until the deadline
            while time.monotonic() < deadline:
                bar.update(len(srv.delivered) + len(down) - bar.n)
                bar.set_postfix_str(f"faults {sum(faults.values())}/{len(plan)}", refresh=False)
                await asyncio.sleep(POLL_INTERVAL)

        watcher = asyncio.ensure_future(watch())
        try:
            await client.connect(timeout=min(10.0, args.seconds))
            session = client.session_id
            await asyncio.wait_for(asyncio.gather(send_up(), send_down(), receive(), chaos()),
                                   max(0.0, deadline - time.monotonic()))
            await client.drain(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            error = f"timed out after {args.seconds:g} s"
        except Exception as exc:  # reported in the verdict, never a traceback
            error = f"{type(exc).__name__}: {exc}"
        finally:
            watcher.cancel()
            down.extend(m["s"] for m in list(client.inbox) if isinstance(m, dict) and "s" in m)
            up = [p["c"] for p in srv.delivered if isinstance(p, dict) and "c" in p]
            bar.update(len(up) + len(down) - bar.n)
            bar.close()
            resumed = session is not None and client.session_id == session
            reconnects = client.reconnects
            await client.close()
    took = time.monotonic() - started
    results = [tally(up, n), tally(down, n)]
    ok = not error and all(r[1:] == (0, 0, 0) for r in results)
    ways = "; ".join(f"{way} {d}/{n} delivered, {lost} lost, {dup} duplicated, {ooo} out of order"
                     for way, (d, lost, dup, ooo) in zip(("client->server", "server->client"),
                                                         results, strict=True))
    applied_faults = ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in faults.items())
    print(f"wsnb soak: {'PASS' if ok else 'FAIL'}: {ways}; faults {applied_faults}; "
          f"{reconnects} reconnects, session {'resumed' if resumed else 'NOT resumed'}; "
          f"{took:.1f} s, seed {seed}" + (f"; {error}" if error else ""), file=out, flush=True)
    return 0 if ok else 1
