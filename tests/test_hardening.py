"""Attacks on the reference server: issue 6, "TLS and hardening".

Each attack runs against a server and checks three things: the server
answers (a reply frame, a nack, or a documented close code), a bystander
wsnb.Client keeps getting acks during and after the attack, and, for the
memory attacks, the server process stays under a stated bound.

Memory: the attacks that could make a server buffer run against ``wsnb
serve`` in its own process (``--max-size 1 MiB --max-message 4 MiB``); its
peak resident set size (``VmHWM``, reset before each attack through
``/proc/PID/clear_refs``) may grow by at most ``MEMORY_BOUND`` = 48 MiB over
the size when the attack starts. websockets may queue up to 16 frames of
``max_size`` per connection and a partial chunk series holds up to
``max_message``: 16 + 4 MiB plus decoding copies, far below the 100 MB,
10^9-chunk and endless-series attacks themselves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import wsnb

MiB = 1 << 20
MEMORY_BOUND = 48 * MiB
MAX_SIZE = 1 * MiB
MAX_MESSAGE = 4 * MiB
TOKEN = "T"
ENV = {k: v for k, v in os.environ.items() if k not in ("WSNB_TOKEN", "WSNB_SECRET")}


# ----- a server in its own process, measured ---------------------------------------------


class Subprocess:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        parts = url.removeprefix("ws://").split(":")
        self.host, self.port = parts[0], int(parts[1])

    def _status(self) -> dict[str, int]:
        values = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) * 1024
        return values

    def reset_peak(self) -> int:
        """Start a new peak-RSS measurement; return the RSS now."""
        # not permitted: the peak stays cumulative (a stricter test)
        with contextlib.suppress(OSError), open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")
        return self._status()["VmRSS"]

    def peak(self) -> int:
        return self._status()["VmHWM"]

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture(scope="module")
def victim() -> Iterator[Subprocess]:
    if not Path("/proc/self/status").exists():
        pytest.skip("memory is measured through /proc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsnb", "serve", "--port", "0", "--token", TOKEN,
         "--heartbeat-ms", "0", "--max-size", str(MAX_SIZE), "--max-message", str(MAX_MESSAGE),
         "--open-timeout", "1", "--handshake-timeout", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.match(r"(ws://\S+)", first)
        assert match, first + (proc.stderr.read() if proc.stderr else "")
        yield Subprocess(proc, match.group(1))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


@contextlib.asynccontextmanager
async def bounded(victim: Subprocess, what: str) -> AsyncIterator[None]:
    start = victim.reset_peak()
    yield
    grew = victim.peak() - start
    print(f"{what}: peak RSS +{grew / MiB:.1f} MiB")
    assert victim.alive(), f"server died during {what}"
    assert grew < MEMORY_BOUND, f"{what}: peak RSS grew {grew / MiB:.1f} MiB"


async def bystander_ok(client: wsnb.Client, n: int = 3) -> None:
    """Another client still gets acks."""
    for i in range(n):
        await (await client.send({"bystander": i})).wait(10)


@pytest.fixture
async def bystander(victim, make_client) -> wsnb.Client:
    client = make_client(victim.url, token=TOKEN)
    await client.connect(timeout=10)
    return client


# ----- a raw WebSocket client that can say anything ----------------------------------------


def frame(payload: bytes | str, opcode: int = 1, fin: bool = True,
          length: int | None = None) -> bytes:
    """A client frame (masked with a zero key, so the payload goes out as is)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, token: str | None = TOKEN,
                   handshake: bool = True) -> Raw:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        if handshake:
            await raw.send(json.dumps({"type": "handshake", "v": 1, "token": token,
                                       "session": None, "last_seen": 0}))
            kind, data = await raw.recv()
            assert json.loads(data)["type"] == "handshake_ack"
        return raw

    async def send(self, payload: bytes | str, opcode: int = 1) -> None:
        self.writer.write(frame(payload, opcode))
        await self.writer.drain()

    async def recv(self, timeout: float = 10) -> tuple[int, bytes]:
        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), timeout)

    async def recv_json(self, timeout: float = 10) -> dict:
        while True:
            opcode, data = await self.recv(timeout)
            if opcode == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                raise ConnectionError(f"closed {code} {data[2:].decode()}")
            if opcode == 1:
                frame = json.loads(data)
                if frame.get("type") != "ack":  # acks (of refused ids, too) may come anywhere
                    return frame

    async def close_code(self, timeout: float = 10) -> int:
        """Read until the server's close frame; its code."""
        while True:
            opcode, data = await self.recv(timeout)
            if opcode == 8:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005

    def abort(self) -> None:
        self.writer.transport.abort()


