"""Receipt: what `send` returns; awaitable from any event loop or thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from typing import Any

from wsnb.errors import WsnbError


class Receipt:
    """The fate of one sent message: ``await receipt`` waits until it is acked.

    States: ``queued`` (in the outbox), ``written`` (on the socket), ``acked``,
    ``refused`` (nack, 1009, a final close) or ``dropped``. In raw mode nothing
    acks a message: the receipt resolves at ``written`` (handed to the socket),
    which says nothing about whether the server got it. Awaiting returns the receipt itself, so
    ``(await receipt).latency_ms`` works. ``at_least_once`` is True once the
    message was resent into a new session (the old one was lost): the server
    may have got it twice. ``id`` is its id in the session it was last sent in.
    """

    __slots__ = ("id", "state", "latency_ms", "error", "chunks", "raw", "at_least_once",
                 "_waiters", "_lock")

    def __init__(self, id: int, state: str = "queued", *, raw: bool = False) -> None:
        self.id = id
        self.state = state
        self.raw = raw  # no acks: "written" is as far as a raw message gets
        self.latency_ms: float | None = None
        self.error: WsnbError | None = None
        self.chunks: tuple[int, int] | None = None  # (written, total) for a chunked message
        self.at_least_once = False  # resent into a new session: may arrive twice
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] | None = None
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.state in ("acked", "refused", "dropped") or (
            self.raw and self.state == "written")

    def __repr__(self) -> str:
        extra = f" {self.latency_ms:.1f} ms" if self.latency_ms is not None else ""
        return f"<Receipt id={self.id} {self.state}{extra}>"

    def _settle(self, state: str, error: WsnbError | None = None) -> None:
        with self._lock:
            if self.done:
                return
            self.state, self.error = state, error
            waiters, self._waiters = self._waiters, None
        if not waiters:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, future in waiters:
            if loop is running:
                _wake(future)  # same loop: no need to wake the selector
            else:
                loop.call_soon_threadsafe(_wake, future)

    def __await__(self) -> Generator[Any, None, Receipt]:
        if not self.done:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Any] = loop.create_future()
            with self._lock:
                pending = not self.done
                if pending:
                    if self._waiters is None:
                        self._waiters = []
                    self._waiters.append((loop, future))
            if pending:
                yield from future.__await__()
        if self.error is not None:
            raise self.error
        return self

    async def wait(self, timeout: float | None = None) -> Receipt:
        """``await receipt`` with a timeout (`TimeoutError` naming the id)."""
        try:
            return await asyncio.wait_for(self._wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"message {self.id} not acked within {timeout} s "
                               f"(state {self.state})") from None

    async def _wait(self) -> Receipt:
        return await self


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
