"""The websockets boundary (`wsnb.transport`): upgrade, redirects, fragments, pings, closes.

Peers are real `websockets` servers and clients on loopback; CI runs this file
with the lowest supported websockets too, so it is what tells us when the
documented Sans-I/O API we rely on moved.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from wsnb.transport import ConnectOptions, UpgradeFailed, WebSocketProtocol, connect


class Recorder:
    """A `Handler` that keeps what arrives."""

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self.binaries: list[bytes] = []
        self.pongs: list[bytes] = []
        self.closed: tuple[int | None, str, bool] | None = None
        self.lives = 0
        self.changed = asyncio.Event()

    def on_open(self, ws: WebSocketProtocol) -> None:
        self.ws = ws

    def on_life(self) -> None:
        self.lives += 1

    def on_text(self, data: bytes) -> None:
        self.texts.append(data)
        self.changed.set()

    def on_binary(self, data: bytes) -> None:
        self.binaries.append(data)
        self.changed.set()

    def on_pong(self, data: bytes) -> None:
        self.pongs.append(data)
        self.changed.set()

    def on_writable(self) -> None:
        pass

    def on_input_done(self) -> None:
        pass

    def on_closed(self, code: int | None, reason: str, by_us: bool) -> None:
        self.closed = (code, reason, by_us)
        self.changed.set()

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


async def test_fragments_joined_pings_answered_and_close_code_read() -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["headers"] = ws.request.headers if ws.request else None
        await ws.send(["frag", "mented"])  # one message in three frames
        await ws.send(b"\x00\x01")
        async for message in ws:
            if message == "bye":
                await ws.close(4000, "done")

    async with serve(handler, "127.0.0.1", 0, subprotocols=["chat.v1"]) as server:
        port = server.sockets[0].getsockname()[1]
        rec = Recorder()
        ws = await connect(f"ws://127.0.0.1:{port}", lambda _: rec, ConnectOptions(
            headers=[("Authorization", "Bearer t0k")], subprotocols=["chat.v1"],
            origin="http://example.test"))
        assert ws.subprotocol == "chat.v1"
        await rec.until(lambda: rec.texts and rec.binaries)
        assert rec.texts == [b"fragmented"] and rec.binaries == [b"\x00\x01"]
        assert seen["headers"]["Authorization"] == "Bearer t0k"
        assert seen["headers"]["Origin"] == "http://example.test"
        assert seen["headers"]["User-Agent"] == "wsnb"
        ws.ping(b"p1")
        await rec.until(lambda: rec.pongs)
        assert rec.pongs == [b"p1"] and rec.lives >= 1
        ws.send(["bye"])
        await rec.until(lambda: rec.closed is not None)
        assert rec.closed == (4000, "done", False)


async def test_redirects_are_followed_and_bad_ones_named() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as target:
        tport = target.sockets[0].getsockname()[1]

        def moved(connection: ServerConnection, request: Any) -> Response:
            location = (f"ws://127.0.0.1:{tport}/" if request.path == "/ok"
                        else "http://127.0.0.1/elsewhere")
            return Response(302, "Found", Headers([("Location", location),
                                                   ("Content-Length", "0")]))

        async with serve(echo, "127.0.0.1", 0, process_request=moved) as redirector:
            rport = redirector.sockets[0].getsockname()[1]
            rec = Recorder()
            ws = await connect(f"ws://127.0.0.1:{rport}/ok", lambda _: rec, ConnectOptions())
            ws.send(["hi"])
            await rec.until(lambda: rec.texts)
            assert rec.texts == [b"hi"]
            ws.abort()
            with pytest.raises(UpgradeFailed, match="not a WebSocket URL") as info:
                await connect(f"ws://u:secret@127.0.0.1:{rport}/bad?token=T", lambda _: None,
                              ConnectOptions())
            assert info.value.status == 302
            assert "secret" not in str(info.value) and "token" not in str(info.value)


async def test_refused_status_timeout_and_no_listener_are_upgrade_failures() -> None:
    def refuse(connection: ServerConnection, request: Any) -> Response:
        return connection.respond(403, "no\n")

    async with serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=refuse) as srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(UpgradeFailed, match="HTTP 403") as info:
            await connect(f"ws://127.0.0.1:{port}", lambda _: None, ConnectOptions())
        assert info.value.status == 403
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    async with silent:
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(UpgradeFailed, match="no HTTP 101 upgrade response within"):
            await connect(f"ws://127.0.0.1:{port}", lambda _: None,
                          ConnectOptions(open_timeout=0.3))
    with pytest.raises(UpgradeFailed, match="refused"):
        await connect(f"ws://127.0.0.1:{port}", lambda _: None, ConnectOptions())
