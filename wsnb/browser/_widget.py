"""The in-page backend: an anywidget view whose page (Lab, Notebook 7, VS Code) holds the socket.

The front-end module (`WIDGET_ESM`) keeps a driver per model per page; each
rendered view says hello with its page's id. The first page to say hello owns
the socket: commands go to every page as custom messages addressed to that
page id, only the owner runs them, and its replies and socket events come back
as custom messages. Those arrive on the kernel's main thread and are handed to
the socket's own loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

from wsnb.browser._driver import WIDGET_ESM
from wsnb.loop import call_soon

__all__ = ["PageView", "anywidget_available", "make_view"]

_view_class: type | None = None


def anywidget_available() -> bool:
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return True


def _define_view_class() -> type:
    global _view_class
    if _view_class is None:
        import anywidget
        import traitlets

        class BrowserSocketView(anywidget.AnyWidget):  # type: ignore[misc]
            """The status line of a `wsnb.browser.BrowserSocket`; its page holds the socket."""

            _esm = WIDGET_ESM
            _css = ".wsnb-browser-socket code { font-size: 12px; }"
            url = traitlets.Unicode("").tag(sync=True)
            ready_state = traitlets.Int(-1).tag(sync=True)  # -1: no socket yet
            page = traitlets.Unicode("").tag(sync=True)  # owner page id, or "headless"

        _view_class = BrowserSocketView
    return _view_class


def make_view(url: str) -> Any:
    return _define_view_class()(url=url)


class PageView:
    """Commands and events over one view's comm; owned by the page that rendered it first."""

    mode = "page"

    def __init__(self, view: Any, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self.view = view
        self._loop = loop
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.owner: str | None = None
        self.owner_info: dict[str, Any] = {}
        self.hello: asyncio.Future[dict[str, Any]] = loop.create_future()
        view.on_msg(self._on_msg)

    # kernel main thread
    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if "hello" in content:
            call_soon(self._loop, self._got_hello, content)
        elif "reply" in content:
            call_soon(self._loop, self._got_reply, content)
        elif "ev" in content and isinstance(content["ev"], dict):
            call_soon(self._loop, self._on_event, content["ev"])

    # own loop
    def _got_hello(self, content: dict[str, Any]) -> None:
        if self.owner is None and not self.hello.done():
            self.owner = str(content["hello"])
            self.owner_info = {"origin": content.get("origin"),
                               "userAgent": content.get("userAgent")}
            self.hello.set_result(content)

    def _got_reply(self, content: dict[str, Any]) -> None:
        future = self._pending.pop(content.get("reply"), None)
        if future is not None and not future.done():
            future.set_result(content)

    async def start(self) -> None:
        self.view.page = self.owner or ""

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[msg_id] = future
        try:
            self.view.send({"id": msg_id, "op": op, "args": args, "page": self.owner})
            return await future
        finally:
            self._pending.pop(msg_id, None)

    async def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
