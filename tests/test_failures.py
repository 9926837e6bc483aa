"""`wsnb.failures.classify` against real causes on loopback (issue 10 point 5).

Each cause is met twice: through websockets' asyncio client (what ``wsnb probe``
and ``wsnb doctor`` use) and through the Sans-I/O path of `wsnb.transport`
(what `wsnb.Client` uses), so the exceptions both raise are covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve as ws_serve
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from wsnb.failures import KINDS, ConnectFailed, Failure, classify
from wsnb.transport import WebSocketProtocol

SECRETS = ("s3cret-PLANTED", "pw-PLANTED")
VIAS = ["websockets", "transport"]


def with_secrets(url: str) -> str:
    """`url` with credentials and a token in the query: none may reach a Failure."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://user:{SECRETS[1]}@{rest}feed?token={SECRETS[0]}&room=1"


async def attempt(via: str, url: str, timeout: float = 5.0,
                  context: ssl.SSLContext | None = None) -> Failure:
    """Open `url` the way `via` does; classify what that raised."""
    made: list[Any] = []
    if via == "websockets":
        class Recording(ClientConnection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        try:
            options: dict[str, Any] = {"ssl": context} if context is not None else {}
            ws = await connect(url, open_timeout=timeout, proxy=None,
                               create_connection=Recording, **options)
        except Exception as exc:
            phase = "upgrade" if made and getattr(made[-1], "transport", None) else "connect"
            return classify(exc, url=url, timeout=timeout, phase=phase)
        await ws.close()
        raise AssertionError("connected")
    # as wsnb.transport.connect does, without its own wording of the failure
    wsuri = parse_uri(url)

    def factory() -> WebSocketProtocol:
        # the transport's own open timer is longer here so that `timeout` is what runs out
        made.append(WebSocketProtocol(ClientProtocol(wsuri), lambda p: None,
                                      open_timeout=timeout + 5))
        return made[-1]

    tls = (context or ssl.create_default_context()) if wsuri.secure else None
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(loop.create_connection(
            factory, wsuri.host, wsuri.port, ssl=tls,
            server_hostname=wsuri.host if tls else None), timeout)
        await asyncio.wait_for(asyncio.shield(proto.opened), timeout)
    except Exception as exc:
        phase = "upgrade" if made and made[-1].transport is not None else "connect"
        return classify(exc, url=url, timeout=timeout, phase=phase)
    proto.abort()
    raise AssertionError("connected")


def assert_clean(failure: Failure) -> None:
    assert failure.kind in KINDS
    for text in (failure.text, failure.hint, failure.advice, failure.line, str(failure)):
        for secret in SECRETS:
            assert secret not in text, text
        assert "\n" not in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def plain_server(**kwargs: Any) -> AsyncIterator[str]:
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, **kwargs) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting its CA)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.mark.parametrize("via", VIAS)
async def test_refused_port(via: str) -> None:
    port = free_port()
    failure = await attempt(via, with_secrets(f"ws://127.0.0.1:{port}/"))
    assert failure.kind == "refused"
    assert failure.text == f"refused: nothing accepts connections on 127.0.0.1:{port}"
    assert "server running" in failure.hint and failure.status is None
    assert_clean(failure)


@pytest.mark.parametrize("via", VIAS)
async def test_unresolvable_name(via: str) -> None:
    failure = await attempt(via, with_secrets("ws://nonexistent.invalid:8765/"))
    assert failure.kind == "dns"
    assert failure.text.startswith("DNS: cannot resolve 'nonexistent.invalid': ")
    assert "host name" in failure.advice
    assert_clean(failure)


@pytest.mark.parametrize("via", VIAS)
async def test_silent_tcp_server_times_out_waiting_for_the_upgrade(via: str) -> None:
    with socket.socket() as silent:  # the kernel accepts; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        failure = await attempt(via, with_secrets(f"ws://127.0.0.1:{port}/"), timeout=0.3)
    assert failure.kind == "timeout"
    assert failure.text == "timeout: connected, but no HTTP 101 upgrade response within 0.3 s"
    assert_clean(failure)