# ----- floods ------------------------------------------------------------------------------


async def test_ten_thousand_tiny_frames_are_all_answered(victim, bystander) -> None:
    raw = await Raw.open(victim.host, victim.port)
    answers: dict[str, int] = {}

    async def flood() -> None:
        for i in range(10_000):
            raw.writer.write(frame("x" if i % 2 else '{"type":"ping","ts":1}'))
            if i % 500 == 0:
                await raw.writer.drain()
        await raw.writer.drain()

    async def read_answers() -> None:
        for _ in range(10_000):
            reply = await raw.recv_json()
            key = reply.get("code", reply["type"])
            answers[key] = answers.get(key, 0) + 1

    async with bounded(victim, "10 000 tiny frames"):
        reader = asyncio.ensure_future(read_answers())
        await flood()
        await bystander_ok(bystander)  # during: the answers are still streaming back
        await asyncio.wait_for(reader, 60)
    assert answers == {"pong": 5000, "bad_json": 5000}
    raw.abort()
    await bystander_ok(bystander)


@pytest.mark.parametrize("reorder", [False, True])
async def test_message_rate_limit_closes_4429_and_client_obeys_hint(reorder, make_client) -> None:
    extra = {"workers": 4, "process_delay": (0.0, 0.001)} if reorder else {}
    async with wsnb.Server(port=0, heartbeat_ms=0, rate_limit=(50, 1.0), **extra) as srv:
        raw = await Raw.open("127.0.0.1", srv.port, token=None)
        for _ in range(200):
            raw.writer.write(frame('{"type":"ping","ts":1}'))
        await raw.writer.drain()
        pongs = 0
        with pytest.raises(ConnectionError, match=r"closed 4429 too many messages \(over 50 in "
                                                   r"1 s\); retry after 1 s"):
            for _ in range(201):
                assert (await raw.recv_json())["type"] == "pong"
                pongs += 1
        assert 49 <= pongs <= 50  # the allowance, then the close (see the closing note)
        raw.abort()
        polite = make_client(srv.url, token=None)  # unaffected: its own connection's budget
        await polite.connect(timeout=5)
        await (await polite.send("hello")).wait(5)

        greedy = make_client(srv.url, token=None, backoff=wsnb.Backoff(base=0.01, cap=0.05))
        await greedy.connect(timeout=5)
        receipts = [await greedy.send({"i": i}) for i in range(120)]
        await greedy.wait_until(lambda c: c.close_code == 4429, timeout=10)
        assert greedy.next_retry_in is not None and greedy.next_retry_in > 0.5  # the 1 s hint,
        assert "retry after 1 s" in greedy.close_reason  # not the 0.05 s backoff cap
        await greedy.drain(timeout=20)  # it comes back after the hint and finishes
        assert all(r.state == "acked" for r in receipts)
        assert [p["i"] for p in srv.delivered if isinstance(p, dict)] == list(range(120))


