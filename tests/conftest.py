"""Shared fixtures: everything on loopback, everything closed at the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

import wsnb


@pytest.fixture
async def server() -> AsyncIterator[wsnb.Server]:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=200) as srv:
        yield srv


@pytest.fixture
async def make_client() -> AsyncIterator:
    """Build clients that are closed after the test."""
    made: list[wsnb.Client] = []

    def make(url: str, **kwargs: object) -> wsnb.Client:
        kwargs.setdefault("token", "demo")
        kwargs.setdefault("backoff", wsnb.Backoff(base=0.02, cap=0.2))
        client = wsnb.Client(url, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.close()
