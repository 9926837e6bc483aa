"""``wsnb serve --workers N``: N server processes on one port, started again if one dies.

Each worker is ``wsnb serve --reuse-port`` with the same options; the kernel
spreads new connections across them (SO_REUSEPORT). Sessions live in the
shared store, so a client cut from a dead worker resumes on another one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from typing import TextIO

from wsnb.cli._common import EXIT_OK, err, status_lines

#: A worker that dies more often than this many times a minute is not started again.
MAX_RESTARTS_PER_MINUTE = 10


def _worker_argv(args: argparse.Namespace, port: int) -> list[str]:
    """The argv of one worker: this command's own options, one process, --reuse-port."""
    out: list[str] = []
    skip = False
    for item in args.argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in ("--workers", "--port", "--status-interval"):
            skip = "=" not in item
            continue
        out.append(item)
    if not out or out[0] != "serve":
        out = ["serve", *[a for a in out if a != "serve"]]
    return [sys.executable, "-m", "wsnb", *out, "--port", str(port), "--reuse-port",
            "--quiet"]


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Worker:
    """One worker process and what it printed first (its URL line)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.drain: asyncio.Task[None] | None = None

    async def start(self, argv: list[str], timeout: float = 15.0) -> str:
        # stdin is a pipe nobody writes: it closes when this process dies, and the worker
        # takes that as its signal to stop (no orphans after a SIGKILL of the supervisor).
        self.process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE)
        self.started_at = time.monotonic()
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if not line:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            raise RuntimeError(f"worker {self.index} did not start (exit code "
                               f"{await self.process.wait()})")
        self.drain = asyncio.ensure_future(self._drain())
        return line.decode().strip()

    async def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while await self.process.stdout.read(65536):
            pass


async def supervise(args: argparse.Namespace, out: TextIO) -> int:
    """Run `args.workers` workers until SIGINT/SIGTERM; restart those that die."""
    from wsnb.cli.serve import stop_on_signals

    port = args.port or _free_port(args.host)
    argv = _worker_argv(args, port)
    workers = [Worker(i) for i in range(args.workers)]
    restarts: list[float] = []
    async with stop_on_signals() as (stop, received):
        try:
            lines = await asyncio.gather(*(w.start(argv) for w in workers))
        except (RuntimeError, OSError) as exc:
            err("serve", str(exc))
            await _stop_all(workers)
            return 1
        url = lines[0].split()[0]
        pids = ", ".join(str(w.process.pid) for w in workers if w.process is not None)
        print(f"{url}  wsnb serve: {args.workers} workers (pids {pids}) sharing "
              f"{args.store}; Ctrl-C stops them all", file=out, flush=True)

        async def watch(worker: Worker) -> None:
            while not stop.is_set():
                assert worker.process is not None
                waiter = asyncio.ensure_future(worker.process.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if stop.is_set():
                    waiter.cancel()
                    return
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < 60] + [now]
                code = worker.process.returncode
                if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                    err("serve", f"worker {worker.index} exited ({code}); more than "
                                 f"{MAX_RESTARTS_PER_MINUTE} restarts in a minute: not again")
                    return
                err("serve", f"worker {worker.index} (pid {worker.process.pid}) exited "
                             f"({code}); starting it again")
                try:
                    await worker.start(argv)
                except (RuntimeError, OSError) as exc:
                    err("serve", str(exc))
                    return

        watchers = [asyncio.ensure_future(watch(w)) for w in workers]

        def render(_rate: float) -> str:
            alive = sum(1 for w in workers
                        if w.process is not None and w.process.returncode is None)
            return f"workers {alive}/{len(workers)} alive · restarts {len(restarts)}"

        await status_lines(stop, out, interval=args.status_interval, quiet=args.quiet,
                           count=lambda: len(restarts), render=render)
        for task in watchers:
            task.cancel()
        await _stop_all(workers)
    print(f"stopped ({', '.join(received) or 'done'}): {len(workers)} workers", file=out,
          flush=True)
    return EXIT_OK


async def _stop_all(workers: list[Worker], timeout: float = 10.0) -> None:
    """SIGTERM every worker (each closes its clients with 1001); SIGKILL after `timeout`."""
    running = [w.process for w in workers if w.process is not None
               and w.process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    if running:
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running],
                                     timeout=timeout)
        for process in running:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if late:
            await asyncio.wait(late, timeout=timeout)
