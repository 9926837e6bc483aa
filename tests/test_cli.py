"""The ``wsnb`` command line, run as subprocesses against servers on 127.0.0.1 (issue 6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

import wsnb
from wsnb import cli

CLI = [sys.executable, "-m", "wsnb"]
DATA = Path(__file__).parent / "data"
HELLO = {"type": "handshake", "v": 1, "session": None, "last_seen": 0}
ENV = {k: v for k, v in os.environ.items() if k not in ("WSNB_TOKEN", "WSNB_SECRET")}


async def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None
                  ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or ENV)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Serve:
    """``wsnb serve --port 0 ...`` in a subprocess; `url` comes from its first line."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, first: str) -> None:
        self.proc = proc
        self.url = url
        self.lines = [first]

    async def line(self, timeout: float = 20) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise EOFError("wsnb serve exited")
        self.lines.append(raw.decode())
        return self.lines[-1]

    async def wait_for_line(self, pattern: str, limit: int = 400) -> str:
        for _ in range(limit):  # bounded: one status line per interval at most
            line = await self.line()
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {self.lines[-5:]}")

    async def stop(self, signum: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(signum)
        out, err = await asyncio.wait_for(self.proc.communicate(), 20)
        self.lines.append(out.decode())
        assert self.proc.returncode is not None
        return self.proc.returncode, "".join(self.lines), err.decode()


@contextlib.asynccontextmanager
async def serving(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Serve]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", "--status-interval", "0.1", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or ENV)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not first:
            assert proc.stderr is not None
            raise AssertionError(f"serve did not start: {(await proc.stderr.read()).decode()}")
        match = re.match(r"(wss?://\S+)", first)
        assert match, first
        yield Serve(proc, match.group(1), first)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def handshaken(url: str, token: str | None = None, **kwargs):
    ws = await connect(url, ping_interval=None, **kwargs)
    await ws.send(json.dumps({**HELLO, "token": token}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "handshake_ack"
    return ws


def saw_1001(client: wsnb.Client) -> bool:
    """The client was closed with 1001 (it may be reconnecting, with another code, since)."""
    closes = client.timeline.states()
    return closes["detail"].str.startswith("1001 going away").any()


# ----- serve ---------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_serve_stops_cleanly_with_1001(signum, make_client) -> None:
    async with serving("--token", "T", "--heartbeat-ms", "0") as srv:
        assert srv.url.startswith("ws://127.0.0.1:")
        ws = await handshaken(srv.url, "T")
        client = make_client(srv.url, token="T")
        await client.connect(timeout=10)
        await (await client.send({"n": 1})).wait(10)
        await srv.wait_for_line(r"connections 2 · sessions 2 · delivered 1 ")
        code, output, err = await srv.stop(signum)
        assert code == 0, err
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1001 and ws.close_reason == "server shutting down"
        await client.wait_until(saw_1001, timeout=10)
        assert f"stopped ({signal.Signals(signum).name}): closed 2 connection(s) with 1001" \
            in output
        assert "Traceback" not in err


async def test_serve_chaos_still_delivers_everything_once(make_client) -> None:
    async with serving("--chaos", "drop=0.02,reorder=4,delay-ack=20", "--seed", "7",
                       "--heartbeat-ms", "0") as srv:
        assert "chaos drop=0.02,reorder=4,delay-ack=20" in srv.lines[0]
        client = make_client(srv.url, token=None)
        await client.connect(timeout=10)
        for i in range(300):
            await client.send({"i": i})
        await client.drain(timeout=60)
        line = await srv.wait_for_line(r"delivered 300 ")
        assert "delivered 300 " in line
        assert client.reconnects >= 1  # drop=0.02 over 300+ frames cut the connection
        code, _, err = await srv.stop()
        assert code == 0, err


def test_chaos_spec_parsing() -> None:
    assert cli.parse_chaos("drop=0.01,reorder=4,delay-ack=200") == {
        "drop_rate": 0.01, "workers": 4, "process_delay": (0.0, 0.002), "ack_delay": 0.2}
    assert cli.parse_chaos("") == {}
    with pytest.raises(ValueError, match="unsupported chaos key 'latency'"):
        cli.parse_chaos("latency=5")
    with pytest.raises(ValueError, match="bad chaos value 'drop=2'"):
        cli.parse_chaos("drop=2")


async def test_delay_ack_and_drop_knobs(make_client) -> None:
    async with wsnb.Server(port=0, heartbeat_ms=0, ack_delay=0.15) as srv:
        client = make_client(srv.url, token=None)
        await client.connect(timeout=5)
        receipts = [await client.send(i) for i in range(5)]
        for receipt in receipts:
            await receipt.wait(5)
        assert all(r.latency_ms >= 140 for r in receipts), [r.latency_ms for r in receipts]
        assert srv.delivered == list(range(5))
    async with wsnb.Server(port=0, heartbeat_ms=0, drop_rate=1.0) as srv:
        raw = await handshaken(srv.url)
        await raw.send('{"type":"ping","ts":1}')  # every frame after the handshake is lost
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(raw.recv(), 5)
        assert raw.close_code == 1006
        assert "dropped a frame and the connection (drop=1)" in srv.timeline.states()[
            "detail"].tolist()


async def test_serve_rejects_unsupported_chaos_and_busy_ports() -> None:
    code, out, err = await run_cli("serve", "--port", "0", "--chaos", "duplicate=0.1")
    assert code == 2 and "unsupported chaos key 'duplicate'" in err and not out
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out, err = await run_cli("serve", "--port", str(busy.getsockname()[1]))
    assert code == 1 and "cannot listen on 127.0.0.1:" in err and "Traceback" not in err


# ----- serve --echo / --raw: plain WebSocket servers (issue 11 point 7) ------------------


async def test_serve_echo_sends_back_text_and_binary_and_pings_are_life() -> None:
    async with serving("--echo", "--idle-timeout", "1") as srv:
        assert srv.url.startswith("ws://127.0.0.1:") and "no wsnb protocol" in srv.lines[0]
        # a stock client: its keepalive pings (every 0.2 s) are all it sends for 2.5 s
        async with connect(srv.url, ping_interval=0.2, ping_timeout=5) as ws:
            text, blob = "héllo ✓ " * 100, bytes(range(256)) * 40
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 10) == text
            await ws.send(blob)
            assert await asyncio.wait_for(ws.recv(), 10) == blob
            await asyncio.sleep(2.5)  # past the idle timeout: pings kept it alive
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 10) == "still here"
        silent = await connect(srv.url, ping_interval=None)  # sends nothing at all
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(silent.recv(), 10)
        took = asyncio.get_running_loop().time() - started
        assert silent.close_code == 1001 and silent.close_reason == "idle for 1 s"
        assert 0.8 < took < 5, took
        code, output, err = await srv.stop()
    assert code == 0, err
    assert "#1 closed by the client: 1000" in output and "#2 closed by the server: 1001" in output
    assert "3 message(s) received, 3 echoed" in output and "Traceback" not in err


async def test_serve_raw_records_and_answers_nothing_then_ctrl_c_closes(tmp_path) -> None:
    record = tmp_path / "frames.jsonl"
    token = "tok-PLANTED-aa11"
    async with serving("--raw", "--record", str(record), "--subprotocol", "chat",
                       env={**ENV, "WSNB_TOKEN": token}) as srv:
        assert "token not checked" in srv.lines[0]
        ws = await connect(srv.url + "?token=" + token, ping_interval=None,
                           subprotocols=["chat"])
        assert ws.subprotocol == "chat"
        await ws.send("hello raw")
        await ws.send(b"\x01\x02\xff")
        hello = f'{{"type":"handshake","token":"{token}"}}'
        await ws.send(hello)
        with pytest.raises(TimeoutError):  # a raw server answers nothing ...
            await asyncio.wait_for(ws.recv(), 0.5)
        await asyncio.wait_for(await ws.ping(), 5)  # ... but pongs (websockets does)
        await srv.wait_for_line(r"#1 text 9 B: 'hello raw'")
        await srv.wait_for_line(r"#1 binary 3 B: 01 02 ff")
        code, output, err = await srv.stop(signal.SIGINT)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1001 and ws.close_reason == "server shutting down"
    assert code == 0, err
    assert "stopped (SIGINT): closed 1 connection(s) with 1001 going away; 3 message(s) " \
        "received" in output
    assert "GET /?… (subprotocol chat" in output
    assert token not in output + err and "Traceback" not in err
    frames = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(f["conn"], f["type"], f["size"]) for f in frames] == [
        (1, "text", 9), (1, "binary", 3), (1, "text", len(hello))]
    assert frames[0]["text"] == "hello raw" and frames[1]["base64"] == "AQL/"
    assert token not in record.read_text()


