"""Running the checks: `adoctor` (async) and `doctor` (blocking)."""

from __future__ import annotations

import asyncio
import math
import ssl as ssl_module
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from wsnb._secret import Secret, optional_secret
from wsnb.client import check_url
from wsnb.doctor.checks import _NEED_SESSION, _RUNNERS, _check_handshake, _heartbeat_rows
from wsnb.doctor.detect import _check_protocol
from wsnb.doctor.probe import (
    DEFAULT_CAP,
    Progress,
    _Ctx,
    _GreetFailed,
    _OpenFailed,
    _shut,
)
from wsnb.doctor.report import (
    CHECKS,
    Report,
    _clamp,
    _worst,
)
from wsnb.loop import background_loop, call_on, in_kernel, run


async def _run_check(ctx: _Ctx, name: str, timings: dict[str, float]) -> None:
    started = time.monotonic()
    ctx.report_progress(name, 0.0, "running")
    before = len(ctx.rows)
    try:
        if ctx.fatal is not None:
            ctx.add(name, "not run", f"could not connect ({ctx.fatal})", None, "skipped")
        elif ctx.greet_error is not None and name in _NEED_SESSION:
            ctx.add(name, "not run", ctx.greet_error, None, "skipped")
        else:
            await _RUNNERS[name](ctx)
    except (_OpenFailed, _GreetFailed) as exc:
        ctx.add(name, "connect", f"could not run: {exc}", None, "skipped",
                getattr(exc, "advice", ""))
    except Exception as exc:  # a doctor check must never take the report down with it
        ctx.add(name, "error", f"check could not finish: {type(exc).__name__}: {exc}"[:300],
                None, "skipped")
    timings[name] = time.monotonic() - started
    ctx.report_progress(name, 1.0, _worst(r.severity for r in ctx.rows[before:]))


def _parse_checks(checks: str | Iterable[str] | None) -> list[str]:
    if checks is None:
        return list(CHECKS)
    names = [s.strip() for s in checks.split(",")] if isinstance(checks, str) else list(checks)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(CHECKS)}")
    if not names:
        raise ValueError(f"no checks chosen; choose from {', '.join(CHECKS)}")
    return [n for n in CHECKS if n in names]


async def adoctor(
    url: str,
    token: str | Secret | None = None,
    *,
    checks: str | Iterable[str] | None = None,
    budget_s: float = 60.0,
    max_size_cap: int = DEFAULT_CAP,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Check the server at `url` for the failure modes WebSocket tutorials teach.

    ``checks``: names from `CHECKS` (a list or a comma-separated string), all by
    default. ``budget_s``: how long the idle check watches a silent connection
    (it runs alongside the other checks, so a run takes about ``budget_s``);
    ``max_size_cap``: the largest message the size check sends. ``token`` goes
    into wsnb's handshake frame; other servers take credentials in the URL or
    ``headers``. ``headers``, ``subprotocols`` and ``origin`` go to every probe
    connection's upgrade request (websockets' ``additional_headers``,
    ``subprotocols`` and ``origin``). ``progress(check, fraction, status)`` is
    called as checks advance (on the event loop running the doctor: wsnb's
    loop thread in Jupyter).
    """
    if in_kernel() and asyncio.get_running_loop() is not background_loop():
        # in Jupyter, run where the notebook's servers and clients live (wsnb's loop thread):
        # tasks started from a cell on the kernel's loop may stall (ipykernel #1510)
        return await call_on(background_loop(), adoctor(
            url, token, checks=checks, budget_s=budget_s, max_size_cap=max_size_cap, ssl=ssl,
            headers=headers, subprotocols=subprotocols, origin=origin, progress=progress))
    url = check_url(url)
    names = _parse_checks(checks)
    if not budget_s > 0 or not math.isfinite(budget_s):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    if max_size_cap < 1024:
        raise ValueError(f"max_size_cap must be at least 1024 bytes, got {max_size_cap}")
    if ssl is not None and not url.lower().startswith("wss:"):
        raise ValueError("ssl= is only for wss:// URLs")
    ctx = _Ctx(url=url, token=optional_secret(token), ssl=ssl, headers=dict(headers or {}),
               subprotocols=list(subprotocols or ()), budget_s=float(budget_s),
               cap=int(max_size_cap), progress=progress, origin=origin,
               open_timeout=_clamp(budget_s, 1.0, 10.0))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    timings: dict[str, float] = {}
    idle: asyncio.Future[None] | None = None
    try:
        t = time.monotonic()
        ctx.report_progress("handshake", 0.0, "running")
        try:
            await _check_handshake(ctx)
        except Exception as exc:  # a doctor bug must not hide what it found
            ctx.fatal = f"{type(exc).__name__}: {exc}"[:300]
            ctx.add("handshake", "error", f"check could not finish: {ctx.fatal}", None,
                    "skipped")
        timings["handshake"] = time.monotonic() - t
        ctx.report_progress("handshake", 1.0, _worst(r.severity for r in ctx.rows))
        if "handshake" not in names:
            ctx.rows = [r for r in ctx.rows if r.check != "handshake" or r.severity == "error"]
        later = [n for n in names if n not in ("handshake", "protocol")]
        if ctx.fatal is None and ("protocol" in names or later):
            t = time.monotonic()
            ctx.report_progress("protocol", 0.0, "running")
            try:
                await _check_protocol(ctx, report="protocol" in names)
            except Exception as exc:  # later checks then treat it as plain frames
                ctx.add("protocol", "error", f"check could not finish: {type(exc).__name__}: "
                        f"{exc}"[:300], None, "skipped")
            timings["protocol"] = time.monotonic() - t
            ctx.report_progress("protocol", 1.0,
                                _worst(r.severity for r in ctx.rows if r.check == "protocol"))
        elif "protocol" in names:
            await _run_check(ctx, "protocol", timings)  # adds the "skipped" row
        if "idle" in names:  # the idle wait runs alongside everything else
            idle = asyncio.ensure_future(_run_check(ctx, "idle", timings))
        for name in later:
            if name != "idle":
                await _run_check(ctx, name, timings)
        if idle is not None:
            await idle
        if "liveness" in names and ctx.fatal is None and ctx.greet_error is None:
            _heartbeat_rows(ctx)
    finally:
        if idle is not None and not idle.done():
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)
        for conn in list(ctx.conns):
            await _shut(ctx, conn)
    order = {n: i for i, n in enumerate(CHECKS)}
    rows = sorted(ctx.rows, key=lambda r: order.get(r.check, len(order)))
    return Report(url, rows, facts=ctx.facts, timings=timings, checks=names,
                  started=started_at, duration_s=time.monotonic() - started)


def doctor(
    url: str,
    token: str | Secret | None = None,
    *,
    checks: str | Iterable[str] | None = None,
    budget_s: float = 60.0,
    max_size_cap: int = DEFAULT_CAP,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Check a WebSocket server and return a `Report` (blocks; see `adoctor` for the options).

    In a script this runs its own event loop; in a Jupyter kernel it runs on
    wsnb's loop thread (where servers made in the notebook live) and blocks
    the cell; inside another running loop it uses `wsnb.run`. From async code
    prefer ``await wsnb.adoctor(...)``.
    """
    coro = adoctor(url, token, checks=checks, budget_s=budget_s, max_size_cap=max_size_cap,
                   ssl=ssl, headers=headers, subprotocols=subprotocols, origin=origin,
                   progress=progress)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and in_kernel():
        loop = background_loop()
        if running is loop:
            coro.close()
            raise RuntimeError("doctor() would block wsnb's loop thread: await adoctor()")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
    return run(coro)
