"""The doctor against stock third-party servers, each started here on 127.0.0.1.

Node ``ws``, uvicorn + FastAPI, aiohttp, python-socketio (ASGI on uvicorn)
and nginx in front of an echo server. Healthy stock servers must get no
warning or error; each planted limit (small max size, no pongs, a 2 s
``proxy_read_timeout``) must be found, with the close code the server really
sends. A test skips, saying why, only when its tool is not installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from doctor_servers import (
    aiohttp_echo,
    fastapi_echo,
    nginx_proxy,
    node_ws_echo,
    socketio_asgi,
    websockets_echo,
)

from wsnb.doctor import Report, adoctor, cli_main

CAP = 256 * 1024
BUDGET = 1.0


async def check(url: str, **kwargs: Any) -> Report:
    kwargs.setdefault("budget_s", BUDGET)
    kwargs.setdefault("max_size_cap", CAP)
    return await adoctor(url, **kwargs)


def problems(report: Report) -> set[tuple[str, str]]:
    return {(r.check, r.item) for r in report.rows if r.severity in ("warning", "error")}


def healthy_echo(report: Report) -> None:
    """What every healthy stock echo server must look like."""
    assert report.ok and report.exit_code == 0, report.summary()
    facts = report.facts
    assert facts["protocol"] == "echo/raw" and facts["echo"] is True, report.summary()
    assert facts["pings_answered"] == 20
    assert facts["idle_timeout_s"] is None
    assert facts["max_message_accepted_bytes"] == CAP
    assert facts["close_code_back"] == 1000
    assert facts["reconnects_accepted"] == 5 and facts["reconnect_p50_ms"] < 250


def size_limit(report: Report, limit: int, code: int) -> str:
    assert report.facts["max_message_bytes"] == limit, report.summary()
    assert report.facts["max_message_refused_bytes"] == limit + 1
    assert report.facts["size_close_code"] == code
    (row,) = report.get("size", "max text message")
    assert f"refused: {code}" in row.result
    return row.severity


# ----- Node ws ---------------------------------------------------------------------------


async def test_node_ws_echo_is_healthy_and_the_cli_exits_0(
        capsys: pytest.CaptureFixture[str]) -> None:
    async with node_ws_echo() as url:
        report = await check(url)
        code = await asyncio.to_thread(cli_main, [url, "--budget", "1", "--max-size-cap",
                                                  "256KiB", "--json"])
    healthy_echo(report)
    assert report.facts["subprotocol"] is None  # nothing was offered to it in the handshake
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["facts"]["protocol"] == "echo/raw"
    assert not [f for f in data["findings"] if f["severity"] in ("warning", "error")]


async def test_node_ws_max_payload_is_found_with_1009() -> None:
    async with node_ws_echo(maxPayload=64 * 1024) as url:
        report = await check(url, checks="protocol,liveness,size")
    assert size_limit(report, 64 * 1024, 1009) == "info"  # a sane limit, refused properly
    assert report.ok, report.summary()


async def test_node_ws_without_pongs() -> None:
    async with node_ws_echo(autoPong=False) as url:
        report = await check(url, checks="protocol,liveness,size,reconnect")
    assert problems(report) == {("liveness", "WebSocket pings")}, report.summary()
    assert report.facts["pings_answered"] == 0
    assert report.facts["max_message_accepted_bytes"] == CAP  # found from the echoes
    # without pongs the doctor watches each reconnect for 0.3 s; that is not reconnect time
    assert report.facts["reconnect_p50_ms"] < 250


# ----- uvicorn + FastAPI -----------------------------------------------------------------


async def test_uvicorn_fastapi_echo_is_healthy() -> None:
    async with fastapi_echo() as url:
        report = await check(url)
    healthy_echo(report)
    assert report.facts["server"] == "uvicorn"


async def test_uvicorn_ws_max_size_is_found_with_1009() -> None:
    async with fastapi_echo(ws_max_size=32 * 1024) as url:
        report = await check(url, checks="protocol,liveness,size")
    assert size_limit(report, 32 * 1024, 1009) == "warning"  # small: JSON tables exceed it
    assert problems(report) == {("size", "max text message")}
    assert "not 1009" not in report.get("size", "max text message")[0].advice


# ----- aiohttp ---------------------------------------------------------------------------


async def test_aiohttp_echo_is_healthy() -> None:
    async with aiohttp_echo() as url:
        report = await check(url)
    healthy_echo(report)
    assert "aiohttp" in report.facts["server"]


async def test_aiohttp_max_msg_size_is_found_with_1009() -> None:
    async with aiohttp_echo(max_msg_size=32 * 1024) as url:
        report = await check(url, checks="protocol,liveness,size")
    # aiohttp refuses a message of max_msg_size bytes itself: the limit is one byte less
    assert size_limit(report, 32 * 1024 - 1, 1009) == "warning"
    assert problems(report) == {("size", "max text message")}


# ----- python-socketio on uvicorn --------------------------------------------------------


async def test_python_socketio_is_healthy() -> None:
    async with socketio_asgi(ping_interval=0.25) as url:
        report = await check(url)
    assert report.ok and report.exit_code == 0, report.summary()
    facts = report.facts
    # (python-engineio advertises int(0.25) * 1000 = 0 ms: the doctor measures it instead)
    assert facts["protocol"] == "socket.io" and "engineio_ping_interval_ms" in facts
    assert 0.15 < facts["app_heartbeat_interval_s"] < 0.5  # Engine.IO "2", answered "3"
    assert facts["idle_timeout_s"] is None and facts["close_code_back"] == 1000
    assert facts["max_message_accepted_bytes"] == CAP and facts["reconnects_accepted"] == 5


async def test_python_socketio_buffer_size_is_found() -> None:
    async with socketio_asgi(max_http_buffer_size=32 * 1024) as url:
        report = await check(url, checks="protocol,liveness,size")
    # python-engineio closes an oversized packet's connection with 1000, not 1009: told so
    assert size_limit(report, 32 * 1024, 1000) == "warning"
    assert "not 1009" in report.get("size", "max text message")[0].advice


# ----- nginx -----------------------------------------------------------------------------


async def test_nginx_proxy_read_timeout_is_found_as_an_idle_cut() -> None:
    async with websockets_echo() as upstream, nginx_proxy(upstream, "2s") as url:
        report = await check(url, budget_s=3.5)
    assert problems(report) == {("idle", "idle timeout")}, report.summary()
    facts = report.facts
    assert 1.8 <= facts["idle_timeout_s"] <= 2.6 and facts["idle_close_code"] == 1006
    assert facts["protocol"] == "echo/raw" and "nginx" in facts["server"]
    (row,) = report.get("idle", "idle timeout")
    assert "without a close frame" in row.result and "heartbeat" in row.advice
    assert facts["pings_answered"] == 20 and facts["close_code_back"] == 1000
