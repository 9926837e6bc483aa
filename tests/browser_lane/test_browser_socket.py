"""BrowserSocket in headless Chromium against loopback servers: the browser's own semantics.

A plain `websockets` echo server shows what the page really put on the wire;
`wsnb.Server` shows how wsnb's protocol meets a bare browser socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from lane_helpers import EchoServer

import wsnb
from wsnb.browser import (
    BrowserSocket,
    BrowserUnavailable,
    InvalidAccessError,
    InvalidStateError,
    NotOpened,
    SyntaxErr,
)
from wsnb.client import ReadyState
from wsnb.protocol import envelope

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

Make = Callable[..., BrowserSocket]

# The article's own code, verbatim: send() in the same task as new WebSocket().
ARTICLE_SNIPPET = "const socket = new WebSocket(url); socket.send('x')"
COUNTED_SNIPPET = """
const socket = new WebSocket(url);
let errors = 0;
socket.onerror = () => { errors++; };
try { socket.send('too early'); } catch (e) { console.log(e.name); }
socket.onopen = () => { console.log('open, onerror fired ' + errors + ' times'); socket.close(); };
socket.onclose = (e) => console.log('close ' + e.code + ' wasClean=' + e.wasClean);
"""


def rows(sock: BrowserSocket, peer: str | None = None) -> list[tuple[str, str, str]]:
    """(type, state, detail) of the timeline, for one peer (the socket's name by default)."""
    df = sock.timeline.events()
    df = df[df["peer"] == (peer or sock.name)]
    return [(str(t), str(s), str(d)) for t, s, d in zip(df["type"], df["state"], df["detail"],
                                                        strict=True)]


async def test_send_before_open_raises_invalid_state_error(echo: EchoServer, make_sock: Make
                                                           ) -> None:
    echo.hold_handshakes()  # the page stays CONNECTING until released
    sock = make_sock(echo.url)
    await sock.start()
    assert sock.ready_state is ReadyState.CONNECTING
    with pytest.raises(InvalidStateError, match="CONNECTING") as info:
        await sock.send("too early")
    assert info.value.name == "InvalidStateError"
    assert sock.error_events == 0  # the DOMException is thrown, onerror does not fire
    echo.release_handshakes()
    await sock.connect()
    await sock.send("on time")
    assert await sock.next_message() == "on time"
    assert echo.received == ["on time"]  # the early send never reached the wire
    assert sock.error_events == 0
    dropped = [d for t, _s, d in rows(sock) if t == "dropped"]
    assert dropped and "InvalidStateError" in dropped[0]
    assert not [r for r in rows(sock) if r[0] == "error"]


async def test_article_snippet_verbatim(echo: EchoServer, make_sock: Make) -> None:
    sock = make_sock(echo.url)
    result = await sock.run_js(ARTICLE_SNIPPET)
    assert result.error_name == "InvalidStateError"
    assert isinstance(result.error, InvalidStateError)
    assert "CONNECTING" in result.error.message
    result = await sock.run_js(COUNTED_SNIPPET, until="closed", timeout=10)
    assert result.error is None
    assert result.console == ["InvalidStateError", "open, onerror fired 0 times",
                              "close 1005 wasClean=true"]
    assert result.sockets[0]["readyState"] == ReadyState.CLOSED
    assert (await sock.run_js("1 + 1")).result == 2
    assert any(t == "close" and "1005" in d for t, _s, d in rows(sock, "browser/js"))


async def test_send_after_close_is_discarded_while_buffered_amount_grows(
        echo: EchoServer, make_sock: Make) -> None:
    sock = make_sock(echo.url)
    await sock.connect()
    await sock.close(1000, "done")
    closed = await sock.wait_closed()
    assert (closed.code, closed.reason, closed.was_clean) == (1000, "done", True)
    assert sock.ready_state is ReadyState.CLOSED
    before = sock.buffered_amount
    await sock.send("abc")  # no exception: the browser discards it silently
    assert sock.buffered_amount == before + 3
    await sock.send(b"\x00" * 10)
    assert sock.buffered_amount == before + 13
    await sock.refresh()
    assert sock.buffered_amount == before + 13
    assert echo.received == []
    assert sock.error_events == 0
    dropped = [d for t, _s, d in rows(sock) if t == "dropped"]
    assert len(dropped) == 2 and "discarded silently" in dropped[0]


async def test_dict_goes_in_as_a_js_object(echo: EchoServer, make_sock: Make) -> None:
    sock = make_sock(echo.url)
    await sock.connect()
    await sock.send({"type": "hello", "n": 1})
    assert await sock.next_message() == "[object Object]"
    await sock.send([1, 2, 3])
    assert await sock.next_message() == "1,2,3"
    await sock.send(b"\x01\x02\xff")
    assert await sock.next_message() == b"\x01\x02\xff"
    assert echo.received == ["[object Object]", "1,2,3", b"\x01\x02\xff"]


async def test_http_url_is_accepted(echo: EchoServer, make_sock: Make) -> None:
    sock = make_sock(echo.http_url)
    await sock.connect()
    assert sock.ready_state is ReadyState.OPEN
    assert sock.page_url == echo.url  # the page resolved http: to ws:
    await sock.send("over http:")
    assert await sock.next_message() == "over http:"
    assert echo.headers[0]["upgrade"].lower() == "websocket"


async def test_refused_port_fires_error_then_close_1006(refused_port: int, make_sock: Make
                                                        ) -> None:
    sock = make_sock(f"ws://127.0.0.1:{refused_port}/")
    with pytest.raises(NotOpened) as info:
        await sock.connect()
    assert (info.value.code, info.value.was_clean) == (1006, False)
    assert sock.error_events == 1
    assert sock.ready_state is ReadyState.CLOSED
    kinds = [t for t, _s, _d in rows(sock)]
    assert kinds.index("error") < kinds.index("close")
    close = next(d for t, _s, d in rows(sock) if t == "close")
    assert close.startswith("1006 wasClean=false")
    assert rows(sock)[-1][:2] == ("state", "CLOSED")


async def test_close_with_a_reserved_code_raises_invalid_access_error(
        echo: EchoServer, make_sock: Make) -> None:
    sock = make_sock(echo.url)
    await sock.connect()
    with pytest.raises(InvalidAccessError):
        await sock.close(1001)
    assert sock.ready_state is ReadyState.OPEN
    await sock.close(4000, "bye")
    assert (await sock.wait_closed()).code == 4000


async def test_subprotocol_and_extensions_are_mirrored(make_sock: Make) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        await ws.send(f"protocol={ws.subprotocol}")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["chat.v2"]) as server:
        port = server.sockets[0].getsockname()[1]
        sock = make_sock(f"ws://127.0.0.1:{port}/", protocols=["chat.v1", "chat.v2"])
        await sock.connect()
        assert sock.protocol == "chat.v2"
        assert "permessage-deflate" in sock.extensions
        assert await sock.next_message() == "protocol=chat.v2"
        await sock.close()
        await sock.wait_closed()


