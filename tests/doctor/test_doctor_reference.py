"""wsnb.doctor against servers with one planted problem each, and against non-wsnb servers.

Third-party servers (Node ws, uvicorn, aiohttp, python-socketio, nginx) are in
test_doctor_third_party.py.

Every server is on loopback; budgets are about a second, the size cap 256 KiB.
Each planted problem must be found, and nothing else may be reported as a
problem ("no false alarms").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

import wsnb
from wsnb.doctor import CHECKS, COLUMNS, Finding, Report, adoctor, cli_main, parse_bytes
from wsnb.loop import background_loop

CAP = 256 * 1024
BUDGET = 1.0
QUIET = logging.getLogger("tests.doctor.servers")  # handlers that end abruptly log tracebacks
QUIET.setLevel(logging.CRITICAL)


async def check(url: str, **kwargs: Any) -> Report:
    kwargs.setdefault("budget_s", BUDGET)
    kwargs.setdefault("max_size_cap", CAP)
    return await adoctor(url, **kwargs)


def problems(report: Report) -> set[tuple[str, str]]:
    return {(r.check, r.item) for r in report.rows if r.severity in ("warning", "error")}


def one(report: Report, check: str, item: str) -> Finding:
    rows = report.get(check, item)
    assert len(rows) == 1, (check, item, report.summary())
    return rows[0]


class Plain:
    """A bare `websockets` server on loopback running `handler`."""

    def __init__(self, handler: Callable[[ServerConnection], Awaitable[None]],
                 **kwargs: Any) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.received: list[Any] = []

    async def __aenter__(self) -> str:
        self.server = await serve(self.handler, "127.0.0.1", 0, logger=QUIET, **self.kwargs)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


# ----- the reference server, healthy and with each misbehaviour ----------------------------


async def test_healthy_reference_server_has_no_problems() -> None:
    calls: list[tuple[str, float, str]] = []
    async with wsnb.Server(port=0, heartbeat_ms=200) as srv:
        report = await check(srv.url, progress=lambda *a: calls.append(a))
    assert report.ok, report.summary()
    assert problems(report) == set()
    assert report.checks == list(CHECKS)
    assert {report.severity(c) for c in CHECKS} == {"ok"}, report.summary()
    facts = report.facts
    assert facts["protocol"] == "wsnb" and facts["wsnb_heartbeat_ms"] == 200
    assert facts["status"] == 101 and facts["server"] == "wsnb"
    assert facts["pings_answered"] == 20 and facts["ping_p99_ms"] < 500
    assert facts["idle_timeout_s"] is None and facts["idle_survived_s"] >= BUDGET - 0.05
    assert 0.1 < facts["app_heartbeat_interval_s"] < 0.4  # the server's wsnb pings, 200 ms
    assert facts["max_message_bytes"] is None and facts["max_message_accepted_bytes"] == CAP
    assert facts["size_bytes_sent"] <= 8 * CAP + (1 << 20) and facts["size_probes"] <= 48
    assert facts["close_code_back"] == 1000
    assert facts["reconnects_accepted"] == 5 and facts["reconnect_outcome"] == "accepted"
    assert report.duration_s < BUDGET + 2
    assert report.exit_code == 0
    # progress: every check starts at 0 and ends at 1, never going backwards
    for name in CHECKS:
        fractions = [f for c, f, _ in calls if c == name]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0, name
        assert fractions == sorted(fractions), name
    # the three views
    frame = report.findings
    assert list(frame.columns) == COLUMNS and len(frame) == len(report.rows)
    assert set(frame["check"]) == set(CHECKS)
    assert report.problems.empty
    text = report.summary()
    assert "no problems found" in text and "Problems:" not in text
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["facts"]["protocol"] == "wsnb"
    assert len(data["findings"]) == len(report.rows)
    html = report._repr_html_()
    assert "#16a34a" in html and "#d97706" not in html and "<table" in html


@pytest.mark.parametrize("code", [1001, None])
async def test_short_idle_timeout_is_found_with_its_close_code(code: int | None) -> None:
    async with wsnb.Server(port=0, heartbeat_ms=0, idle_timeout=0.5,
                           idle_close_code=code) as srv:
        report = await check(srv.url, budget_s=2.0)
    assert problems(report) == {("idle", "idle timeout")}, report.summary()
    assert 0.4 <= report.facts["idle_timeout_s"] <= 1.0
    assert report.facts["idle_close_code"] == (code or 1006)
    row = one(report, "idle", "idle timeout")
    assert row.severity == "warning"
    assert ("1001 going away" in row.result) if code else ("without a close frame" in row.result)
    assert "heartbeat more often than every" in row.advice
    assert report.exit_code == 1
    assert "[warning] idle / idle timeout" in report.summary()
    assert "#d97706" in report._repr_html_()


async def test_small_max_size_is_found_exactly_with_1009() -> None:
    async with wsnb.Server(port=0, max_size=16 * 1024) as srv:
        report = await check(srv.url)
    assert problems(report) == {("size", "max text message")}, report.summary()
    facts = report.facts
    assert facts["max_message_bytes"] == 16 * 1024
    assert facts["max_message_refused_bytes"] == 16 * 1024 + 1
    assert facts["size_close_code"] == 1009
    row = one(report, "size", "max text message")
    assert "1009 message too big" in row.result and "small limit" in row.advice


async def test_server_that_ignores_pings() -> None:
    async with wsnb.Server(port=0, answer_pings=False) as srv:
        report = await check(srv.url)
    assert problems(report) == {("liveness", "WebSocket pings"), ("liveness", "wsnb ping")}
    assert one(report, "liveness", "WebSocket pings").severity == "error"
    assert report.facts["pings_answered"] == 0
    # the size check does without pongs
    assert report.facts["max_message_accepted_bytes"] == CAP


@pytest.mark.parametrize("checks", ["liveness,size", "size"])
async def test_size_limit_without_pongs(checks: str) -> None:
    # with liveness first the doctor knows; alone, the size check finds out from its 1st probe
    async with wsnb.Server(port=0, answer_pings=False, max_size=16 * 1024) as srv:
        report = await check(srv.url, checks=checks)
    assert report.facts["max_message_bytes"] == 16 * 1024
    assert report.facts["size_close_code"] == 1009


async def test_server_without_close_frames() -> None:
    async with wsnb.Server(port=0, close_frames=False) as srv:
        report = await check(srv.url)
    assert problems(report) == {("close", "close handshake")}, report.summary()
    row = one(report, "close", "close handshake")
    assert "dropped TCP" in row.result and row.value == 1006
    assert report.facts["close_code_back"] is None


async def test_throttled_reconnects() -> None:
    # the doctor's earlier checks use about seven connections; quick reconnects go beyond nine
    async with wsnb.Server(port=0, throttle=(9, 60.0)) as srv:
        report = await check(srv.url)
    assert problems(report) == {("reconnect", "quick reconnects")}, report.summary()
    assert report.facts["reconnect_outcome"] == "throttled"
    assert report.facts["reconnects_accepted"] < 5
    row = one(report, "reconnect", "quick reconnects")
    assert "HTTP 429" in row.result and row.value == 429
    assert "backoff" in row.advice


async def test_wrong_token_is_reported_and_other_checks_skip() -> None:
    async with wsnb.Server(port=0, token="demo") as srv:
        refused = await check(srv.url, token="nope", checks="protocol,liveness,size")
        accepted = await check(srv.url, token="demo", checks="protocol,liveness,size")
    assert problems(refused) == {("protocol", "speaks")}
    assert "4401" in one(refused, "protocol", "speaks").result
    assert refused.severity("liveness") == "skipped" and refused.severity("size") == "skipped"
    assert accepted.ok, accepted.summary()
    assert "nope" not in refused.to_json() and "demo" not in accepted.to_json()


# ----- servers that do not speak wsnb ----------------------------------------------------


async def test_bare_websockets_echo_server() -> None:
    plain = Plain(echo, max_size=100_000, ping_interval=0.25)  # compression on by default
    async with plain as url:
        report = await check(url)
    assert report.ok, report.summary()
    facts = report.facts
    assert facts["protocol"] == "echo/raw" and facts["echo"] is True
    assert "permessage-deflate" in facts["extensions"]
    compression = one(report, "handshake", "compression").result
    assert compression.startswith("permessage-deflate negotiated (")
    assert "client_max_window_bits" in compression
    assert "Python/" in facts["server"]
    assert 0.15 < facts["server_ping_interval_s"] < 0.5  # websockets' own keepalive
    # not a power of two: bisected to within 1/512, then the round number in between tried
    assert facts["max_message_bytes"] == 100_000
    assert facts["max_message_refused_bytes"] == 100_001
    assert facts["size_probes"] <= 24
    assert facts["size_close_code"] == 1009
    assert one(report, "size", "max text message").severity == "info"  # a sane limit
    assert facts["close_code_back"] == 1000 and facts["reconnects_accepted"] == 5


async def test_echo_server_that_ignores_close_and_pings() -> None:
    async def mute(ws: ServerConnection) -> None:
        from websockets.frames import Opcode

        send = ws.protocol.send_frame

        def filtered(frame: Any) -> None:
            if frame.opcode is Opcode.PONG:
                return
            if frame.opcode is Opcode.CLOSE:
                ws.transport.abort()
                return
            send(frame)

        ws.protocol.send_frame = filtered  # type: ignore[method-assign]
        await echo(ws)

    async with Plain(mute, max_size=32 * 1024, compression=None) as url:
        report = await check(url, checks="liveness,size,close")
    assert problems(report) == {("liveness", "WebSocket pings"), ("size", "max text message"),
                                ("close", "close handshake")}, report.summary()
    assert report.facts["max_message_bytes"] == 32 * 1024  # found from the echoes alone


async def test_oversize_answered_without_1009_is_a_warning() -> None:
    async def brittle(ws: ServerConnection) -> None:
        async for message in ws:  # no frame limit: it just crashes on big messages
            if len(message) > 20_000:
                ws.transport.abort()
                return
            await ws.send(message)

    async with Plain(brittle, max_size=None) as url:
        report = await check(url, checks="size")
    assert problems(report) == {("size", "max text message")}
    assert report.facts["max_message_bytes"] == 20_000 and report.facts["size_close_code"] == 1006
    assert "not 1009" in one(report, "size", "max text message").advice


async def test_reconnects_refused_with_4429_after_accepting() -> None:
    opened = 0

    async def bouncer(ws: ServerConnection) -> None:
        nonlocal opened
        opened += 1
        if opened > 6:  # the doctor's first connections pass, quick reconnects do not
            await ws.close(4429, "too many connections; retry after 5 s")
            return
        await echo(ws)

    async with Plain(bouncer) as url:
        report = await check(url, checks="reconnect")
    assert problems(report) == {("reconnect", "quick reconnects")}, report.summary()
    assert report.facts["reconnect_outcome"] == "throttled"
    assert report.facts["reconnects_accepted"] < 5
    assert one(report, "reconnect", "quick reconnects").value == 4429


class Recorder:
    def __init__(self) -> None:
        self.got: list[str] = []


async def _socketio(ws: ServerConnection, rec: Recorder) -> None:
    await ws.send('0{"sid":"s1","upgrades":[],"pingInterval":200,"pingTimeout":200,'
                  '"maxPayload":1000000}')

    async def pinger() -> None:
        while True:  # Engine.IO v4: the server pings every pingInterval
            await asyncio.sleep(0.2)
            await ws.send("2")

    task = asyncio.ensure_future(pinger())
    try:
        async for message in ws:
            rec.got.append(message)
            if message == "40":
                await ws.send('40{"sid":"n1"}')
    finally:
        task.cancel()


async def _graphql(ws: ServerConnection, rec: Recorder) -> None:
    async for message in ws:
        rec.got.append(message)
        kind = json.loads(message)["type"]
        if kind == "connection_init":
            await ws.send('{"type":"connection_ack"}')
        elif kind == "ping":
            await ws.send('{"type":"pong"}')
        else:
            await ws.close(4400, f"unknown message type {kind}")


async def _signalr(ws: ServerConnection, rec: Recorder) -> None:
    first = await ws.recv()
    if first != '{"protocol":"json","version":1}\x1e':
        await ws.close(1002, "expected a handshake")
        return
    await ws.send("{}\x1e")
    async for message in ws:
        rec.got.append(message)


async def _json_api(ws: ServerConnection, rec: Recorder) -> None:
    async for message in ws:  # a JSON API of its own: complains about anything it does not know
        rec.got.append(message)
        await ws.send(json.dumps({"type": "error", "message": "unknown command"}))


@pytest.mark.parametrize(("name", "handler", "options"), [
    ("socket.io", _socketio, {}),
    ("graphql-transport-ws", _graphql, {"subprotocols": ["graphql-transport-ws"]}),
    ("signalr", _signalr, {}),
    ("plain", _json_api, {}),  # its "error" frames must not pass for wsnb's
])
async def test_recognises_other_protocols(name: str, handler: Any, options: Any) -> None:
    rec = Recorder()
    async with Plain(lambda ws: handler(ws, rec), **options) as url:
        report = await check(url, checks="handshake,protocol,liveness,size")
    assert report.facts["protocol"] == name, report.summary()
    assert report.ok, report.summary()
    assert report.facts["max_message_accepted_bytes"] == CAP  # probes the protocol ignores
    if name == "socket.io":
        assert report.facts["engineio_ping_interval_ms"] == 200
        assert 0.1 < report.facts["app_heartbeat_interval_s"] < 0.4
        assert "3" in rec.got  # the doctor answered the server's pings, like a real client
    if name == "plain":
        assert report.facts["echo"] is False and report.facts["protocol"] == "plain"
    if name == "graphql-transport-ws":  # refused without a subprotocol, then accepted
        assert one(report, "handshake", "subprotocol").result.startswith("required: HTTP 400")
        assert one(report, "liveness", "graphql-ws ping").severity == "ok"


async def test_a_server_that_takes_any_subprotocol_is_not_graphql() -> None:
    # like Node's ws: it accepts the first subprotocol offered; a JSON API that answers
    # connection_init with its own error is no graphql server, and nothing fails
    def first(conn: ServerConnection, offered: Any) -> Any:
        return offered[0] if offered else None

    rec = Recorder()
    async with Plain(lambda ws: _json_api(ws, rec), select_subprotocol=first) as url:
        report = await check(url)
    assert report.ok, report.summary()
    assert report.facts["protocol"] == "plain" and report.facts["echo"] is False
    assert report.facts["reconnects_accepted"] == 5


async def test_an_echoed_greeting_is_never_a_failed_greeting() -> None:
    # the user asks for graphql-ws; an echo server takes it and sends connection_init back
    def first(conn: ServerConnection, offered: Any) -> Any:
        return offered[0] if offered else None

    async with Plain(echo, select_subprotocol=first) as url:
        report = await check(url, subprotocols=["graphql-ws"])
    assert report.ok, report.summary()
    assert report.facts["protocol"] == "echo/raw"
    assert report.facts["reconnect_outcome"] == "accepted"


def test_close_frame_before_a_reset_keeps_its_code() -> None:
    """A server sends close 1009 then resets TCP; our next write meets the reset first.

    asyncio then drops the connection without reading what is queued: without
    the probe connection's salvage this reads as 1006. The server thread and
    the blocked loop make the order certain: close frame and RST are both in
    the kernel before the client writes.
    """
    import base64
    import hashlib
    import socket
    import struct
    import threading

    from websockets.asyncio.client import connect

    from wsnb.doctor.probe import _ProbeConnection

    go, done = threading.Event(), threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            go.wait(10)
            reason = b"message too big"
            conn.sendall(bytes([0x88, 2 + len(reason)]) + struct.pack("!H", 1009) + reason)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        done.set()  # closed with linger 0: a reset follows the close frame

    async def client() -> tuple[int | None, bool]:
        ws = await connect(f"ws://127.0.0.1:{listener.getsockname()[1]}", ping_interval=None,
                           compression=None, create_connection=_ProbeConnection)
        assert isinstance(ws, _ProbeConnection)
        ws.transport.write(b"\x89\x80" + b"\x00" * 4)  # unread by the server: RST on close
        go.set()
        assert done.wait(10)  # the loop is blocked: the client reads nothing meanwhile
        with contextlib.suppress(Exception):
            await ws.ping()  # meets the reset
        await ws.wait_closed()
        return ws.close_code, ws.close_rcvd_at is not None

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        code, noted = asyncio.run(client())
    finally:
        thread.join(10)
        listener.close()
    assert code == 1009 and noted


async def test_headers_subprotocols_and_origin_reach_the_server(
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []

    def note(conn: ServerConnection, request: Any) -> None:
        seen.append(request.headers)

    async with Plain(echo, process_request=note, subprotocols=["chat"]) as url:
        report = await check(url, checks="handshake,close", headers={"X-Team": "blue"},
                             subprotocols=["chat"], origin="http://notebook.test")
        assert report.ok and report.facts["subprotocol"] == "chat", report.summary()
        assert all(h["X-Team"] == "blue" and h["Origin"] == "http://notebook.test"
                   and h["Sec-WebSocket-Protocol"] == "chat" for h in seen)
        seen.clear()
        code = await asyncio.to_thread(cli_main, [
            url, "--checks", "handshake", "--json", "--header", "X-Team: red",
            "--header", "Authorization:Bearer t0ken", "--subprotocol", "chat",
            "--subprotocol", "other", "--origin", "http://cli.test"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["facts"]["subprotocol"] == "chat"
    assert seen and all(h["X-Team"] == "red" and h["Authorization"] == "Bearer t0ken"
                        and h["Origin"] == "http://cli.test"
                        and h["Sec-WebSocket-Protocol"] == "chat, other" for h in seen)
    assert cli_main(["ws://127.0.0.1:1", "--header", "no-colon"]) == 2


# ----- TLS, refusals, arguments ------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA, days: float | None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    not_after = (None if days is None else
                 datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days))
    cert = ca.issue_cert("127.0.0.1", not_after=not_after)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_tls_version_subject_and_expiry(ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_pair(ca, days=None)
    async with wsnb.Server(port=0, ssl=server_ctx) as srv:
        report = await check(srv.url, ssl=client_ctx, checks="handshake,close")
        untrusted = await check(srv.url, checks="handshake,close")
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # still shows the certificate, marked unverified
        unverified = await check(srv.url, ssl=insecure, checks="handshake")
    assert report.ok, report.summary()
    assert report.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert "127.0.0.1" in report.facts["cert_subject"] and report.facts["cert_days_left"] > 14
    assert report.facts["close_code_back"] == 1000
    assert untrusted.exit_code == 3
    assert "certificate verification failed" in one(untrusted, "handshake", "connect").result
    assert untrusted.severity("close") == "skipped"
    assert unverified.ok and unverified.facts["cert_subject"].endswith("(not verified)")

    server_ctx, client_ctx = tls_pair(ca, days=5)
    async with wsnb.Server(port=0, ssl=server_ctx) as srv:
        soon = await check(srv.url, ssl=client_ctx, checks="handshake")
    assert problems(soon) == {("handshake", "certificate expiry")}
    assert 3 < soon.facts["cert_days_left"] < 6


async def test_unreachable_and_refused_upgrades() -> None:
    async with wsnb.Server(port=0) as srv:
        url = srv.url
    down = await check(url)
    assert down.exit_code == 3 and "refused: nothing accepts connections" in down.rows[0].result
    assert {down.severity(c) for c in CHECKS if c != "handshake"} == {"skipped"}

    def forbid(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(403, "no\n")

    async with Plain(echo, process_request=forbid) as base:
        report = await check(base + "/feed?token=s3cret")
    row = one(report, "handshake", "connect")
    assert row.value == 403 and row.severity == "error" and "Origin" in row.advice
    assert "s3cret" not in report.to_json() and "s3cret" not in report.summary()


async def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        await adoctor("ws://127.0.0.1:1", checks="handshake,bogus")
    with pytest.raises(ValueError, match="budget_s"):
        await adoctor("ws://127.0.0.1:1", budget_s=0)
    with pytest.raises(ValueError, match="max_size_cap"):
        await adoctor("ws://127.0.0.1:1", max_size_cap=10)
    with pytest.raises(ValueError, match="use ws://"):
        await adoctor("http://127.0.0.1:1")
    assert parse_bytes("4MiB") == 4 << 20 and parse_bytes("256k") == 256 << 10
    assert parse_bytes("1000") == 1000


# ----- sync use: wsnb.doctor, the CLI and the panel (servers on wsnb's loop thread) ----------


@pytest.fixture
def thread_server() -> Any:
    made: list[wsnb.Server] = []

    def make(**kwargs: Any) -> wsnb.Server:
        server = wsnb.Server(port=0, loop="thread", **kwargs)
        asyncio.run_coroutine_threadsafe(server.start(), background_loop()).result(5)
        made.append(server)
        return server

    yield make
    for server in made:
        asyncio.run_coroutine_threadsafe(server.close(), background_loop()).result(5)


def test_sync_doctor_and_cli(thread_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    srv = thread_server(max_size=16 * 1024)
    report = wsnb.doctor(srv.url, checks="size,close", max_size_cap=CAP)
    assert isinstance(report, wsnb.Report) and report.facts["max_message_bytes"] == 16 * 1024

    assert cli_main([srv.url, "--checks", "close,reconnect", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and [f["check"] for f in data["findings"]] == ["close", "reconnect"]

    assert cli_main([srv.url, "--checks", "size", "--max-size-cap", "64KiB"]) == 1
    out = capsys.readouterr().out
    assert "Problems:" in out and "16 KiB" in out and "max text message" in out

    assert cli_main([srv.url, "--checks", "nope"]) == 2
    assert "unknown check" in capsys.readouterr().err
    assert cli_main(["--budget"]) == 2


def test_doctor_panel_bars_follow_the_checks(thread_server: Any) -> None:
    srv = thread_server(heartbeat_ms=0, idle_timeout=0.4)
    panel = wsnb.DoctorPanel(srv.url, budget_s=BUDGET, max_size_cap=CAP)
    values: list[float] = []
    panel.bars["idle"].observe(lambda change: values.append(change["new"]), names="value")
    try:
        report = panel.result(timeout=20)
        assert panel.done and panel.report is report
        assert problems(report) == {("idle", "idle timeout")}, report.summary()
        assert all(bar.value == 1.0 for bar in panel.bars.values())
        assert panel.bars["idle"].bar_style == "warning"
        assert panel.bars["handshake"].bar_style == "success"
        assert "warning" in panel.labels["idle"].value
        assert "idle timeout" in panel.table.value and "1 problem" in panel.status_label.value
        assert values[-1] == 1.0  # set through trait changes
        assert "[warning] idle / idle timeout" in panel.text_summary()
    finally:
        panel.close()
    shown = wsnb.DoctorPanel(report)
    assert shown.done and shown.bars["idle"].bar_style == "warning"
    assert shown.static_html() == report._repr_html_()
    shown.close()


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    yield
    # nothing of the doctor may outlive a run (reader tasks, idle watchers)
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks(loop) if t is not current and not t.done()
            and "_Conn._read" in repr(t.get_coro())]
    assert not left, left