async def test_serve_plain_and_wsnb_options_do_not_mix() -> None:
    code, out, err = await run_cli("serve", "--port", "0", "--echo", "--chaos", "drop=1")
    assert code == 2 and "--chaos: not an option of --echo" in err and not out
    code, _, err = await run_cli("serve", "--port", "0", "--idle-timeout", "5")
    assert code == 2 and "--idle-timeout: not an option of the wsnb server" in err
    code, _, err = await run_cli("serve", "--port", "0", "--echo", "--raw")
    assert code == 2 and "not allowed with argument" in err


# ----- probe ---------------------------------------------------------------------------


async def test_probe_wsnb_server_json() -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=0) as srv:
        code, out, err = await run_cli("probe", srv.url, "--token", "demo", "--count", "4",
                                       "--send", '{"hello": 1}', "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["ok"] and report["error"] is None and report["mode"] == "wsnb"
        assert report["response"]["status"] == 101
        assert ["Server", "wsnb"] in report["response"]["headers"]
        assert any(name == "Sec-WebSocket-Key" for name, _ in report["request"]["headers"])
        assert [s["state"] for s in report["states"]] == [
            "CONNECTING", "OPEN", "READY", "CLOSING", "CLOSED"]
        times = [s["t_ms"] for s in report["states"]]
        assert times == sorted(times)
        assert len(report["rtt_ms"]) == 4 and all(0 < r < 5000 for r in report["rtt_ms"])
        assert report["sent"][0]["answer"] == "ack"
        assert report["close"]["code"] == 1000 and report["close"]["text"].startswith(
            "1000 normal closure")
        assert report["handshake"]["max_size"] == srv.max_size
        assert srv.delivered == [{"hello": 1}]


async def test_probe_text_output_and_compression_negotiated() -> None:
    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, compression="deflate",
                        subprotocols=["chat"]) as plain:
        url = f"ws://127.0.0.1:{plain.sockets[0].getsockname()[1]}/room?key=abc"
        code, out, err = await run_cli("probe", url, "--raw", "--send", "hi there",
                                       "--subprotocol", "chat")
        assert code == 0, err
        assert "> GET /room?… HTTP/1.1" in out and "abc" not in out
        assert "< HTTP/1.1 101 Switching Protocols" in out
        assert "subprotocol: chat; extensions: permessage-deflate" in out
        assert re.search(r"rtt: 3 ping\(s\): min [\d.]+ / avg", out)
        assert "reply after" in out and "'hi there'" in out
        assert re.search(r"ms  CLOSED\s+1000 normal closure", out)
        # The same server is not a wsnb server: the probe says so and what to do.
        code, out, err = await run_cli("probe", url, "--timeout", "2")
        assert code == 6 and "HTTP 400 Bad Request" in err  # no subprotocol offered
        code, out, err = await run_cli("probe", url, "--timeout", "2", "--subprotocol", "chat")
        assert code == 1
        assert "not a wsnb server? use --raw" in err
        assert err.count("\n") == 1  # one line


