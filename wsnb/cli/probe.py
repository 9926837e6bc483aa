"""``wsnb probe URL``: connect once like wscat/websocat and show everything that happened."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl as ssl_module
import sys
import time
from typing import Any, TextIO
from urllib.parse import urlsplit

from wsnb.cli._common import EXIT_CODES, EXIT_OK, EXIT_USAGE, err, header
from wsnb.failures import classify


def add_parser(sub: Any) -> None:
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
    probe.add_argument("--header", action="append", default=[], type=header,
                       metavar="NAME:VALUE", dest="headers",
                       help="an extra header for the upgrade request (repeatable); "
                            "values of Authorization, Cookie and token- or key-like headers "
                            "are never printed")
    probe.add_argument("--no-compression", action="store_true",
                       help="do not offer permessage-deflate")
    probe.add_argument("--cafile", help="trust this CA bundle (PEM) for wss://")
    probe.add_argument("--insecure", action="store_true",
                       help="wss:// without certificate verification")
    probe.add_argument("--json", action="store_true", help="one JSON object on stdout")
    probe.set_defaults(run=cmd_probe)


class ProbeFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_HIDDEN_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


def _hidden(name: str) -> bool:
    """Authorization, cookies and token- or key-like headers (not Sec-WebSocket-*)."""
    from wsnb._secret import _SECRET_PARAMS

    name = name.lower()
    return name in _HIDDEN_HEADERS or (not name.startswith("sec-websocket-") and any(
        word in name for word in _SECRET_PARAMS))


def _headers(headers: Any) -> list[list[str]]:
    items = []
    for name, value in headers.raw_items():
        if _hidden(name):
            value = "***"
        items.append([name, value])
    return items


def _path(path: str) -> str:
    base, sep, _ = path.partition("?")
    return base + ("?…" if sep else "")


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
        err("probe", exc.message)
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
                subprotocols=args.subprotocol, additional_headers=args.headers or None,
                compression=None if args.no_compression else "deflate",
                max_size=None if args.raw else 64 << 20, user_agent_header="wsnb-probe",
                proxy=None, logger=TRANSPORT_LOGGER, create_connection=Recording)
        except Exception as exc:
            if made and getattr(made[-1], "request", None) is not None:
                self._show_request(made[-1].request)
            response = getattr(exc, "response", None)
            if response is not None:
                self._show_response(response)
            failure = classify(exc, url=args.url, timeout=args.timeout,
                               phase="upgrade" if connected_at else "connect")
            raise ProbeFailed(failure.kind, failure.line) from None
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
        err("probe", str(exc).replace(args.url, _masked(args.url)))
        return EXIT_USAGE
    if args.count < 0 or not args.timeout > 0:
        err("probe", "--count must be >= 0 and --timeout > 0")
        return EXIT_USAGE
    return asyncio.run(Probe(args, sys.stdout).run())
