"""`BrowserSocket`: a real browser ``WebSocket``, driven from Python.

Where it lives (the rule, decided once, at the first call that needs the page):

1. ``headless=True``, or ``$WSNB_BROWSER=headless``: a headless Chromium page.
2. Inside an IPython kernel with anywidget installed (and ``headless`` not True),
   the constructor displays a small view. If a front end (JupyterLab, Notebook 7,
   VS Code) renders it and says hello within ``render_timeout`` seconds (2 s by
   default), the WebSocket is created in *that* page: the notebook's own origin,
   cookies, proxy and browser. Otherwise (nbval, nbclient, papermill, a closed
   tab) it falls back to headless Chromium, and says so on the timeline.
   ``headless=False`` insists on the page and raises instead of falling back.
3. Anywhere else (a script, pytest, CI): headless Chromium.

When neither is possible, `BrowserUnavailable` names what to install. ``sock.mode``
("page" or "headless") and ``sock.mode_reason`` say which was picked and why; the
timeline gets a ``PAGE`` / ``HEADLESS`` state row too. The render check needs the
kernel to handle widget messages while a cell awaits (ipykernel 7.4 does); on a
kernel that does not, build the socket in one cell and connect in the next.

A page (or its view) that goes away takes its socket with it: calls then fail
with `BrowserError` after ``call_timeout``.

Everything is async: the browser's ``send`` and ``close`` are synchronous, but
the page that runs them is across a process boundary, so ``await sock.send(x)``
returns once the page has really called ``socket.send(x)``, with the page's
DOMException mapped (`InvalidStateError` while CONNECTING).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsnb.browser import _headless, _widget
from wsnb.browser._errors import (
    BrowserError,
    BrowserUnavailable,
    CloseInfo,
    JSError,
    NotOpened,
    dom_exception,
)
from wsnb.client import ReadyState
from wsnb.loop import choose_loop, in_kernel, on_own_loop
from wsnb.timeline import Timeline

__all__ = ["BrowserSocket", "JsResult"]

DETAIL_CHARS = 120  # message text kept in a timeline row's detail
_sids = itertools.count(1)


@dataclass
class JsResult:
    """What `BrowserSocket.run_js` saw: console lines, the result or the thrown error."""

    console: list[str]
    result: Any = None
    error: JSError | None = None
    levels: list[str] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def error_name(self) -> str | None:
        return self.error.name if self.error is not None else None

    def raise_for_error(self) -> JsResult:
        """Raise the snippet's error (mapped like `send`'s); else return self."""
        if self.error is not None:
            raise self.error
        return self


def _short(text: str, limit: int = DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _encode(value: Any) -> dict[str, Any]:
    """How `value` crosses to the page: bytes as an ArrayBuffer, anything else as a JS value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"kind": "bytes", "data": base64.b64encode(bytes(value)).decode("ascii")}
    return {"kind": "value", "data": value}