async def test_probe_token_refused_in_words() -> None:
    async with wsnb.Server(port=0, token="right") as srv:
        code, out, err = await run_cli("probe", srv.url, "--token", "wrong")
    assert code == 1
    assert err.strip() == ("wsnb probe: server closed the connection before wsnb "
                           "handshake_ack: 4401 token refused")
    assert "CLOSED     4401 token refused" in out
    async with wsnb.Server(port=0, token="right") as srv:
        code, out, err = await run_cli("probe", srv.url, "--token", "wrong", "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert report["error"] == {"kind": "closed", "exit_code": 1, "message": err.strip()[
        len("wsnb probe: "):]}
    assert report["close"]["code"] == 4401 and report["close"]["by"] == "server"


async def test_probe_failures_have_one_line_causes() -> None:
    with socket.socket() as s:  # a port with nothing behind it
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    code, _, err = await run_cli("probe", f"ws://127.0.0.1:{free}/")
    assert code == cli.EXIT_CODES["refused"] == 4
    assert err.startswith("wsnb probe: refused: nothing accepts connections on 127.0.0.1:")

    with socket.socket() as silent:  # TCP accepted by the kernel, never an HTTP answer
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, _, err = await run_cli("probe", f"ws://127.0.0.1:{port}/", "--timeout", "0.5")
    assert code == cli.EXIT_CODES["timeout"] == 7
    assert "timeout: connected, but no HTTP 101 upgrade response within 0.5 s" in err

    async with wsnb.Server(port=0, allowed_origins=["https://app.example"]) as srv:
        code, out, err = await run_cli("probe", srv.url, "--origin", "https://evil.example")
        assert code == cli.EXIT_CODES["upgrade"] == 6
        assert "upgrade refused: HTTP 403 Forbidden: Origin not allowed" in err
        assert "< HTTP/1.1 403 Forbidden" in out and "> Origin: https://evil.example" in out
        code, _, err = await run_cli("probe", srv.url, "--origin", "https://app.example")
        assert code == 0, err

    async with wsnb.Server(port=0, throttle=(1, 60.0)) as srv:
        assert (await run_cli("probe", srv.url, "--count", "0"))[0] == 0
        code, _, err = await run_cli("probe", srv.url)
        assert code == 6 and "HTTP 429 Too Many Requests: Too many connections; retry after " \
            "60 s" in err

    code, _, err = await run_cli("probe", "http://127.0.0.1:1/")
    assert code == 2 and "use ws://127.0.0.1:1/" in err


