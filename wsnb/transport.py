"""The one module that talks to `websockets`: its documented Sans-I/O layer on asyncio.

`WebSocketProtocol` is an `asyncio.Protocol` that feeds received bytes to a
websockets `ClientProtocol`/`ServerProtocol` (``receive_data``,
``events_received``) and writes what it asks (``data_to_send``), the
integration route websockets documents ("Integrate the Sans-I/O layer").
It hands complete messages and life signs to a `Handler` (wsnb's `Link`),
and gives the handler a small API to write text, ping and close. `connect`
and `serve` open client and server connections with it. Nothing here reads a
private attribute of websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as ssl_module
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from wsnb._secret import TRANSPORT_LOGGER
from wsnb.failures import classify

#: Seconds to wait for the peer to finish a closing handshake before dropping TCP.
CLOSE_TIMEOUT = 2.0
#: Redirects followed at most by `connect`.
MAX_REDIRECTS = 3


class Handler(Protocol):
    """What `WebSocketProtocol` tells the layer above (wsnb's `Link`)."""

    def on_open(self, ws: WebSocketProtocol) -> None: ...
    def on_life(self) -> None: ...
    def on_text(self, data: bytes) -> None: ...
    def on_binary(self, data: bytes) -> None: ...
    def on_pong(self, data: bytes) -> None: ...
    def on_writable(self) -> None: ...
    def on_input_done(self) -> None: ...
    def on_closed(self, code: int | None, reason: str, by_us: bool) -> None: ...


class UpgradeFailed(Exception):
    """The WebSocket upgrade did not complete; `status` is the HTTP status if any.

    The message never carries the URL (it may hold credentials or a token).
    """

    def __init__(self, message: str, status: int | None = None,
                 headers: Headers | None = None, tls: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.tls = tls


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection: bytes to websockets' Sans-I/O object and back."""

    def __init__(self, ws: ClientProtocol | ServerProtocol,
                 handler_for: Callable[[WebSocketProtocol], Handler | None],
                 *, process_request: Callable[[ServerProtocol, Request], Response | None]
                 | None = None, open_timeout: float = 10.0,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        self.ws = ws
        self.headers = headers
        self._handler_for = handler_for
        self.handler: Handler | None = None
        self.process_request = process_request
        self.open_timeout = open_timeout
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writable = True
        self.reading = True
        self.answer_pings = True  # False: a server that ignores pings (a doctor test target)
        self.close_frames = True  # False: a peer that drops TCP instead of closing cleanly
        self.close_code: int | None = None
        self.close_reason = ""
        self.peer = ""
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._by_us = False

    # --- what the handler reads ------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected, if any."""
        return self.ws.subprotocol

    @property
    def extensions(self) -> list[str]:
        """Negotiated extensions by name (e.g. ``permessage-deflate``)."""
        return [ext.name for ext in self.ws.extensions]

    @property
    def buffered(self) -> int:
        """Bytes handed to the transport and not yet sent to the network."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    # --- asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.open_timeout, self._open_timed_out)
        if isinstance(self.ws, ClientProtocol):
            self.request = self.ws.connect()
            for name, value in self.headers:
                self.request.headers[name] = value
            self.ws.send_request(self.request)
            self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        handler = self.handler
        if handler is not None:
            handler.on_life()
        events = ws.events_received()
        if not (self.answer_pings and self.close_frames):
            self._misbehave(events)
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Response):
                self._on_response(event)
        if self.handler is not None:
            self.handler.on_input_done()
        self._flush()

    def _misbehave(self, events: list[Any]) -> None:
        """Withhold automatic pongs, or answer a close by dropping TCP (knobs)."""
        closing = any(isinstance(e, Frame) and e.opcode is Opcode.CLOSE for e in events)
        pinged = any(isinstance(e, Frame) and e.opcode is Opcode.PING for e in events)
        if closing and not self.close_frames and self.transport is not None:
            self.ws.data_to_send()
            self.transport.abort()
        elif pinged and not self.answer_pings and self.ws.state is State.OPEN:
            self.ws.data_to_send()  # only the automatic pongs (a failure would be CLOSING)

    def _frame(self, frame: Frame) -> None:
        handler = self.handler
        if handler is None:
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragment_opcode, self._fragments = opcode, [bytes(frame.data)]
                return
            data = frame.data
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if not frame.fin or self._fragment_opcode is None:
                return
            opcode, data = self._fragment_opcode, b"".join(self._fragments)
            self._fragment_opcode, self._fragments = None, []
        elif opcode is Opcode.PONG:
            handler.on_pong(bytes(frame.data))
            return
        else:  # PING is answered by websockets itself; CLOSE is handled in connection_lost
            return
        if type(data) is not bytes:
            data = bytes(data)
        if opcode is Opcode.TEXT:
            handler.on_text(data)
        else:
            handler.on_binary(data)

    def _on_request(self, request: Request) -> None:
        ws = self.ws
        assert isinstance(ws, ServerProtocol)
        self.request = request
        response = self.process_request(ws, request) if self.process_request else None
        if response is None:
            response = ws.accept(request)
        response.headers["Server"] = "wsnb"
        self.response = response
        ws.send_response(response)
        self._flush()
        if ws.state is State.OPEN:
            self._opened()

    def _on_response(self, response: Response) -> None:
        self.response = response
        if self.ws.state is State.OPEN:
            self._opened()
        elif not self.opened.done():
            self.opened.set_exception(self.ws.handshake_exc or UpgradeFailed("upgrade failed"))
            self.opened.exception()  # retrieved: `connect` reports it

    def _opened(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.handler = self._handler_for(self)
        if self.handler is not None:
            self.handler.on_open(self)
        if not self.opened.done():
            self.opened.set_result(None)

    def _open_timed_out(self) -> None:
        if self.ws.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        ws = self.ws
        if ws.state is not State.CLOSED:
            ws.receive_eof()
        closed = ws.close_exc
        code: int | None = None
        reason = ""
        if closed.rcvd is not None:
            code, reason = closed.rcvd.code, closed.rcvd.reason
        elif closed.sent is not None:
            code, reason = closed.sent.code, closed.sent.reason
            self._by_us = True
        if code == 1005:
            code = 1000 if closed.sent is not None and closed.sent.code == 1005 else code
        self.close_code, self.close_reason = code, reason
        if not self.opened.done():
            self.opened.set_exception(ws.handshake_exc or exc or ConnectionError(
                "connection closed during the upgrade"))
            self.opened.exception()
        if self.handler is not None:
            self.handler.on_closed(code, reason, self._by_us)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.handler is not None:
            self.handler.on_writable()

    # --- commands ---------------------------------------------------------------

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        data = self.ws.data_to_send()
        if data:
            if data[-1] == b"":
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write(b"".join(data[:-1]))
                    if transport.can_write_eof():
                        transport.write_eof()
            else:
                transport.write(b"".join(data) if len(data) > 1 else data[0])
        if self.ws.close_expected() and self._timer is None and not transport.is_closing():
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def send(self, frames: Sequence[str | bytes]) -> None:
        """Write text frames (bytes in a list count as binary)."""
        ws = self.ws
        if ws.state is not State.OPEN:
            return
        for frame in frames:
            if isinstance(frame, str):
                ws.send_text(frame.encode())
            else:
                ws.send_binary(frame)
        self._flush()

    def send_text_bytes(self, frames: Sequence[bytes]) -> None:
        """Write text frames already encoded as UTF-8."""
        ws = self.ws
        if ws.state is not State.OPEN:
            return
        for frame in frames:
            ws.send_text(frame)
        self._flush()

    def ping(self, data: bytes) -> None:
        """A WebSocket-level ping (its pong comes back through `Handler.on_pong`)."""
        if self.ws.state is State.OPEN:
            self.ws.send_ping(data)
            self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; TCP is dropped if the peer does not finish it."""
        if self.ws.state is State.OPEN and not self.close_frames:
            self.abort()
        elif self.ws.state is State.OPEN:
            self._by_us = True
            self.ws.send_close(code, reason[:120])
            self._flush()
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop TCP now, without a closing handshake (dead link, cut)."""
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.reading and self.transport is not None and not self.transport.is_closing():
            self.reading = True
            self.transport.resume_reading()


# ----- client -----------------------------------------------------------------


@dataclass(frozen=True)
class ConnectOptions:
    """How a client opens its connection (headers, subprotocols, TLS, limits)."""

    ssl: ssl_module.SSLContext | None = None
    headers: Sequence[tuple[str, str]] = ()
    subprotocols: Sequence[str] = ()
    origin: str | None = None
    compression: bool = False
    max_size: int | None = 1 << 20
    open_timeout: float = 10.0
    user_agent: str = "wsnb"


def _describe_status(response: Response) -> str:
    return f"upgrade refused: HTTP {response.status_code} {response.reason_phrase}".rstrip()


async def connect(url: str, handler_for: Callable[[WebSocketProtocol], Handler | None],
                  options: ConnectOptions) -> WebSocketProtocol:
    """Open a WebSocket to `url`, following up to `MAX_REDIRECTS` redirects.

    Raises `UpgradeFailed` (never carrying the URL) when the upgrade does not
    complete: refused status, TLS failure, timeout, or an unusable redirect.
    """
    loop = asyncio.get_running_loop()
    for _ in range(MAX_REDIRECTS + 1):
        try:
            wsuri = parse_uri(url)
        except InvalidURI:
            raise UpgradeFailed("not a valid ws:// or wss:// URL") from None
        ws = ClientProtocol(
            wsuri, origin=Origin(options.origin) if options.origin else None,
            extensions=[ClientPerMessageDeflateFactory()] if options.compression else None,
            subprotocols=[Subprotocol(p) for p in options.subprotocols] or None,
            max_size=options.max_size, logger=TRANSPORT_LOGGER)

        headers = [("User-Agent", options.user_agent), *options.headers]

        def factory(ws: ClientProtocol = ws,
                    headers: list[tuple[str, str]] = headers) -> WebSocketProtocol:
            return WebSocketProtocol(ws, handler_for, open_timeout=options.open_timeout,
                                     headers=headers)

        ssl: ssl_module.SSLContext | None = None
        if wsuri.secure:
            ssl = options.ssl or ssl_module.create_default_context()
        deadline = time.monotonic() + options.open_timeout
        proto: WebSocketProtocol | None = None
        try:
            _, opened = await asyncio.wait_for(loop.create_connection(
                factory, wsuri.host, wsuri.port, ssl=ssl,
                server_hostname=wsuri.host if ssl else None), options.open_timeout)
            proto = opened
            await asyncio.wait_for(asyncio.shield(opened.opened),
                                   max(0.0, deadline - time.monotonic()))
        except InvalidStatus as exc:
            response = exc.response
            if response.status_code in (301, 302, 303, 307, 308):
                url = _follow(url, response)
                continue
            raise _failed(exc, url, options, proto) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if proto is not None:
                proto.abort()
            raise _failed(exc, url, options, proto) from None
        return opened
    raise UpgradeFailed(f"more than {MAX_REDIRECTS} redirects")


def _follow(url: str, response: Response) -> str:
    """The next URL of a redirect, or `UpgradeFailed` when it cannot be followed."""
    status = response.status_code
    location = response.headers.get("Location")
    if location is None:
        raise UpgradeFailed(f"HTTP {status} redirect without a Location", status)
    new_url = urljoin(url, location)
    if urlsplit(new_url).scheme not in ("ws", "wss") or "#" in new_url:
        raise UpgradeFailed(f"HTTP {status} redirect to an address that is not a WebSocket "
                            "URL (ws:// or wss://, no #fragment)", status)
    if urlsplit(url).scheme == "wss" and urlsplit(new_url).scheme == "ws":
        raise UpgradeFailed("redirect from wss:// to ws:// refused", status)
    return new_url


def _failed(exc: BaseException, url: str, options: ConnectOptions,
            proto: WebSocketProtocol | None) -> UpgradeFailed:
    """`UpgradeFailed` from the one failure classifier (`wsnb.failures`)."""
    failure = classify(exc, url=url, timeout=options.open_timeout,
                       phase="upgrade" if proto is not None else "connect")
    headers = exc.response.headers if isinstance(exc, InvalidStatus) else None
    return UpgradeFailed(failure.line, failure.status, headers, tls=failure.kind == "tls")


# ----- server -----------------------------------------------------------------


async def serve(handler_for: Callable[[WebSocketProtocol], Handler | None], host: str,
                port: int, *, ssl: ssl_module.SSLContext | None = None,
                max_size: int | None = 1 << 20,
                process_request: Callable[[ServerProtocol, Request], Response | None]
                | None = None, open_timeout: float = 10.0, backlog: int = 4096,
                subprotocols: Sequence[str] | None = None, compression: bool = False,
                reuse_port: bool = False) -> asyncio.Server:
    """Listen on `host`:`port`; each upgraded connection gets a handler from `handler_for`."""
    def factory() -> WebSocketProtocol:
        ws = ServerProtocol(
            max_size=max_size, logger=TRANSPORT_LOGGER,
            subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
            extensions=[ServerPerMessageDeflateFactory()] if compression else None)
        return WebSocketProtocol(ws, handler_for, process_request=process_request,
                                 open_timeout=open_timeout)

    loop = asyncio.get_running_loop()
    kwargs: dict[str, Any] = {}
    if reuse_port and hasattr(os, "sched_getaffinity"):
        kwargs["reuse_port"] = True
    return await loop.create_server(factory, host, port, ssl=ssl, backlog=backlog, **kwargs)