async def test_max_connections_per_token(make_client) -> None:
    async with wsnb.Server(port=0, heartbeat_ms=0, max_connections_per_token=2) as srv:
        a1, a2 = (make_client(srv.url, token="a") for _ in range(2))
        await a1.connect(timeout=5)
        await a2.connect(timeout=5)
        third = await connect(srv.url)
        await third.send(json.dumps({"type": "handshake", "v": 1, "token": "a",
                                     "session": None, "last_seen": 0}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(third.recv(), 5)
        assert third.close_code == 4429
        assert third.close_reason == ("too many connections for this token (limit 2); "
                                      "retry after 5 s")
        b = make_client(srv.url, token="b")  # another token has its own allowance
        await b.connect(timeout=5)
        a1.disconnect_now()  # a resume replaces its own connection: never refused
        await a1.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
        await (await a1.send("still here")).wait(5)
        await a2.close()
        a3 = make_client(srv.url, token="a")  # a slot was freed
        await a3.connect(timeout=5)
        fourth = await connect(srv.url)  # and the limit still holds
        await fourth.send(json.dumps({"type": "handshake", "v": 1, "token": "a",
                                      "session": None, "last_seen": 0}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(fourth.recv(), 5)
        assert fourth.close_code == 4429


async def test_origin_allow_list_is_403_before_upgrade() -> None:
    async with wsnb.Server(port=0, allowed_origins=["https://App.example",
                                                    "http://localhost:8888/"]) as srv:
        for bad in ("https://evil.example", "https://app.example.evil.com", "null"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(srv.url, origin=bad)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
            assert b"Origin not allowed" in refused.value.response.body
        for good in ("https://app.example", "http://localhost:8888", None):
            ws = await connect(srv.url, origin=good)  # type: ignore[arg-type]
            await ws.close()
        refusals = srv.timeline.states()["detail"].tolist()
        assert sum("origin refused: HTTP 403" in d for d in refusals) == 3


# ----- slow and half-sent handshakes --------------------------------------------------------


async def test_slowloris_half_sent_handshakes(victim, bystander) -> None:
    loop = asyncio.get_running_loop()

    async def half_sent(trickle: bool) -> float:
        """Seconds until the server hangs up on a handshake that never completes."""
        reader, writer = await asyncio.open_connection(victim.host, victim.port)
        start = loop.time()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        try:
            while loop.time() - start < 10:
                if trickle:  # the attack: a header byte now and then, never the end
                    writer.write(b"X")
                    await writer.drain()
                try:
                    if not await asyncio.wait_for(reader.read(1024), 0.2):
                        return loop.time() - start
                except TimeoutError:
                    continue
            raise AssertionError("a half-sent handshake was still open after 10 s")
        except ConnectionResetError:
            return loop.time() - start
        finally:
            writer.transport.abort()

    async with bounded(victim, "200 half-sent handshakes"):
        attacks = [asyncio.ensure_future(half_sent(trickle=i % 4 == 0)) for i in range(200)]
        await bystander_ok(bystander)  # during
        durations = await asyncio.gather(*attacks)
    # --open-timeout 1: every half-sent handshake is dropped after about 1 s, trickling or not
    assert all(0.8 <= d < 5 for d in durations), sorted(durations)[::20]
    await bystander_ok(bystander)


async def test_websocket_open_but_no_wsnb_handshake_gets_4408(victim, bystander) -> None:
    raws = [await Raw.open(victim.host, victim.port, handshake=False) for _ in range(20)]
    await bystander_ok(bystander)
    codes = await asyncio.gather(*(r.close_code() for r in raws))
    assert codes == [4408] * 20
    for r in raws:
        r.abort()


# ----- hostile chunks and JSON ---------------------------------------------------------------


async def test_a_billion_chunks_is_refused_at_once(victim, bystander) -> None:
    raw = await Raw.open(victim.host, victim.port)
    async with bounded(victim, "n = 10^9 chunks"):
        await raw.send(json.dumps({"type": "chunk", "id": 1, "i": 0, "n": 10**9, "data": "x"}))
        reply = await raw.recv_json()
        await bystander_ok(bystander)
    assert reply["type"] == "nack" and reply["code"] == "too_large" and reply["id"] == 1
    assert "chunks exceed the limit of" in reply["reason"]
    await raw.send('{"type":"ping","ts":2}')  # the connection is still served
    assert await raw.recv_json() == {"type": "pong", "ts": 2}
    raw.abort()


async def test_a_chunk_series_that_never_ends(victim, bystander) -> None:
    raw = await Raw.open(victim.host, victim.port)
    piece = "z" * (MAX_SIZE // 8 - 200)  # each chunk frame well under max_size
    n = 32  # the most chunks a message may have (max_message / (max_size / 8))
    replies: list[dict] = []
    async with bounded(victim, "an endless chunk series"):
        # 1. a series whose slices never stop growing: refused once past max_message
        for i in range(n):
            await raw.send(json.dumps({"type": "chunk", "id": 1, "i": i, "n": n,
                                       "data": piece * 2}))
        # 2. it goes on after the refusal: every further slice is refused, none is kept
        for k in range(40):
            await raw.send(json.dumps({"type": "chunk", "id": 1, "i": 1 + k % (n - 1), "n": n,
                                       "data": piece}))
        await raw.send('{"type":"ping","ts":3}')
        while (reply := await raw.recv_json()) != {"type": "pong", "ts": 3}:
            replies.append(reply)
        # 3. a series left hanging one slice short of the end, while others are served
        for i in range(n - 1):
            await raw.send(json.dumps({"type": "chunk", "id": 2, "i": i, "n": n, "data": "q"}))
        await bystander_ok(bystander)
    # slice 17 passes 4 MiB: refused, the partial message dropped; every later slice is
    # refused too (a series must start again at i=0), each one answered
    assert replies[0]["code"] == "too_large" and "exceeds 4194304 bytes" in replies[0]["reason"]
    assert all(r["type"] == "nack" and r["id"] == 1 for r in replies)
    assert [r["code"] for r in replies[1:]] == ["bad_envelope"] * (n - 17 + 40)
    await raw.send(json.dumps({"type": "chunk", "id": 2, "i": n - 1, "n": n, "data": "q"}))
    reply = await raw.recv_json()  # the series completed: garbage, refused, not a crash
    assert reply["type"] == "nack" and reply["id"] == 2 and reply["code"] == "bad_json"
    raw.abort()
    await bystander_ok(bystander)


async def test_joined_chunks_that_are_not_json_are_nacked_by_id() -> None:
    async with wsnb.Server(port=0, heartbeat_ms=0) as srv:
        raw = await Raw.open("127.0.0.1", srv.port, token=None)
        for i in range(2):
            await raw.send(json.dumps({"type": "chunk", "id": 1, "i": i, "n": 2, "data": "{"}))
        reply = await raw.recv_json()
        raw.abort()
    assert reply["type"] == "nack" and reply["id"] == 1


async def test_deeply_nested_json(victim, bystander) -> None:
    depth = 10**5
    arrays = "[" * depth + "]" * depth
    objects = '{"a":' * depth + "1" + "}" * depth
    msg = f'{{"type":"msg","v":1,"id":1,"ts":{int(time.time() * 1000)},"z":0,"d":{arrays}}}'
    packed = base64.b64encode(zlib.compress(arrays.encode())).decode()
    zipped = json.dumps({"type": "msg", "v": 1, "id": 1, "ts": int(time.time() * 1000),
                         "z": 1, "d": packed})
    raw = await Raw.open(victim.host, victim.port)
    async with bounded(victim, "10^5 levels of nesting"):
        for text in (arrays, objects, msg):
            await raw.send(text)
            reply = await raw.recv_json()
            assert reply["type"] == "error" and reply["code"] == "bad_json", reply
        await raw.send(zipped)  # nested inside a compressed payload: a nack for that id
        reply = await raw.recv_json()
        assert reply == {"type": "nack", "id": 1, "code": "bad_json",
                         "reason": "JSON nested too deeply"}
        await bystander_ok(bystander)
    await raw.send('{"type":"ping","ts":4}')
    assert await raw.recv_json() == {"type": "pong", "ts": 4}  # still served
    raw.abort()


# ----- 100 MB of whitespace ------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True])
async def test_100_mb_of_whitespace_is_refused_with_1009(victim, bystander, fragmented) -> None:
    raw = await Raw.open(victim.host, victim.port)
    total = 100 * 10**6
    block = b" " * (64 * 1024)
    sent = 0

    async def pour(upto: int) -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            while sent < upto:
                if fragmented:  # a text frame continued 64 KiB at a time, each one small
                    raw.writer.write(frame(block, opcode=0 if sent else 1, fin=False))
                else:
                    raw.writer.write(block)
                sent += len(block)
                await raw.writer.drain()

    async with bounded(victim, "100 MB of whitespace"):
        closing = asyncio.ensure_future(raw.close_code(timeout=10))
        if not fragmented:  # one frame that announces 100 MB: refused on its header
            raw.writer.write(frame(b"", length=total))
        await pour(2 * MAX_SIZE)  # past max_size, then wait for the verdict
        code = await closing
        refused_after = sent
        await pour(total)  # the rest of the 100 MB: discarded or refused, never buffered
        await bystander_ok(bystander)
        raw.abort()
    assert code == 1009
    assert refused_after <= 2 * MAX_SIZE  # it answered before we sent more
    await bystander_ok(bystander)


async def test_the_server_survived_every_attack(victim, bystander) -> None:
    assert victim.alive()
    await bystander_ok(bystander, 10)
    raw = await Raw.open(victim.host, victim.port)
    await raw.send('{"type":"ping","ts":5}')
    assert await raw.recv_json() == {"type": "pong", "ts": 5}
    raw.abort()



def test_hardening_knobs_are_validated() -> None:
    for bad in ({"rate_limit": (0, 1.0)}, {"rate_limit": (10, 0)},
                {"max_connections_per_token": 0}, {"drop_rate": 1.5}, {"ack_delay": -1}):
        with pytest.raises(ValueError):
            wsnb.Server(port=0, loop="thread", **bad)