def test_timeout_before_tcp_is_up() -> None:
    failure = classify(TimeoutError(), url="wss://10.255.255.1/", timeout=2, phase="connect")
    assert failure.kind == "timeout"
    assert failure.text == "timeout: no TCP/TLS connection to 10.255.255.1:443 within 2 s"
    assert "firewall" in failure.advice
    assert classify(TimeoutError(), url="ws://h/").text == "timeout: no WebSocket upgrade"


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("status", [403, 429])
async def test_http_refusal(via: str, status: int) -> None:
    def refuse(conn: Any, request: Any) -> Any:
        response = conn.respond(status, f"go away, {request.path}\n")
        if status == 429:
            response.headers["Retry-After"] = "60"
        return response

    async with plain_server(process_request=refuse) as url:
        failure = await attempt(via, with_secrets(url))
    assert failure.kind == "upgrade" and failure.status == status
    reason = {403: "Forbidden", 429: "Too Many Requests"}[status]
    assert failure.text.startswith(f"upgrade refused: HTTP {status} {reason}: go away, /feed?")
    assert_clean(failure)  # the body quoted the path and its token: scrubbed
    if status == 403:
        assert "Origin" in failure.advice and "--origin" in failure.hint
        assert not failure.throttled and failure.retry_after is None
    else:
        assert failure.throttled and failure.retry_after == "60"
        assert "backoff" in failure.advice and failure.hint == "retry after 60 s, with backoff"


@pytest.mark.parametrize("via", VIAS)
async def test_tls_server_reached_with_ws(via: str, tls: Any) -> None:
    async with plain_server(ssl=tls[0]) as url:
        failure = await attempt(via, with_secrets(url))
    assert failure.kind == "handshake"
    assert failure.text.startswith("handshake: no valid HTTP response")
    assert failure.hint == "is this a TLS server? try wss://"
    assert_clean(failure)


@pytest.mark.parametrize("via", VIAS)
async def test_plain_server_reached_with_wss(via: str) -> None:
    async with plain_server() as url:
        failure = await attempt(via, with_secrets(url.replace("ws://", "wss://")))
    assert failure.kind == "tls" and failure.text.startswith("TLS: ")
    assert "try ws://" in failure.hint
    assert_clean(failure)


@pytest.mark.parametrize("via", VIAS)
async def test_untrusted_certificate(via: str, tls: Any) -> None:
    async with plain_server(ssl=tls[0]) as url:
        url = url.replace("ws://", "wss://")
        failure = await attempt(via, with_secrets(url), context=ssl.create_default_context())
        assert failure.kind == "tls"
        assert failure.text.startswith("TLS: certificate verification failed: ")
        assert "--cafile" in failure.hint and "cafile=" in failure.advice
        assert_clean(failure)
        # trusted, the same server opens: nothing to classify
        ws = await connect(url, ssl=tls[1])
        await ws.close()


async def test_not_http_at_all() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        for via in VIAS:
            failure = await attempt(via, with_secrets(f"ws://127.0.0.1:{port}/"))
            assert failure.kind == "handshake", failure
            assert failure.text.startswith("handshake: no valid HTTP response")
            assert_clean(failure)


def test_invalid_url_never_quotes_it() -> None:
    url = f"ws://user:{SECRETS[1]}@host:99999/?token={SECRETS[0]}"
    failure = classify(InvalidURI(url, "port out of range"), url=url)
    assert failure.kind == "url" and failure.text == "invalid URL: port out of range"
    assert_clean(failure)
    # an exception whose words quote the URL is scrubbed too
    failure = classify(OSError(f"cannot reach {url}"), url=url)
    assert failure.kind == "network" and "***" in failure.text
    assert_clean(failure)


def test_other_errors_and_connect_failed() -> None:
    url = "ws://127.0.0.1:1/"
    reset = classify(ConnectionResetError(104, "Connection reset by peer"), url=url,
                     phase="upgrade")
    assert reset.kind == "network"
    assert reset.text == "network: Connection reset by peer during the upgrade (127.0.0.1:1)"
    tls_reset = classify(ConnectionResetError(104, "reset"), url="wss://h:1/", phase="connect")
    assert tls_reset.kind == "tls" and "try ws://" in tls_reset.hint
    several = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
                      "[Errno 111] Connect call failed ('127.0.0.1', 1)")
    assert classify(several, url="ws://localhost:1/").kind == "refused"
    odd = classify(RuntimeError("boom"), url=url)
    assert odd.kind == "network" and odd.text == "network: RuntimeError: boom (127.0.0.1:1)"
    failure = classify(ConnectionRefusedError(), url=url)
    raised = ConnectFailed(failure)
    assert str(raised) == failure.text and raised.kind == "refused" and raised.hint
    assert classify(raised, url="ws://other/") is failure
    assert failure.line == f"{failure.text} ({failure.hint})" == str(failure)


def test_status_headers_and_redirects() -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    moved = InvalidStatus(Response(302, "Found", Headers({"Location": "wss://x/?token=t"}), b""))
    failure = classify(moved, url="ws://h/")
    assert failure.kind == "upgrade" and failure.status == 302
    assert failure.text == "upgrade refused: HTTP 302 Found" and "Location" in failure.advice
    teapot = InvalidStatus(Response(418, "I'm a teapot", Headers(), b"x" * 500))
    failure = classify(teapot, url="ws://h/")
    assert failure.text.endswith("…") and len(failure.text) < 200
    assert failure.advice == "the server refused the WebSocket upgrade"
