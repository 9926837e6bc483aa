"""Fixtures for the BrowserSocket tests: loopback echo servers, sockets closed after each test.

Every test here drives a real Chromium; without /usr/bin/chromium or Playwright
the whole folder is skipped with a reason that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from lane_helpers import CHROMIUM, EchoServer, ThreadEcho


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = f"SKIPPED LOUDLY: {CHROMIUM} not found: BrowserSocket tests need Chromium"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "SKIPPED LOUDLY: playwright is not installed: BrowserSocket tests need it"
    if missing is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=missing))


@pytest.fixture(scope="session", autouse=True)
def _shared_chromium_closed() -> Iterator[None]:
    """Close the process-wide headless Chromium after the session."""
    yield
    from wsnb.browser import _headless

    _headless.shutdown_sync()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    from websockets.asyncio.server import serve

    state = EchoServer()

    async def process_request(connection: Any, request: Any) -> None:
        state.headers.append(dict(request.headers))
        if state.gate is not None:
            await asyncio.wait_for(state.gate.wait(), 20)  # bounded: never hangs a test
        return None

    async def handler(ws: Any) -> None:
        async for message in ws:
            state.received.append(message)
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        state.port = server.sockets[0].getsockname()[1]
        yield state


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
async def make_sock() -> AsyncIterator[Any]:
    """Build BrowserSockets (headless unless told) that are shut down after the test."""
    from wsnb.browser import BrowserSocket

    made: list[BrowserSocket] = []

    def make(url: str, **kwargs: Any) -> BrowserSocket:
        sock = BrowserSocket(url, **kwargs)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sock.aclose(), 10)


@pytest.fixture
def echo_thread() -> Iterator[ThreadEcho]:
    server = ThreadEcho()
    try:
        yield server
    finally:
        server.close()
