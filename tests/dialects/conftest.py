"""ASGI servers (uvicorn) on loopback for the dialect tests, stopped at the end."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

Serve = Callable[[Any], contextlib.AbstractAsyncContextManager[int]]


@pytest.fixture
async def serve_asgi() -> AsyncIterator[Serve]:
    """``async with serve_asgi(app) as port``: uvicorn serving `app` on 127.0.0.1.

    The socket is bound and listening before uvicorn starts, and ``startup``
    returns once uvicorn accepts on it: no waiting for a port to appear.
    """
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn runs the ASGI test servers")

    @contextlib.asynccontextmanager
    async def serve(app: Any) -> AsyncIterator[int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        config = uvicorn.Config(app, lifespan="off", log_level="warning",
                                timeout_graceful_shutdown=1, ws_ping_interval=None)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            await server.shutdown(sockets=[sock])
            sock.close()

    yield serve
