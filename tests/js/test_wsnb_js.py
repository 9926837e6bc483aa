"""wsnb.mjs, the JavaScript client, against the Python reference server.

Node runs tests/js/*.mjs with the `ws` package (installed here by npm once);
Chromium (Playwright) loads the same module from a loopback HTTP server.
The server side sends its messages and cuts connections; both directions
must arrive exactly once and in order. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import wsnb

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "wsnb" / "js"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "js-demo"
SECRET = "js-secret-\u00e9"
TIMEOUT = 20.0  # seconds any one wait may take before the test fails


def client_payload(i: int) -> dict[str, Any]:
    """What scenario.mjs's clientPayload(i) sends."""
    if i == 5:
        return {"i": i, "blob": "x" * 70000}
    if i % 25 == 7:
        return {"i": i, "text": f'😀é"\\{i}' * 60}
    return {"i": i, "text": f"m{i}"}


def server_payload(j: int) -> dict[str, Any]:
    if j == 10:
        return {"j": j, "blob": "y" * 70000}  # over 64 KiB: the server compresses it (z=1)
    if j % 30 == 3:
        return {"j": j, "text": f"€😀\n{j}" * 150}  # over the server's chunk_size: chunks
    return {"j": j}


# ----- Node ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with `ws` installed in tests/js/node_modules (once)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("SKIPPED LOUDLY: node and npm are needed to test wsnb/js/wsnb.mjs "
                    "(install Node.js 20)")
    if not (HERE / "node_modules" / "ws" / "package.json").exists():
        try:
            done = subprocess.run(
                [npm_bin, "install", "--no-save", "--no-package-lock", "--no-audit",
                 "--no-fund", "ws@8"],
                cwd=HERE, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"SKIPPED LOUDLY: npm install ws@8 failed: {exc}")
        if done.returncode != 0:
            pytest.skip(f"SKIPPED LOUDLY: npm install ws@8 failed ({done.returncode}): "
                        f"{done.stderr[-800:]}")
    return node_bin


class NodeScript:
    """A running tests/js script whose stdout is one JSON object per line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, node: str, script: str, *args: str) -> NodeScript:
        proc = await asyncio.create_subprocess_exec(
            node, str(HERE / script), *args, cwd=HERE, limit=64 * 1024 * 1024,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"node said nothing for {timeout} s")
        if not line:
            await self.proc.wait()
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode(errors="replace")
            pytest.fail(f"node exited ({self.proc.returncode}) early: {err[-2000:]}")
        return json.loads(line)

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait for a clean exit: a client left with live timers would keep node running."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"node did not exit within {timeout} s after the client closed "
                        "(a timer or socket left open)")
        assert self.proc.stderr is not None
        err = (await self.proc.stderr.read()).decode(errors="replace")
        assert code == 0, err[-2000:]

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@contextlib.asynccontextmanager
async def node_script(node: str, script: str, *args: str) -> AsyncIterator[NodeScript]:
    run = await NodeScript.start(node, script, *args)
    try:
        yield run
    finally:
        run.kill()
        await run.proc.wait()


# ----- the server and its cuts ---------------------------------------------------


class Cutter:
    """Cuts every connection of `server` when its delivered count hits given points."""

    def __init__(self, plan: dict[int, str]) -> None:
        self.plan = plan
        self.server: wsnb.Server | None = None
        self.lock = asyncio.Lock()  # two restarts at once would both try to listen
        self.tasks: list[asyncio.Task[None]] = []
        self.done: list[str] = []

    def handler(self, session: Any, payload: Any) -> None:
        assert self.server is not None
        kind = self.plan.get(len(self.server.delivered))
        if kind is not None:
            self.cut(kind)

    def cut(self, kind: str) -> None:
        self.tasks.append(asyncio.ensure_future(self._cut(kind)))

    async def _cut(self, kind: str) -> None:
        server = self.server
        assert server is not None
        async with self.lock:
            if kind == "abort":  # TCP gone without a close frame: 1006 on the client
                for ws in list(server.connections):
                    ws.transport.abort()
            elif kind == "restart":  # 1012, sessions kept: the client resumes
                await server.restart()
            elif kind == "forget":  # 1012, sessions lost: the client renumbers and resends
                await server.restart(keep_sessions=False)
        self.done.append(kind)

    async def wait(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), TIMEOUT)


async def feed(server: wsnb.Server, m: int, cuts: dict[int, str], cutter: Cutter) -> None:
    """Send the server's m messages to the one session, cutting along the way."""
    (session_id,) = server.sessions
    for j in range(m):
        await server.send(session_id, server_payload(j))
        if j in cuts:
            cutter.cut(cuts[j])