async def test_a_url_the_browser_rejects_raises_its_syntax_error(make_sock: Make) -> None:
    sock = make_sock("ftp://127.0.0.1/")
    with pytest.raises(SyntaxErr) as info:
        await sock.connect()
    assert info.value.name == "SyntaxError"
    assert sock.ready_state is None  # no WebSocket was created


async def test_timeline_rows_sit_with_the_python_side(echo: EchoServer, make_sock: Make) -> None:
    timeline = wsnb.Timeline()
    sock = make_sock(echo.url, timeline=timeline, name="chromium")
    assert sock.timeline is timeline
    await sock.connect()
    await sock.send("row")
    await sock.next_message()
    await sock.close()
    await sock.wait_closed()
    async with wsnb.Server(port=0, token="demo", timeline=timeline) as server:
        other = make_sock(server.url, timeline=timeline, name="chromium-2")
        await other.connect()
        await other.send(envelope.handshake_frame("demo"))
        await other.next_message()
        await other.close()
        await other.wait_closed()
    df = timeline.events()
    assert {"chromium", "chromium-2"} <= set(df["peer"])
    assert len(set(df["peer"])) > 2  # the server's own rows are in the same frame
    mine = rows(sock)
    states = [s for t, s, _d in mine if t == "state"]
    assert states == ["HEADLESS", "CONNECTING", "OPEN", "CLOSING", "CLOSED"]
    assert ("sent", "", "row") in mine and ("received", "", "row") in mine
    assert any(t == "close" and d.startswith("1005 wasClean=true") for t, _s, d in mine)


async def test_against_wsnb_server(make_sock: Make) -> None:
    async with wsnb.Server(port=0, token="demo") as server:
        early = make_sock(server.url)
        result = await early.run_js(ARTICLE_SNIPPET)
        assert result.error_name == "InvalidStateError"

        sock = make_sock(server.url)
        await sock.connect()
        await sock.send(envelope.handshake_frame("demo"))  # a str goes as a text frame
        ack = await sock.next_message()
        assert isinstance(ack, str) and '"handshake_ack"' in ack
        assert sock.error_events == 0

        naive = make_sock(server.url)
        await naive.connect()
        refused = server.refused_handshakes
        await naive.send({"type": "handshake", "token": "demo"})  # "[object Object]"
        closed = await naive.wait_closed()
        assert closed.code == 1002 and closed.was_clean
        assert server.refused_handshakes == refused + 1
        assert "bad handshake" in closed.reason, (closed, naive.messages)
        assert any(isinstance(m, str) and '"error"' in m for m in naive.messages)


async def test_where_it_runs_outside_a_notebook(echo: EchoServer, make_sock: Make,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrowserUnavailable, match="not inside an IPython kernel"):
        BrowserSocket(echo.url, headless=False)
    sock = make_sock(echo.url)
    await sock.connect()
    assert sock.mode == "headless" and "not inside a notebook" in sock.mode_reason
    info = await sock.page_info()
    assert "HeadlessChrome" in info["userAgent"]
    assert echo.headers[0]["origin"] == "null"  # an about:blank page, not a notebook's

    from wsnb.browser import _headless

    monkeypatch.setattr(_headless, "available", lambda: "Playwright for Python is not installed")
    with pytest.raises(BrowserUnavailable) as missing:
        await make_sock(echo.url).connect()
    assert "pip install playwright" in str(missing.value)
    assert "pip install anywidget" in str(missing.value)


async def test_works_from_another_loop_thread(echo: EchoServer) -> None:
    """Built outside any loop (a script's top level), used from asyncio.run in a thread."""
    def script() -> list[Any]:
        sock = BrowserSocket(echo.url)

        async def main() -> list[Any]:
            try:
                await sock.connect()
                await sock.send("from a thread")
                await sock.next_message()
                return sock.messages
            finally:
                await sock.aclose()

        return asyncio.run(main())

    assert await asyncio.to_thread(script) == ["from a thread"]
