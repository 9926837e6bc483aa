"""Helpers shared by the BrowserSocket tests (fixtures are in conftest.py).

Imported by name (pytest advises against importing from a conftest.py).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class EchoServer:
    """A plain `websockets` echo server on 127.0.0.1 that remembers what it saw."""

    port: int = 0
    received: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event | None = None  # while set to an unset Event, handshakes wait

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/echo"

    def hold_handshakes(self) -> None:
        self.gate = asyncio.Event()

    def release_handshakes(self) -> None:
        assert self.gate is not None
        self.gate.set()


class ThreadEcho:
    """A `websockets` (sync API) echo server in a thread, recording each handshake's headers."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.headers: list[dict[str, str]] = []
        self.received: list[Any] = []
        self._server = serve(self._handler, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self, ws: Any) -> None:
        self.headers.append(dict(ws.request.headers))
        for message in ws:
            self.received.append(message)
            ws.send(message)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
