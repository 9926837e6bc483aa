"""Server → client across a SIGKILL of the server process: every send that returned arrives once.

A server script with a SQLite store sends numbered messages to the client's
session and appends each number to a file (fsync) once `send` returned. The
process is killed mid-stream and started again (it sends nothing more). The
client must then hold every logged number, in order, with no repeat and no
gap; at most one more (recorded, killed before it could log it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import wsnb

SCRIPT = textwrap.dedent('''
    import asyncio, os, sys
    import wsnb

    port, url, log, mode, total = sys.argv[1:6]

    async def main():
        started = asyncio.Event()
        session = []

        def handler(s, payload):
            session.append(s.id)
            started.set()

        server = wsnb.Server(port=int(port), store=url, heartbeat_ms=500, handler=handler,
                             loop="current")
        await server.start()
        print(server.url, flush=True)
        if mode == "send":
            await asyncio.wait_for(started.wait(), 20)
            with open(log, "a") as out:
                for n in range(1, int(total) + 1):
                    await server.send(session[0], {"n": n})  # returns once recorded
                    out.write(f"{n}\\n")
                    out.flush()
                    os.fsync(out.fileno())
                    await asyncio.sleep(0.002)  # a steady pace, not synchronisation
        await asyncio.Event().wait()

    asyncio.run(main())
''')


def start(script: Path, port: int, url: str, log: Path, mode: str) -> tuple[Any, str]:
    process = subprocess.Popen([sys.executable, str(script), str(port), url, str(log), mode,
                                "400"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # the URL line: the server listens
    assert line.startswith("ws://"), line
    return process, line.split()[0]


def outbox_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM wsnb_outbox").fetchone()[0])


async def test_server_sends_survive_a_sigkill_exactly_once(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SCRIPT)
    db, log = tmp_path / "s.db", tmp_path / "sent.log"
    url = f"sqlite://{db}"
    process, ws_url = start(script, 0, url, log, "send")
    port = int(ws_url.rsplit(":", 1)[1])
    got: list[int] = []
    client = wsnb.Client(ws_url, on_message=lambda p: got.append(p["n"]),
                         backoff=wsnb.Backoff(base=0.02, cap=0.2))
    try:
        await client.connect()
        await client.send({"hello": 1})
        await client.wait_until(lambda c: len(got) >= 100, timeout=20)
        process.send_signal(signal.SIGKILL)  # mid-stream: sends in flight, acks in flight
        process.wait(timeout=10)
        logged = [int(n) for n in log.read_text().split()]
        assert 0 < len(logged) < 400, "the kill did not land mid-stream"  # got may be 1 ahead
        process, _ = start(script, port, url, log, "resume")
        await client.wait_until(lambda c: len(got) >= len(logged) and c.ready, timeout=20)
        deadline = time.monotonic() + 20  # until the client acked everything recorded
        while outbox_rows(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert outbox_rows(db) == 0
        assert got == list(range(1, len(got) + 1)), "a repeat or a gap"
        assert len(got) in (len(logged), len(logged) + 1)
        assert client.durable and client.resumed
    finally:
        await client.close()
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert not os.path.exists(f"{db}-journal")
