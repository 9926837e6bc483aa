"""``wsnb serve``: the reference server in the foreground, or a plain WebSocket server.

``--echo`` and ``--raw`` run no wsnb protocol at all, for trying wscat,
websocat or a browser page: ``--echo`` sends every text and binary message
back unchanged, ``--raw`` prints (and with ``--record``, saves) what it
receives and answers nothing. Both answer WebSocket pings (websockets does)
and close every client with 1001 on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl as ssl_module
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from wsnb.cli._common import EXIT_OK, EXIT_USAGE, err, status_lines

CHAOS_KEYS = "drop=P (0..1: drop a frame and its TCP connection), reorder=N (N workers " \
             "process out of order), delay-ack=MS (hold acks back)"


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="run the reference server (or a plain echo/raw one) in the foreground",
        description="Run the wsnb reference server (with --echo or --raw: a plain WebSocket "
                    "server, no wsnb protocol, for wscat, websocat or a browser page) until "
                    "Ctrl-C or SIGTERM, which close every client with 1001. The first line "
                    "printed is the URL to connect to.")
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
    plain = serve.add_mutually_exclusive_group()
    plain.add_argument("--echo", action="store_true",
                       help="a plain WebSocket echo server, no wsnb protocol: every text or "
                            "binary message is sent back unchanged (for wscat, websocat, a "
                            "browser page)")
    plain.add_argument("--raw", action="store_true",
                       help="a plain WebSocket server, no wsnb protocol, that prints what it "
                            "receives and answers nothing (pings aside)")
    plain.add_argument("--echo-messages", action="store_true",
                       help="wsnb server: send every delivered message back to its session")
    serve.add_argument("--idle-timeout", type=float, metavar="S",
                       help="--echo/--raw: close a connection (1001) that sent nothing for S "
                            "seconds; every received byte counts, WebSocket pings included")
    serve.add_argument("--record", metavar="FILE",
                       help="--echo/--raw: append every received message to FILE as JSON "
                            "lines (time, connection, type, size, text or base64)")
    serve.add_argument("--subprotocol", action="append", metavar="NAME",
                       help="--echo/--raw: a subprotocol to accept when offered (repeatable)")
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
    serve.add_argument("--store", metavar="URL",
                       help="keep sessions in a store so they survive a restart or a crash: "
                            "sqlite:///abs/path.db or redis://host:port/db; every delivered "
                            "message is appended to its log (wsnb store dump URL)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="run N server processes on one port (SO_REUSEPORT; needs --store "
                            "so a client resumes on whichever it reaches); a worker that dies "
                            "is started again")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--seed", type=int, help="seed for chaos randomness")
    serve.add_argument("--status-interval", type=float, default=1.0, metavar="S",
                       help="refresh the status line every S seconds (default 1)")
    serve.add_argument("--quiet", action="store_true", help="no status line")
    serve.set_defaults(run=cmd_serve)


def _rate(text: str) -> tuple[int, float]:
    try:
        n, _, s = text.partition("/")
        rate = int(n), float(s or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS like 100/1, got {text!r}") from None
    if rate[0] < 1 or not rate[1] > 0:
        raise argparse.ArgumentTypeError(f"expected N >= 1 and SECONDS > 0, got {text!r}")
    return rate


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


#: Options of the wsnb server that a plain (--echo/--raw) server has no use for.
_WSNB_ONLY = {"chaos": "", "rate_limit": None, "throttle": None, "max_conns_per_token": None,
              "seed": None, "echo_messages": False, "heartbeat_ms": 15_000,
              "max_message": 64 << 20, "handshake_timeout": 5.0,
              "max_sessions_per_token": 1000, "store": None, "workers": 1}
#: Options of the plain servers only.
_PLAIN_ONLY = {"idle_timeout": None, "record": None, "subprotocol": None}


def cmd_serve(args: argparse.Namespace) -> int:
    plain = "echo" if args.echo else "raw" if args.raw else None
    mode = f"--{plain}" if plain else "the wsnb server (no --echo/--raw)"
    given = _WSNB_ONLY if plain else _PLAIN_ONLY
    wrong = [name for name, default in given.items() if getattr(args, name) != default]
    if wrong:
        names = ", ".join("--" + name.replace("_", "-") for name in wrong)
        err("serve", f"{names}: not an option of {mode}")
        return EXIT_USAGE
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        err("serve", "--idle-timeout must be > 0")
        return EXIT_USAGE
    try:
        chaos = parse_chaos(args.chaos)
        tls = _server_ssl(args)
        if args.store is not None:
            from wsnb.store import store_from_url

            store_from_url(args.store)  # a bad URL is a usage error, named
    except (ValueError, OSError) as exc:
        err("serve", str(exc))
        return EXIT_USAGE
    if args.workers < 1:
        err("serve", f"--workers must be >= 1, got {args.workers}")
        return EXIT_USAGE
    if args.workers > 1:
        if args.store is None or args.store.startswith("memory:"):
            err("serve", "--workers N needs --store sqlite:///… or redis://…: sessions must "
                         "be shared so a client can resume on any worker")
            return EXIT_USAGE
        from wsnb.cli.workers import supervise

        return asyncio.run(supervise(args, sys.stdout))
    if plain:
        from wsnb.cli.plain import serve_plain

        return asyncio.run(serve_plain(args, plain, tls, sys.stdout))
    return asyncio.run(_serve(args, chaos, tls, sys.stdout))


def _status(server: Any, delivered: int, rate: float) -> str:
    return (f"connections {len(server.connections)} · sessions {len(server.sessions)} · "
            f"delivered {delivered} ({rate:.1f}/s) · refused handshakes "
            f"{server.refused_handshakes}")


async def _serve(args: argparse.Namespace, chaos: dict[str, Any],
                 tls: ssl_module.SSLContext | None, out: TextIO) -> int:
    from wsnb.server import Server
    from wsnb.store import StoreError

    count = 0

    async def handler(session: Any, payload: Any) -> None:
        nonlocal count
        count += 1
        if args.echo_messages:
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
        timeline=_small_timeline(), store=args.store, log_delivered=args.store is not None,
        reuse_port=args.reuse_port, **chaos)
    async with stop_on_signals() as (stop, received):  # before the URL line: tests signal
        if args.reuse_port:  # a worker of `--workers N`: stop when the supervisor is gone
            asyncio.ensure_future(_stop_at_eof(stop, received))
        try:
            await server.start()
        except OSError as exc:
            err("serve", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
            return 1
        except StoreError as exc:
            err("serve", str(exc))
            return 1
        notes = [f"token {'required' if args.token else 'not required'}",
                 f"HMAC {'on' if args.secret else 'off'}",
                 f"heartbeat {args.heartbeat_ms} ms" if args.heartbeat_ms else "heartbeat off"]
        if args.chaos:
            notes.append(f"chaos {args.chaos}")
        if args.store:
            notes.append(f"store {server.store.url} (durable: {server.store.durable})")
        print(f"{server.url}  wsnb serve: {', '.join(notes)}; Ctrl-C stops (1001 to every "
              "client)", file=out, flush=True)
        if args.host not in ("127.0.0.1", "::1", "localhost") and not args.token:
            err("serve", f"warning: listening on {args.host} without a token: anyone who can "
                         "reach this port can connect")
        tty = out.isatty()
        try:
            await status_lines(stop, out, interval=args.status_interval, quiet=args.quiet,
                               count=lambda: count,
                               render=lambda rate: _status(server, count, rate))
            open_connections = len(server.connections)
            await server.close(1001, "server shutting down")
        except asyncio.CancelledError:
            if tty:
                out.write("\n")
            err("serve", "stopped without waiting for clients")
            return 130
    if tty and not args.quiet:
        out.write("\n")
    print(f"stopped ({', '.join(received) or 'done'}): closed {open_connections} connection(s) "
          f"with 1001 going away; {count} message(s) delivered", file=out, flush=True)
    return EXIT_OK


async def _stop_at_eof(stop: asyncio.Event, received: list[str]) -> None:
    """Set `stop` when standard input closes (the supervisor died, even by SIGKILL)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, ValueError):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.read(4096):
            pass
        received.append("supervisor gone")
        stop.set()


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[tuple[asyncio.Event, list[str]]]:
    """``(stop, received)``: `stop` is set on SIGINT or SIGTERM, whose names go to `received`.

    A second signal while stopping cancels the task that entered (stop waiting for clients).
    """
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
    try:
        yield stop, received
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _small_timeline() -> Any:
    from wsnb.timeline import Timeline

    return Timeline(10_000)  # the status line does not need history; keep memory flat