async def test_probe_sends_headers_and_subprotocols_and_hides_secret_ones() -> None:
    seen: list[Any] = []

    def record(conn, request):
        seen.append(request.headers)

    async with ws_serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=record,
                        subprotocols=["b"]) as plain:
        url = f"ws://127.0.0.1:{plain.sockets[0].getsockname()[1]}/"
        code, out, err = await run_cli(
            "probe", url, "--raw", "--count", "0", "--header", "X-Trace: t-1",
            "--header", "X-Api-Key: key-PLANTED-77", "--header", "Authorization: Bearer b-PL",
            "--subprotocol", "a", "--subprotocol", "b", "--origin", "https://app.example")
    assert code == 0, err
    headers = seen[0]
    assert headers["X-Trace"] == "t-1" and headers["X-Api-Key"] == "key-PLANTED-77"
    assert headers["Authorization"] == "Bearer b-PL" and headers["Origin"] == "https://app.example"
    assert headers["Sec-WebSocket-Protocol"] == "a, b" and "subprotocol: b;" in out
    assert "> X-Trace: t-1" in out and "> X-Api-Key: ***" in out and "> Authorization: ***" in out
    assert "PLANTED" not in out + err and "b-PL" not in out + err
    code, _, err = await run_cli("probe", url, "--header", "no colon")
    assert code == 2 and "not a header: 'no colon' (use NAME:VALUE)" in err