def check_result(result: dict[str, Any], server: wsnb.Server, n: int, m: int) -> None:
    assert result["event"] == "done", {k: result[k] for k in ("event", "errors", "stats",
                                                               "states")}
    bad = [o for o in result["outcomes"] if not o["ok"]]
    assert not bad, bad[:5]
    got = server.delivered
    assert [p["i"] for p in got] == list(range(n)), "client -> server not exactly once in order"
    assert got == [client_payload(i) for i in range(n)]
    assert [p["j"] for p in result["received"]] == list(range(m)), \
        "server -> client not exactly once in order"
    assert result["received"] == [server_payload(j) for j in range(m)]
    assert result["closedState"] == 3


async def test_node_exactly_once_both_ways_through_cuts(node: str) -> None:
    n, m = 240, 240
    cutter = Cutter({n // 4: "abort", n // 2: "restart", 3 * n // 4: "abort"})
    async with wsnb.Server(port=0, token=TOKEN, heartbeat_ms=300, chunk_size=400,
                           handler=cutter.handler) as server:
        cutter.server = server
        cfg = {"url": server.url, "token": TOKEN, "n": n, "m": m, "chunkSize": 300,
               "timeoutMs": TIMEOUT * 1000}
        async with node_script(node, "exactly_once.mjs", json.dumps(cfg)) as run:
            ready = await run.next()
            assert ready["event"] == "ready" and ready["ready"] is True
            assert ready["readyState"] == 1
            assert ready["session"] in server.sessions
            await feed(server, m, {m // 3: "abort", 2 * m // 3: "restart"}, cutter)
            result = await run.next()
            await run.finish()
        await cutter.wait()
        check_result(result, server, n, m)
        assert len(server.sessions) == 1, "every reconnect resumed the one session"
        assert result["session"] == ready["session"]
        assert result["stats"]["renumbered"] == 0
        assert result["stats"]["reconnects"] >= 1, result["stats"]  # cuts close together coalesce
        assert sorted(cutter.done) == ["abort", "abort", "abort", "restart", "restart"]


async def test_node_lost_session_renumbers_and_resends(node: str) -> None:
    """restart(keep_sessions=False): a new session, un-acked messages resent from id 1.

    Across a lost session delivery is at-least-once: every message arrives, in
    order of first arrival; one whose ack was lost may arrive twice.
    """
    n = 200
    cutter = Cutter({n // 2: "forget"})
    # Acks held back 0.3 s: when the server forgets, written messages are surely un-acked.
    async with wsnb.Server(port=0, token=TOKEN, heartbeat_ms=300, chunk_size=400,
                           ack_delay=0.3, handler=cutter.handler) as server:
        cutter.server = server
        cfg = {"url": server.url, "token": TOKEN, "n": n, "m": 0, "chunkSize": 300,
               "timeoutMs": TIMEOUT * 1000}
        async with node_script(node, "exactly_once.mjs", json.dumps(cfg)) as run:
            ready = await run.next()
            result = await run.next()
            await run.finish()
        await cutter.wait()
    assert result["event"] == "done", result
    assert all(o["ok"] for o in result["outcomes"])
    firsts = list(dict.fromkeys(p["i"] for p in server.delivered))
    assert firsts == list(range(n)), "every message delivered, in order of first arrival"
    assert result["session"] != ready["session"], "a new session after the server forgot"
    assert result["stats"]["renumbered"] >= 1, result["stats"]
    assert any(o.get("renumbered") for o in result["outcomes"])
    assert any("session_lost" in e for e in result["errors"]), result["errors"]


async def test_node_signed_exactly_once(node: str) -> None:
    n, m = 60, 60
    cutter = Cutter({n // 2: "abort"})
    async with wsnb.Server(port=0, token=TOKEN, secret=SECRET, heartbeat_ms=300,
                           chunk_size=400, handler=cutter.handler) as server:
        cutter.server = server
        cfg = {"url": server.url, "token": TOKEN, "secret": SECRET, "n": n, "m": m,
               "chunkSize": 300, "timeoutMs": 3000}
        async with node_script(node, "exactly_once.mjs", json.dumps(cfg)) as run:
            ready = await run.next()
            assert ready["event"] == "ready"
            await feed(server, m, {m // 2: "restart"}, cutter)
            result = await run.next()
            await run.finish()
        await cutter.wait()
        check_result(result, server, n, m)


# ----- JCS and signatures ------------------------------------------------------------


async def test_jcs_rfc8785_vectors_and_signatures(node: str) -> None:
    async with node_script(node, "jcs_vectors.mjs") as run:
        result = await run.next()
        await run.finish()
    assert result["failures"] == []
    assert result["passed"] >= 50
    # The signatures are what Python's hmac gives over session + "\n" + canonical JSON.
    first, second = result["signatures"]
    assert first["canonical"] == ('{"d":{"a":"x€😀\\n","b":[1e+21,1e-7,0,0.5]},"id":7,'
                                  '"ts":1700000000123,"type":"msg","v":1,"z":0}')
    assert second["canonical"] == '{"d":"plain","id":1,"ts":1,"type":"msg","v":1,"z":0}'
    for sig in result["signatures"]:
        signed = f"{sig['session']}\n{sig['canonical']}".encode()
        want = hmac.new(sig["secret"].encode(), signed, hashlib.sha256).hexdigest()
        assert sig["s"] == want


# ----- Chromium ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def static_site() -> AsyncIterator[str]:
    """Serve page.html, scenario.mjs and wsnb.mjs on 127.0.0.1; yields the base URL."""
    from aiohttp import web

    files = {"/page.html": HERE / "page.html", "/scenario.mjs": HERE / "scenario.mjs",
             "/wsnb.mjs": MODULE_DIR / "wsnb.mjs"}
    types = {".html": "text/html", ".mjs": "text/javascript"}

    async def serve(request: web.Request) -> web.Response:
        path = files.get(request.path)
        if path is None:
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=types[path.suffix],
                            charset="utf-8")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_chromium_exactly_once_both_ways_through_cuts() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"SKIPPED LOUDLY: no Chromium at {CHROMIUM}; wsnb.mjs untested in a browser")
    async_api = pytest.importorskip("playwright.async_api")
    n, m = 120, 120
    cutter = Cutter({n // 3: "abort", 2 * n // 3: "restart"})
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    console: list[str] = []
    async with static_site() as site, async_api.async_playwright() as p, \
            wsnb.Server(port=0, token=TOKEN, heartbeat_ms=300, chunk_size=400,
                        handler=cutter.handler) as server:
        cutter.server = server
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = await browser.new_page()
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            await page.expose_function("wsnbReport", events.put_nowait)
            await page.goto(f"{site}/page.html")
            await page.wait_for_function("window.wsnbLoaded === true", timeout=TIMEOUT * 1000)
            cfg = {"url": server.url, "token": TOKEN, "n": n, "m": m, "chunkSize": 300,
                   "timeoutMs": TIMEOUT * 1000}
            running = asyncio.ensure_future(page.evaluate("cfg => window.wsnbRun(cfg)", cfg))
            ready = await asyncio.wait_for(events.get(), TIMEOUT)
            assert ready["event"] == "ready" and ready["readyState"] == 1, (ready, console)
            await feed(server, m, {m // 2: "abort"}, cutter)
            result = await asyncio.wait_for(running, TIMEOUT + 5)
        finally:
            await browser.close()
        await cutter.wait()
        assert result["event"] == "done", (result["errors"], console)
        check_result(result, server, n, m)
        assert len(server.sessions) == 1
        assert result["stats"]["reconnects"] >= 1, result["stats"]


# ----- a hand-driven server: the cases the reference server never produces -----------
#
# A bare websockets server on which the test writes every frame itself, and
# driven.mjs, a wsnb.mjs client commanded line by line. Payloads here hold only
# ints, strings and 2.5, for which sorted-keys json.dumps is RFC 8785 (JCS).


def jcs(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signature(session: str, frame: dict[str, Any], secret: str = SECRET) -> str:
    unsigned = {k: v for k, v in frame.items() if k != "s"}
    return hmac.new(secret.encode(), f"{session}\n{jcs(unsigned)}".encode(),
                    hashlib.sha256).hexdigest()


def handshake_ack(session: str, *, resumed: bool = False, last_acked: int = 0,
                  heartbeat_ms: int = 0, max_size: int = 1 << 20) -> str:
    return json.dumps({"type": "handshake_ack", "v": 1, "session": session, "resumed": resumed,
                       "last_acked": last_acked, "heartbeat_ms": heartbeat_ms,
                       "max_size": max_size})


def msg(id: int, d: Any, *, session: str | None = None, ts: int | None = None,
        z: int = 0) -> dict[str, Any]:
    frame = {"type": "msg", "v": 1, "id": id, "ts": ts if ts is not None else now_ms(),
             "z": z, "d": d}
    if session is not None:
        frame["s"] = signature(session, frame)
    return frame


def now_ms() -> int:
    return int(time.time() * 1000)


class Scripted:
    """A websockets server that hands each connection, with its handshake, to the test."""

    async def __aenter__(self) -> Scripted:
        from websockets.asyncio.server import serve

        self.accepted: asyncio.Queue[tuple[Any, float]] = asyncio.Queue()
        self.server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None,
                                  close_timeout=1)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), TIMEOUT)

    async def _handle(self, ws: Any) -> None:
        self.accepted.put_nowait((ws, time.monotonic()))
        await ws.wait_closed()

    async def accept(self) -> tuple[Any, dict[str, Any], float]:
        """The next connection, its handshake frame, and when it was accepted."""
        ws, at = await asyncio.wait_for(self.accepted.get(), TIMEOUT)
        hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert hello["type"] == "handshake"
        return ws, hello, at


async def frame_of(ws: Any, kind: str, seen: list[dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """Read frames until one of type `kind` (others go to `seen`); bounded."""
    for _ in range(1000):
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame["type"] == kind:
            return frame
        if seen is not None:
            seen.append(frame)
    pytest.fail(f"no {kind} frame in 1000 frames")


class Driven:
    """driven.mjs: send it commands, wait for its events."""

    def __init__(self, script: NodeScript) -> None:
        self.script = script
        self.events: list[dict[str, Any]] = []

    async def cmd(self, **command: Any) -> None:
        stdin = self.script.proc.stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())
        await stdin.drain()

    async def expect(self, event: str, where: Callable[[dict[str, Any]], bool] | None = None,
                     **match: Any) -> dict[str, Any]:
        """The first event (seen already, or next to come) of that name matching `match`."""
        def matches(got: dict[str, Any]) -> bool:
            return (got["event"] == event and all(got.get(k) == v for k, v in match.items())
                    and (where is None or where(got)))

        for got in self.events:
            if matches(got):
                return got
        for _ in range(10_000):
            got = await self.script.next()
            self.events.append(got)
            if matches(got):
                return got
        pytest.fail(f"no {event} event {match}")

    def seen(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


@contextlib.asynccontextmanager
async def driven(node: str, url: str, **options: Any) -> AsyncIterator[Driven]:
    options = {"url": url, "token": TOKEN, "backoff": {"base": 20, "cap": 200}, **options}
    proc = await asyncio.create_subprocess_exec(
        node, str(HERE / "driven.mjs"), json.dumps(options), cwd=HERE, limit=64 * 1024 * 1024,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    script = NodeScript(proc)
    try:
        yield Driven(script)
        await Driven(script).cmd(cmd="exit")
        await script.finish()
    finally:
        script.kill()
        await proc.wait()


@pytest.mark.parametrize("violation", ["ack_upto", "ack_id", "last_acked", "max_size"])
async def test_scripted_violation_closes_1002_and_resolves_nothing(node: str,
                                                                  violation: str) -> None:
    async with Scripted() as server, driven(node, server.url) as client:
        await client.cmd(cmd="connect")
        ws, hello, _ = await server.accept()
        assert hello == {"type": "handshake", "v": 1, "token": TOKEN, "session": None,
                         "last_seen": 0, "features": ["chunk", "upto", "z"]}
        if violation == "last_acked":  # a new session cannot have delivered anything
            await ws.send(handshake_ack("S1", last_acked=3))
        elif violation == "max_size":
            await ws.send(handshake_ack("S1", max_size=1000))
        else:
            await ws.send(handshake_ack("S1"))
            await client.expect("ready")
            await client.cmd(cmd="send", payload={"a": 1})
            first = await frame_of(ws, "msg")
            assert (first["id"], first["d"]) == (1, {"a": 1})
            bad = {"ack_upto": {"upto": 2}, "ack_id": {"id": 2}}[violation]
            await ws.send(json.dumps({"type": "ack", **bad}))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1002
        report = await client.expect("error", code=1002)
        assert "violation" in report["message"]

        ws2, hello2, _ = await server.accept()  # the client comes back, with backoff
        resumes = violation not in ("last_acked", "max_size")
        assert hello2["session"] == ("S1" if resumes else None)
        await ws2.send(handshake_ack("S1", resumed=resumes))
        if violation in ("last_acked", "max_size"):
            await client.expect("ready")
            await client.cmd(cmd="send", payload={"a": 1})
        again = await frame_of(ws2, "msg")
        assert (again["id"], again["d"]) == (1, {"a": 1})
        assert not client.seen("acked"), "an ack above what was written resolved something"
        await ws2.send(json.dumps({"type": "ack", "upto": 1}))
        acked = await client.expect("acked")
        assert acked["ack"]["id"] == 1
        assert acked["ack"]["resent"] is resumes


async def test_scripted_signatures_session_bound_jcs(node: str) -> None:
    async with Scripted() as server, driven(node, server.url, secret=SECRET) as client:
        await client.cmd(cmd="connect")
        ws, _, _ = await server.accept()
        await ws.send(handshake_ack("sess-A"))
        await client.expect("ready")
        payload = {"k": "é😀\"\n", "n": [1, 2.5, "x"], "a": {"z": 0, "b": None}}
        await client.cmd(cmd="send", payload=payload)
        sent = await frame_of(ws, "msg")
        assert sent["d"] == payload and sent["s"] == signature("sess-A", sent)
        assert sent["s"] != signature("sess-B", sent), "the signature binds the session"
        await ws.send(json.dumps({"type": "ack", "upto": 1}))
        await client.expect("acked")

        forged = msg(2, "forged", session="sess-A")
        forged["s"] = "0" * 64
        frames = [msg(1, "one", session="sess-A"), forged,
                  msg(3, "replayed from another session", session="sess-B"),
                  msg(4, "stale", session="sess-A", ts=now_ms() - 400_000),
                  {k: v for k, v in msg(5, "unsigned", session="sess-A").items() if k != "s"},
                  msg(6, "six", session="sess-A")]
        for frame in frames:
            await ws.send(json.dumps(frame))
        seen: list[dict[str, Any]] = []
        for _ in range(20):
            ack = await frame_of(ws, "ack", seen)
            if ack.get("upto") == 6:
                break
        nacks = {f["id"]: f["code"] for f in seen if f["type"] == "nack"}
        assert nacks == dict.fromkeys([2, 3, 4, 5], "bad_signature")
        await client.expect("message", payload="six")
        assert [e["payload"] for e in client.seen("message")] == ["one", "six"]


@pytest.mark.parametrize("code", [4401, 1008, 1000])
async def test_scripted_final_close_fails_pending_at_once(node: str, code: int) -> None:
    async with Scripted() as server, driven(node, server.url) as client:
        await client.cmd(cmd="connect")
        await client.cmd(cmd="send", payload="queued before READY")
        ws, _, _ = await server.accept()
        if code == 1000:  # after READY, with the message written and never acked
            await ws.send(handshake_ack("S1"))
            await frame_of(ws, "msg")
        await ws.close(code, "bye")
        rejected = await client.expect("rejected")
        assert rejected["code"] == code
        closed = await client.expect("state", state="closed")
        assert closed["readyState"] == 3
        assert closed["stats"]["reconnects"] == 0
        if code != 1000:
            failed = await client.expect("connect_failed")
            assert failed["code"] == code


async def test_scripted_4429_waits_for_the_retry_hint(node: str) -> None:
    async with Scripted() as server, driven(node, server.url) as client:
        await client.cmd(cmd="connect")
        ws, _, _ = await server.accept()
        closed_at = time.monotonic()  # before: the client cannot start waiting earlier
        await ws.close(4429, "too many connections; retry after 0.4 s")
        ws2, hello2, accepted_at = await server.accept()
        assert accepted_at - closed_at >= 0.4  # backoff alone is below 0.2 s here
        await ws2.send(handshake_ack("S1"))
        await client.expect("ready")


async def test_scripted_dead_link_reconnects_and_pings_keep_it_alive(node: str) -> None:
    async with Scripted() as server, driven(node, server.url) as client:
        await client.cmd(cmd="connect")
        ws, _, _ = await server.accept()
        await ws.send(handshake_ack("S1", heartbeat_ms=100))
        silent_from = time.monotonic()
        # Silence: the link is dead after 2 x 100 + max(250, 50) = 450 ms.
        ws2, hello2, accepted_at = await server.accept()
        assert 0.4 <= accepted_at - silent_from < 5
        assert hello2["session"] == "S1"
        await client.expect("error", where=lambda e: "dead link" in e["message"])
        await ws2.send(handshake_ack("S1", resumed=True, heartbeat_ms=100))
        for ts in range(8):  # pings every 100 ms: answered, and the link stays up
            await ws2.send(json.dumps({"type": "ping", "ts": ts}))
            pong = await frame_of(ws2, "pong")
            assert pong == {"type": "pong", "ts": ts}
            await asyncio.sleep(0.1)  # the heartbeat period itself, not a synchronisation
        assert server.accepted.empty(), "the client reconnected although pings kept coming"
        assert ws2.close_code is None


def utf16_halves(text: str, unit: int) -> tuple[str, str]:
    """Split `text` at UTF-16 code unit `unit` (possibly inside a surrogate pair)."""
    raw = text.encode("utf-16-le", "surrogatepass")
    return (raw[: 2 * unit].decode("utf-16-le", "surrogatepass"),
            raw[2 * unit:].decode("utf-16-le", "surrogatepass"))


async def test_scripted_chunks_compression_order_and_bad_frames(node: str) -> None:
    async with Scripted() as server, driven(node, server.url, chunkSize=50) as client:
        await client.cmd(cmd="connect")
        ws, _, _ = await server.accept()
        await ws.send(handshake_ack("S1"))
        await client.expect("ready")

        # In: a chunk series with a ping between its slices.
        text = json.dumps(msg(1, {"big": "😀" * 30 + "end"}), ensure_ascii=False)
        cut = len(text) // 3
        slices = [text[:cut], text[cut:2 * cut], text[2 * cut:]]
        chunk = lambda id, i, n, data: json.dumps(  # noqa: E731
            {"type": "chunk", "id": id, "i": i, "n": n, "data": data})
        await ws.send(chunk(1, 0, 3, slices[0]))
        await ws.send(json.dumps({"type": "ping", "ts": 42}))
        await ws.send(chunk(1, 1, 3, slices[1]))
        await ws.send(chunk(1, 2, 3, slices[2]))
        assert await frame_of(ws, "pong") == {"type": "pong", "ts": 42}
        await client.expect("message", payload={"big": "😀" * 30 + "end"})

        # A series whose slice boundary splits a surrogate pair: bad_json, id consumed.
        text2 = json.dumps(msg(2, "😀😀"), ensure_ascii=False)
        first, rest = utf16_halves(text2, text2.encode("utf-16-le").find(
            "😀".encode("utf-16-le")) // 2 + 1)
        await ws.send(chunk(2, 0, 2, first))  # json.dumps escapes the lone half: \ud83d
        await ws.send(chunk(2, 1, 2, rest))
        seen: list[dict[str, Any]] = []
        nack = await frame_of(ws, "nack", seen)
        assert (nack["id"], nack["code"]) == (2, "bad_json")

        # Bad frames: answered with error, never a crash or a dropped connection.
        await ws.send('{"type":"ping","ts":1,"ts":2}')
        assert (await frame_of(ws, "error"))["code"] == "bad_json"
        await ws.send(json.dumps({"type": "telepathy"}))
        assert (await frame_of(ws, "error"))["code"] == "unknown_type"
        await ws.send(json.dumps(msg(2**53, "too big an id")))
        assert (await frame_of(ws, "error"))["code"] == "bad_envelope"

        # Out of order, a duplicate, and a compressed payload.
        packed = base64.b64encode(zlib.compress(json.dumps({"z": "zz" * 500}).encode()))
        for frame in [msg(5, "five"), msg(4, "four"), msg(1, "dup"),
                      msg(3, "three"), msg(6, packed.decode(), z=1)]:
            await ws.send(json.dumps(frame))
        for _ in range(20):
            ack = await frame_of(ws, "ack")
            if ack.get("upto") == 6:
                break
        await client.expect("message", payload={"z": "zz" * 500})
        payloads = [e["payload"] for e in client.seen("message")]
        assert payloads == [{"big": "😀" * 30 + "end"}, "three", "four", "five",
                            {"z": "zz" * 500}]
        assert client.events[-1]["stats"]["duplicates"] >= 1

        # Out: a message over chunkSize code points goes as chunks, pairs never split.
        big = {"t": "😀" * 120 + "é" * 10}
        await client.cmd(cmd="send", payload=big)
        parts: list[str] = []
        for _ in range(100):
            part = await frame_of(ws, "chunk")
            assert part["i"] == len(parts) and part["id"] == 1
            assert len(part["data"]) <= 50  # Python str length counts code points
            part["data"].encode("utf-8")  # raises on a lone surrogate
            parts.append(part["data"])
            if part["i"] == part["n"] - 1:
                break
        joined = json.loads("".join(parts))
        assert joined["type"] == "msg" and joined["id"] == 1 and joined["d"] == big
        await ws.send(json.dumps({"type": "ack", "upto": 1}))
        await client.expect("acked")
