"""Chaos soak: issue 2, point 9. Bounded to well under 60 s."""

from __future__ import annotations

import asyncio
import random

import wsnb
from wsnb import ReadyState

N = 5_000


async def test_chaos_soak_loses_nothing_duplicates_nothing_keeps_order(make_client) -> None:
    rng = random.Random(7)
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, backoff=wsnb.Backoff(base=0.01, cap=0.1))
        await client.connect(timeout=5)
        session_id = client.session_id
        faults = {"cut": 0, "blackhole": 0, "restart": 0}

        async def client_sends() -> None:
            for i in range(N):
                await client.send({"c": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let the other side's traffic interleave

        async def server_sends() -> None:
            for i in range(N):
                await srv.send(session_id, {"s": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)

        received: list[object] = []

        async def client_receives() -> None:
            for _ in range(N):
                received.append(await client.recv(timeout=30))

        async def chaos() -> None:
            plan = ["cut"] * 22 + ["blackhole"] * 2 + ["restart"]
            rng.shuffle(plan)
            for fault in plan:  # bounded: 25 faults
                await asyncio.sleep(rng.uniform(0.02, 0.08))  # pacing, not synchronisation
                await client.wait_until(lambda c: c.ready, timeout=10)
                if fault == "cut":
                    proxy.cut()
                elif fault == "blackhole":
                    proxy.blackhole()
                    await client.wait_until(lambda c: c.ready_state != ReadyState.OPEN,
                                            timeout=5)
                    proxy.restore()
                else:
                    await srv.restart(keep_sessions=True)
                faults[fault] += 1

        await asyncio.wait_for(
            asyncio.gather(client_sends(), server_sends(), client_receives(), chaos()), 50)
        await client.drain(timeout=20)

        assert faults == {"cut": 22, "blackhole": 2, "restart": 1}
        assert client.reconnects >= 20
        assert client.session_id == session_id  # every reconnect resumed
        assert srv.delivered == [{"c": i} for i in range(N)]  # 0 lost, 0 dup, in order
        assert received == [{"s": i} for i in range(N)]