def test_probe_dns_failure(monkeypatch, capsys) -> None:
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # no network lookups in tests
    code = cli.main(["probe", "ws://no-such-host.invalid/", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CODES["dns"] == 3
    assert err.strip() == ("wsnb probe: DNS: cannot resolve 'no-such-host.invalid': "
                           "Name or service not known")


async def test_probe_server_that_ignores_pings_times_out() -> None:
    async with wsnb.Server(port=0, answer_pings=False) as srv:
        code, _, err = await run_cli("probe", srv.url, "--timeout", "0.3")
    assert code == 7 and "no pong to ping 1 within 0.3 s" in err


# ----- TLS -----------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    return ca_file, cert_file


async def test_wss_serve_and_probe_end_to_end(tls_files, make_client) -> None:
    ca_file, cert_file = tls_files
    async with serving("--certfile", str(cert_file), "--token", "T") as srv:
        assert srv.url.startswith("wss://127.0.0.1:")
        code, out, err = await run_cli("probe", srv.url, "--token", "T", "--cafile",
                                       str(ca_file), "--send", "1")
        assert code == 0, err
        assert "READY" in out and "sent #1: ack" in out
        code, _, err = await run_cli("probe", srv.url, "--token", "T")
        assert code == cli.EXIT_CODES["tls"] == 5
        assert "TLS: certificate verification failed: " in err and "--cafile" in err
        code, _, err = await run_cli("probe", srv.url, "--token", "T", "--insecure")
        assert code == 0, err
        code, _, err = await run_cli("probe", srv.url.replace("wss://", "ws://"))
        assert code == cli.EXIT_CODES["handshake"] and "try wss://" in err
        context = ssl.create_default_context(cafile=str(ca_file))
        client = make_client(srv.url, token="T", ssl=context)
        await client.connect(timeout=10)
        await (await client.send({"over": "tls"})).wait(10)
        code, _, err = await srv.stop()
        assert code == 0, err
        await client.wait_until(saw_1001, timeout=10)

    async with wsnb.Server(port=0) as plain:
        code, _, err = await run_cli("probe", plain.url.replace("ws://", "wss://"),
                                     "--insecure")
    assert code == 5 and "TLS: " in err and "try ws://" in err


# ----- timeline, bench, doctor ------------------------------------------------------------


async def test_timeline_prints_and_converts(tmp_path) -> None:
    har = tmp_path / "session.har"
    shutil.copy(DATA / "chrome_websockets.har", har)
    code, out, err = await run_cli("timeline", str(har), "--type", "sent,received,acked")
    assert code == 0, err
    assert "events;" in out and "wss://chat.example.com/socket?…" in out
    assert "s3cr3t-in-query" not in out and "demo-token-PLANTED" not in out
    code, out, err = await run_cli("timeline", str(har), "--to", "csv")
    assert code == 0, err
    csv = tmp_path / "session.csv"
    assert f"to {csv} (csv)" in out
    code, out, err = await run_cli("timeline", str(csv), "--to", "parquet")
    if code == 1 and "pyarrow" in err:
        pytest.skip("pyarrow not installed")
    assert code == 0, err
    parquet = tmp_path / "session.parquet"
    code, out, err = await run_cli("timeline", str(parquet), "--to", "har", "-o",
                                   str(tmp_path / "again.har"))
    assert code == 0, err
    original = wsnb.Timeline.from_har(har).events()
    again = wsnb.Timeline.from_har(tmp_path / "again.har").events()
    cols = ["time", "type", "direction", "id", "size", "peer"]
    frames = original["type"].isin(["sent", "received", "acked", "ping", "pong", "nack"])
    expected = original.loc[frames | (original["state"] == "OPEN"), cols]
    for df in (again, expected):
        df["peer"] = df["peer"].astype(str)
    assert again[cols].reset_index(drop=True).equals(expected.reset_index(drop=True))
    code, _, err = await run_cli("timeline", str(har), "--to", "har")
    assert code == 2 and "refusing to overwrite" in err
    code, _, err = await run_cli("timeline", str(tmp_path / "missing.csv"))
    assert code == 1 and "no such file" in err
    (tmp_path / "notes.txt").write_text("hi")
    code, _, err = await run_cli("timeline", str(tmp_path / "notes.txt"))
    assert code == 1 and "cannot tell the format" in err


async def test_console_script_and_bench_delegation() -> None:
    script = Path(sys.executable).with_name("wsnb")
    if not script.exists():
        pytest.skip("wsnb console script not installed next to this interpreter")
    proc = await asyncio.create_subprocess_exec(
        str(script), "--help", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and b"serve" in out and b"probe" in out
    code, out, _ = await run_cli("bench", "--help")
    assert code == 0 and "--quick" in out
    code, _, err = await run_cli()
    assert code == 2 and "COMMAND" in err


def test_doctor_delegates_lazily(monkeypatch, capsys) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("wsnb.doctor")
    fake.cli_main = lambda argv: seen.append(argv) or 5  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wsnb.doctor", fake)
    assert cli.main(["doctor", "ws://127.0.0.1:1/", "--json"]) == 5
    assert seen == [["ws://127.0.0.1:1/", "--json"]]
    monkeypatch.setitem(sys.modules, "wsnb.doctor", None)  # not installed: import fails
    assert cli.main(["doctor", "ws://127.0.0.1:1/"]) == 2
    assert "wsnb doctor: not available" in capsys.readouterr().err


# ----- secrets ---------------------------------------------------------------------------


async def test_cli_never_prints_tokens_or_keys(tls_files) -> None:
    token, secret, wrong = "tok-PLANTED-c11a", "key-PLANTED-5e7d", "tok-PLANTED-bad0"
    outputs: list[str] = []
    env = {**ENV, "WSNB_TOKEN": token, "WSNB_SECRET": secret}
    async with serving("--token", token, "--secret", secret, "--echo-messages") as srv:
        for args in (
            ["--token", token, "--send", '{"x": 1}', "--count", "1"],
            ["--token", token, "--json"],
            ["--token", wrong],
            ["--token", wrong, "--json"],
            ["--raw", "--send", json.dumps({**HELLO, "token": token})],
        ):
            code, out, err = await run_cli("probe", srv.url, *args)
            outputs += [out, err]
        code, out, err = await run_cli("probe", srv.url, env=env)  # token from the environment
        assert code == 0, err
        outputs += [out, err]
        code, out, err = await srv.stop()
        outputs += [out, err]
    async with serving(env=env) as srv:  # token and key from the environment
        code, out, err = await run_cli("probe", srv.url + f"/?token={token}", "--token", wrong)
        assert code == 1
        outputs += [out, err]
        outputs += list(await srv.stop())[1:]
    code, out, err = await run_cli("probe", f"wss://127.0.0.1:1/?token={token}", "--token", token)
    assert code == 4
    outputs += [out, err]
    code, out, err = await run_cli("serve", "--token", token, "--secret", secret,
                                   "--certfile", str(tls_files[0].parent / "missing.pem"))
    assert code == 2
    outputs += [out, err]
    text = "\n".join(outputs)
    assert "READY" in text and "4401 token refused" in text
    for planted in (token, secret, wrong):
        assert planted not in text