class BrowserSocket:
    """A browser ``WebSocket`` in the notebook's page, or in headless Chromium (see module doc).

    ``ready_state`` (a `wsnb.client.ReadyState`, None before `start`),
    ``buffered_amount``, ``protocol`` and ``extensions`` mirror the page's
    object as of its last event or command. Events go to ``timeline`` (shared
    with other wsnb clients if you pass one) with ``peer=name``.
    """

    def __init__(
        self,
        url: str,
        protocols: str | Sequence[str] | None = None,
        timeline: Timeline | None = None,
        headless: bool | None = None,
        name: str = "browser",
        *,
        render_timeout: float | None = None,
        call_timeout: float = 15.0,
        max_messages: int = 10_000,
        loop: Any = "auto",
    ) -> None:
        self.url = url
        self.protocols = (None if protocols is None
                          else protocols if isinstance(protocols, str) else list(protocols))
        self.timeline = timeline if timeline is not None else Timeline()
        self.name = name
        self.headless = headless
        self.render_timeout = (render_timeout if render_timeout is not None
                               else 30.0 if headless is False else 2.0)
        self.call_timeout = call_timeout
        self._loop = choose_loop(loop)
        self._sid = f"s{next(_sids)}-{secrets.token_hex(4)}"
        self._backend: Any = None
        self._backend_task: asyncio.Future[Any] | None = None
        self.mode: str | None = None  # "page" or "headless" once decided
        self.mode_reason = ""
        self.ready_state: ReadyState | None = None
        self._recorded_state: ReadyState | None = None
        self._close_called = False
        self.buffered_amount = 0
        self.protocol = ""
        self.extensions = ""
        self.page_url = ""  # the socket's url as the page resolved it (http: becomes ws:)
        self.close_info: CloseInfo | None = None
        self.error_events = 0
        self.received_count = 0  # messages received (``messages`` keeps the last max_messages)
        self._consumed = 0  # next_message's cursor
        self._messages: collections.deque[str | bytes | None] = collections.deque(
            maxlen=max_messages)
        self._seq = 0
        self._started = False
        self._shut = False
        self._watchers: list[tuple[Callable[[BrowserSocket], Any], asyncio.Future[None]]] = []
        self._opened: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[CloseInfo] | None = None
        self._started_at = 0.0
        self._view: Any = None
        self._page: _widget.PageView | None = None
        forced = os.environ.get("WSNB_BROWSER", "").lower() == "headless"
        if headless is not True and not forced and in_kernel() and _widget.anywidget_available():
            self._view = _widget.make_view(url)
            self._page = _widget.PageView(self._view, self._loop, self._on_event_here)
            from IPython.display import display

            display(self._view)
        elif headless is False:
            why = ("not inside an IPython kernel" if not in_kernel()
                   else "anywidget is not installed (pip install anywidget)"
                   if not _widget.anywidget_available() else "WSNB_BROWSER=headless is set")
            raise BrowserUnavailable(f"headless=False needs a notebook front end: {why}")

    def __repr__(self) -> str:
        state = self.ready_state.name if self.ready_state is not None else "not started"
        return f"<wsnb.browser.BrowserSocket {self.url} {state} mode={self.mode or '?'}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self._view is not None:  # show the live view again, not a second socket
            return self._view._repr_mimebundle_(**kwargs)
        return {"text/plain": repr(self)}

    # ----- state mirrored from the page ---------------------------------------

    @property
    def messages(self) -> list[str | bytes | None]:
        """Received messages: text as str, ArrayBuffers as bytes (a Blob as None)."""
        return list(self._messages)

    def _apply(self, snap: dict[str, Any], detail: str = "", *, quiet: bool = False) -> None:
        """Mirror a page snapshot; a readyState change gets a ``state`` row unless ``quiet``."""
        seq = snap.get("seq", 0)
        if seq <= self._seq:
            return  # older than what we already know (reply and event raced)
        self._seq = seq
        self.buffered_amount = int(snap.get("bufferedAmount", 0))
        self.protocol = snap.get("protocol", "") or ""
        self.extensions = snap.get("extensions", "") or ""
        self.page_url = snap.get("url", self.page_url) or self.page_url
        state = ReadyState(int(snap["readyState"]))
        self.ready_state = state
        if state == self._recorded_state or quiet:
            return
        # An event can overtake the reply that carried an earlier state: fill in the
        # states the socket must have passed through (every socket starts CONNECTING;
        # close() makes it CLOSING at once) so the rows stay in the browser's order.
        if self._recorded_state is None and state != ReadyState.CONNECTING:
            self._record_state(ReadyState.CONNECTING, f"new WebSocket({self.url!r})")
        if (state == ReadyState.CLOSED and self._close_called
                and self._recorded_state in (ReadyState.CONNECTING, ReadyState.OPEN)):
            self._record_state(ReadyState.CLOSING, "close()")
        self._record_state(state, detail)

    def _record_state(self, state: ReadyState, detail: str) -> None:
        self._recorded_state = state
        self.timeline.record("state", state=state.name, peer=self.name, detail=detail)
        if self._view is not None:
            self._view.ready_state = int(state)

    def _on_event(self, ev: dict[str, Any]) -> None:
        """From any thread: hand a page event to our loop."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_event_here, ev)

    def _on_event_here(self, ev: dict[str, Any]) -> None:
        if ev.get("sid") != self._sid:
            self._record_snippet_event(ev)
            return
        kind = ev.get("ev")
        if kind == "open":
            detail = f"protocol={ev.get('protocol')!r} extensions={ev.get('extensions')!r}"
            self._apply(ev, detail)
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(None)
        elif kind == "message":
            self._apply(ev)
            msg = self._message_value(ev)
            self._messages.append(msg)
            self.received_count += 1
            text = msg if isinstance(msg, str) else f"<{ev.get('kind')} {ev.get('size')} bytes>"
            self.timeline.record("received", direction="in", size=int(ev.get("size", 0)),
                                 peer=self.name, detail=_short(text))
        elif kind == "error":
            self.error_events += 1
            state = ReadyState(int(ev["readyState"])).name
            self.timeline.record("error", peer=self.name,
                                 detail=f"error event (readyState {state}; the browser "
                                        "gives no reason)")
            self._apply(ev, quiet=True)  # the close event that follows records CLOSED
        elif kind == "close":
            info = CloseInfo(int(ev.get("code", 1006)), str(ev.get("reason", "")),
                             bool(ev.get("wasClean")))
            self.close_info = info
            self.timeline.record("close", peer=self.name, detail=str(info))
            self._apply(ev, str(info))
            if self._opened is not None and not self._opened.done():
                self._opened.set_exception(NotOpened(self.url, info, self.error_events))
                self._opened.exception()  # retrieved here; connect() re-raises it
            if self._closed is not None and not self._closed.done():
                self._closed.set_result(info)
        self._wake()

    @staticmethod
    def _message_value(ev: dict[str, Any]) -> str | bytes | None:
        if ev.get("kind") == "text":
            return str(ev.get("data", ""))
        if ev.get("kind") == "bytes":
            return base64.b64decode(ev.get("data") or "")
        return None

    def _record_snippet_event(self, ev: dict[str, Any]) -> None:
        """A socket that a `run_js` snippet created: rows only, peer ``<name>/js``."""
        peer = f"{self.name}/js"
        kind = ev.get("ev")
        if kind == "open":
            self.timeline.record("state", state="OPEN", peer=peer, detail=str(ev.get("url")))
        elif kind == "message":
            text = ev.get("data") if ev.get("kind") == "text" else f"<{ev.get('kind')}>"
            self.timeline.record("received", direction="in", size=int(ev.get("size", 0)),
                                 peer=peer, detail=_short(str(text)))
        elif kind == "error":
            self.timeline.record("error", peer=peer, detail="error event")
        elif kind == "close":
            info = CloseInfo(int(ev.get("code", 1006)), str(ev.get("reason", "")),
                             bool(ev.get("wasClean")))
            self.timeline.record("close", peer=peer, detail=str(info))
            self.timeline.record("state", state="CLOSED", peer=peer)

    def _wake(self) -> None:
        for predicate, future in list(self._watchers):
            if future.done():
                continue
            try:
                if predicate(self):
                    future.set_result(None)
            except Exception as exc:  # noqa: BLE001 - the waiter sees it
                future.set_exception(exc)

    # ----- the backend ----------------------------------------------------------

    async def _ensure_backend(self) -> Any:
        if self._shut:
            raise BrowserError("this BrowserSocket was shut down (aclose); make a new one")
        if self._backend is not None:
            return self._backend
        if self._backend_task is None:
            self._backend_task = asyncio.ensure_future(self._choose_backend())
        return await asyncio.shield(self._backend_task)

    async def _choose_backend(self) -> Any:
        if self._page is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._page.hello), self.render_timeout)
            except TimeoutError:
                if self.headless is False:
                    raise BrowserUnavailable(
                        f"no notebook front end rendered the BrowserSocket view within "
                        f"{self.render_timeout} s (headless=False)") from None
                self.mode_reason = (f"no front end rendered the view within "
                                    f"{self.render_timeout} s: headless Chromium")
            else:
                await self._page.start()
                self.mode, self._backend = "page", self._page
                origin = self._page.owner_info.get("origin") or "?"
                self.mode_reason = f"in the page that rendered the view ({origin})"
                self.timeline.record("state", state="PAGE", peer=self.name,
                                     detail=self.mode_reason)
                return self._backend
        elif not self.mode_reason:
            self.mode_reason = ("headless=True" if self.headless
                                else "WSNB_BROWSER=headless"
                                if os.environ.get("WSNB_BROWSER", "").lower() == "headless"
                                else "not inside a notebook front end: headless Chromium")
        missing = _headless.available()
        if missing is not None:
            needs = (" (or pip install anywidget and run it in JupyterLab / Notebook 7 / VS Code)"
                     if self._page is None and self.headless is not True else "")
            raise BrowserUnavailable(f"no browser to host the WebSocket: {missing}; "
                                     f"{_headless.INSTALL_HINT}{needs}")
        backend = _headless.HeadlessPage(self._on_event)
        await backend.start()
        if self._view is not None:
            self._view.page = "headless"
        self.mode, self._backend = "headless", backend
        self.timeline.record("state", state="HEADLESS", peer=self.name, detail=self.mode_reason)
        return backend

    async def _call(self, op: str, **args: Any) -> Any:
        backend = await self._ensure_backend()
        try:
            reply = await asyncio.wait_for(backend.call(op, args), self.call_timeout)
        except TimeoutError:
            raise BrowserError(f"the page did not answer {op!r} within {self.call_timeout} s"
                               + (" (was the view's output cleared?)" if self.mode == "page"
                                  else "")) from None
        if not reply.get("ok"):
            raise dom_exception(str(reply.get("name", "Error")), str(reply.get("message", "")))
        return reply.get("result")

    # ----- the WebSocket API ---------------------------------------------------------

    @on_own_loop
    async def start(self) -> BrowserSocket:
        """``new WebSocket(url, protocols)`` in the page; returns while it is CONNECTING."""
        if self._started:
            return self
        self._opened = self._loop.create_future()
        self._closed = self._loop.create_future()
        self._started_at = time.monotonic()
        snap = await self._call("open", sid=self._sid, url=self.url, protocols=self.protocols)
        self._started = True
        self._apply(snap, f"new WebSocket({self.url!r})")
        return self

    @on_own_loop
    async def connect(self, timeout: float = 10.0) -> BrowserSocket:
        """`start`, then wait for ``open``; `NotOpened` (with the CloseEvent) if it closed first."""
        await self.start()
        assert self._opened is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        except TimeoutError:
            raise TimeoutError(f"browser WebSocket to {self.url} not open within {timeout} s "
                               f"(readyState {self._state_name()})") from None
        return self

    def _state_name(self) -> str:
        return self.ready_state.name if self.ready_state is not None else "not started"

    def _need_started(self, what: str) -> None:
        if not self._started:
            raise BrowserError(f"{what}: no WebSocket in the page yet; "
                               "await sock.start() or sock.connect() first")

    @on_own_loop
    async def send(self, value: Any) -> None:
        """``socket.send(value)`` in the page, with the browser's semantics.

        str goes as text, bytes as an ArrayBuffer, anything else as the JS value
        it becomes through JSON (so a dict arrives as ``"[object Object]"``).
        Raises `InvalidStateError` while CONNECTING; after close the browser
        discards the data silently and only ``buffered_amount`` grows.
        """
        self._need_started("send")
        try:
            snap = await self._call("send", sid=self._sid, value=_encode(value))
        except JSError as exc:
            self.timeline.record("dropped", direction="out", peer=self.name,
                                 detail=_short(f"send() threw {exc}"))
            raise
        self._apply(snap)
        size = int(snap.get("size", 0))
        text = snap.get("text")
        shown = _short(text) if text is not None else f"<ArrayBuffer {size} bytes>"
        if int(snap["readyState"]) >= ReadyState.CLOSING:
            self.timeline.record("dropped", direction="out", size=size, peer=self.name,
                                 detail=_short(f"send() after close: discarded silently, "
                                               f"bufferedAmount {snap['bufferedAmount']}"))
        else:
            self.timeline.record("sent", direction="out", size=size, peer=self.name,
                                 detail=shown)

    @on_own_loop
    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """``socket.close(code, reason)`` in the page (its DOMExceptions mapped)."""
        self._need_started("close")
        was_called, self._close_called = self._close_called, True
        try:
            snap = await self._call("close", sid=self._sid, code=code, reason=reason)
        except JSError:
            self._close_called = was_called  # the page threw: readyState did not change
            raise
        self._apply(snap, f"close({'' if code is None else code}"
                          f"{'' if reason is None else ', ' + repr(reason)})")

    @on_own_loop
    async def wait_closed(self, timeout: float | None = 10.0) -> CloseInfo:
        """Wait for the ``close`` event; its code, reason and wasClean."""
        self._need_started("wait_closed")
        assert self._closed is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except TimeoutError:
            raise TimeoutError(f"browser WebSocket to {self.url} not closed within {timeout} s "
                               f"(readyState {self._state_name()})") from None

    @on_own_loop
    async def refresh(self) -> BrowserSocket:
        """Read ``readyState`` / ``bufferedAmount`` / ... from the page now."""
        self._need_started("refresh")
        self._apply(await self._call("state", sid=self._sid))
        return self

    @on_own_loop
    async def wait_for(self, predicate: Callable[[BrowserSocket], Any],
                       timeout: float = 10.0) -> None:
        """Wait until ``predicate(sock)`` is true, re-checked after every page event."""
        if predicate(self):
            return
        future: asyncio.Future[None] = self._loop.create_future()
        entry = (predicate, future)
        self._watchers.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._watchers.remove(entry)

    async def next_message(self, timeout: float = 10.0) -> str | bytes | None:
        """The next received message that `next_message` has not returned yet (waits for it).

        A cursor over everything received, so a message that arrived before the
        call (say while ``send`` was being answered) is not skipped.
        """
        wanted = self._consumed
        await self.wait_for(lambda s: s.received_count > wanted, timeout)
        self._consumed = wanted + 1
        first_kept = self.received_count - len(self._messages)
        return self._messages[max(wanted - first_kept, 0)]

    @on_own_loop
    async def run_js(self, snippet: str, *, until: str | int | None = None,
                     timeout: float = 5.0) -> JsResult:
        """Run page JavaScript verbatim; return its console lines and result or thrown error.

        The snippet runs as the body of an async function (so ``await`` works;
        a single expression is returned as the result) with ``url`` and
        ``protocols`` bound to this socket's, and ``console`` / ``WebSocket``
        wrapped: console lines are captured (and still printed in the page),
        and sockets it creates are recorded on the timeline as ``<name>/js``.

        ``until`` keeps capturing after the snippet returned: ``"closed"`` until
        every socket it created has closed, an int until that many console
        lines, a str until a line contains it; `TimeoutError` after ``timeout`` s.
        The snippet runs with the page's full rights (in a notebook: the Jupyter
        page itself), like any widget's JavaScript.
        """
        reply = await self._call("run_js", sid=self._sid, snippet=snippet, url=self.url,
                                 protocols=self.protocols, until=until, timeout=timeout)
        entries = reply.get("console") or []
        error = reply.get("error")
        result = JsResult(
            console=[text for _level, text in entries],
            levels=[level for level, _text in entries],
            result=reply.get("result"),
            error=dom_exception(error["name"], error["message"]) if error else None,
            sockets=reply.get("sockets") or [],
        )
        if error:
            self.timeline.record("error", peer=f"{self.name}/js",
                                 detail=_short(f"snippet threw {error['name']}: "
                                               f"{error['message']}"))
        if reply.get("timedOut"):
            raise TimeoutError(f"run_js: until={until!r} not met within {timeout} s; "
                               f"console so far: {result.console}")
        return result

    @on_own_loop
    async def page_info(self) -> dict[str, str]:
        """The hosting page's ``userAgent``, ``origin`` and ``href``."""
        return await self._call("info")

    @on_own_loop
    async def aclose(self) -> None:
        """Close the socket if still open and release its page (headless) or comm handlers."""
        if self._shut:
            return
        backend = self._backend
        if backend is None and self._backend_task is not None and not self._backend_task.done():
            self._backend_task.cancel()
        if backend is not None:
            if self._started:
                with contextlib.suppress(Exception):
                    snap = await asyncio.wait_for(backend.call("forget", {"sid": self._sid}), 5)
                    if snap.get("ok") and snap.get("result"):
                        self._apply(snap["result"], "aclose()")
            with contextlib.suppress(Exception):
                await backend.close()
        self._shut = True
        for _predicate, future in self._watchers:
            if not future.done():
                future.set_exception(BrowserError("the BrowserSocket was shut down"))

    async def __aenter__(self) -> BrowserSocket:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
