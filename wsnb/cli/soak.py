"""``wsnb soak``: a bounded chaos soak on loopback: nothing lost, duplicated or reordered."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

from wsnb.cli._common import EXIT_USAGE, err

SOAK_MESSAGES = 10_000


def add_parser(sub: Any) -> None:
    soak = sub.add_parser(
        "soak", help="chaos soak on loopback: nothing lost, duplicated or reordered",
        description="Run a wsnb server, a FaultProxy and a client on 127.0.0.1, send N messages "
                    "each way while the link is cut, blackholed (and, with --restart, the "
                    "server restarted), then print one verdict line. Exit 0 when nothing was "
                    "lost, duplicated or delivered out of order either way, 1 otherwise.")
    soak.add_argument("--messages", type=int, default=SOAK_MESSAGES, metavar="N",
                      help=f"messages each way (default {SOAK_MESSAGES})")
    soak.add_argument("--cuts", type=int, default=10, metavar="K",
                      help="TCP cuts, both legs reset mid-traffic (default 10)")
    soak.add_argument("--blackholes", type=int, default=2, metavar="B",
                      help="blackholes: no bytes pass until the client sees the link dead "
                           "(default 2)")
    soak.add_argument("--restart", action="store_true",
                      help="also restart the server once (sessions kept)")
    soak.add_argument("--seconds", type=float, default=60.0, metavar="S",
                      help="time limit: what has not arrived by then counts as lost (default 60)")
    soak.add_argument("--seed", type=int, metavar="X",
                      help="seed for the order of faults (default: random, printed in the "
                           "verdict)")
    soak.add_argument("--no-progress", action="store_true", help="no progress bar")
    soak.set_defaults(run=cmd_soak)


def tally(got: list[int], n: int) -> tuple[int, int, int, int]:
    """``(delivered, lost, duplicated, out_of_order)`` for ids ``0..n-1`` arrived as `got`.

    Out of order: a first arrival of an id below one already seen.
    """
    seen: set[int] = set()
    duplicated = out_of_order = 0
    top = -1
    for i in got:
        if i in seen:
            duplicated += 1
            continue
        seen.add(i)
        if i < top:
            out_of_order += 1
        else:
            top = i
    delivered = sum(1 for i in seen if 0 <= i < n)
    return delivered, n - delivered, duplicated, out_of_order


def cmd_soak(args: argparse.Namespace) -> int:
    import random

    if args.messages < 1 or args.cuts < 0 or args.blackholes < 0 or not args.seconds > 0:
        err("soak", "--messages must be >= 1, --cuts and --blackholes >= 0, --seconds > 0")
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    return asyncio.run(_soak(args, seed, sys.stdout))


async def _soak(args: argparse.Namespace, seed: int, out: TextIO) -> int:
    import random

    from wsnb.client import Client, ReadyState
    from wsnb.progress import POLL_INTERVAL, progress
    from wsnb.protocol.backoff import Backoff
    from wsnb.proxy import FaultProxy
    from wsnb.server import Server

    n = args.messages
    plan = ["cut"] * args.cuts + ["blackhole"] * args.blackholes + ["restart"] * args.restart
    random.Random(seed).shuffle(plan)
    # Fault k lands when the client has sent (k + 1) / (faults + 1) of its messages: both
    # senders stop there until it is applied, so every fault hits mid-traffic.
    marks = [n * (k + 1) // (len(plan) + 1) for k in range(len(plan))]
    reached = [asyncio.Event() for _ in plan]
    applied = [asyncio.Event() for _ in plan]
    faults = dict.fromkeys(("cut", "blackhole", "restart"), 0)
    down: list[int] = []  # server -> client ids, in arrival order
    started = time.monotonic()
    deadline = started + args.seconds
    error = ""
    bar = progress(2 * n, "soak", enabled=False if args.no_progress else None, unit="msg")
    async with Server(port=0, token="soak", heartbeat_ms=100) as srv, \
            FaultProxy(srv.url) as proxy:
        client = Client(proxy.url, token="soak", backoff=Backoff(base=0.01, cap=0.1))
        session: str | None = None

        async def pause_at(i: int, k: int, *, lead: bool) -> int:
            while k < len(marks) and marks[k] == i:
                if lead:
                    reached[k].set()
                await applied[k].wait()
                k += 1
            return k

        async def send_up() -> None:
            k = 0
            for i in range(n):
                k = await pause_at(i, k, lead=True)
                await client.send({"c": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let the other direction interleave

        async def send_down() -> None:
            k = 0
            for i in range(n):
                k = await pause_at(i, k, lead=False)
                await srv.send(session, {"s": i})
                if i % 50 == 0:
                    await asyncio.sleep(0)

        async def receive() -> None:
            for _ in range(n):
                down.append((await client.recv())["s"])

        async def chaos() -> None:
            before = client.reconnects
            for k, fault in enumerate(plan):
                await reached[k].wait()
                # on a link the client has not yet seen fail and replace, a fault is a no-op
                await client.wait_until(lambda c, after=before: c.ready and c.reconnects >= after,
                                        timeout=None)
                before = client.reconnects + 1
                if fault == "cut":
                    proxy.cut()
                    applied[k].set()
                elif fault == "blackhole":
                    proxy.blackhole()
                    applied[k].set()
                    await client.wait_until(lambda c: c.ready_state != ReadyState.OPEN,
                                            timeout=None)
                    proxy.restore()
                else:
                    applied[k].set()
                    await srv.restart(keep_sessions=True)
                faults[fault] += 1

        async def watch() -> None:  # the bar, at 10 Hz until the deadline
            while time.monotonic() < deadline:
                bar.update(len(srv.delivered) + len(down) - bar.n)
                bar.set_postfix_str(f"faults {sum(faults.values())}/{len(plan)}", refresh=False)
                await asyncio.sleep(POLL_INTERVAL)

        watcher = asyncio.ensure_future(watch())
        try:
            await client.connect(timeout=min(10.0, args.seconds))
            session = client.session_id
            await asyncio.wait_for(asyncio.gather(send_up(), send_down(), receive(), chaos()),
                                   max(0.0, deadline - time.monotonic()))
            await client.drain(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            error = f"timed out after {args.seconds:g} s"
        except Exception as exc:  # reported in the verdict, never a traceback
            error = f"{type(exc).__name__}: {exc}"
        finally:
            watcher.cancel()
            down.extend(m["s"] for m in list(client.inbox) if isinstance(m, dict) and "s" in m)
            up = [p["c"] for p in srv.delivered if isinstance(p, dict) and "c" in p]
            bar.update(len(up) + len(down) - bar.n)
            bar.close()
            resumed = session is not None and client.session_id == session
            reconnects = client.reconnects
            await client.close()
    took = time.monotonic() - started
    results = [tally(up, n), tally(down, n)]
    ok = not error and all(r[1:] == (0, 0, 0) for r in results)
    ways = "; ".join(f"{way} {d}/{n} delivered, {lost} lost, {dup} duplicated, {ooo} out of order"
                     for way, (d, lost, dup, ooo) in zip(("client->server", "server->client"),
                                                         results, strict=True))
    applied_faults = ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in faults.items())
    print(f"wsnb soak: {'PASS' if ok else 'FAIL'}: {ways}; faults {applied_faults}; "
          f"{reconnects} reconnects, session {'resumed' if resumed else 'NOT resumed'}; "
          f"{took:.1f} s, seed {seed}" + (f"; {error}" if error else ""), file=out, flush=True)
    return 0 if ok else 1
