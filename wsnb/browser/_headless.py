"""The headless backend: one page per socket in a Chromium shared by the whole process.

Chromium and Playwright live on wsnb's event-loop thread (`wsnb.loop.background_loop`),
so sockets created on different loops (a notebook, successive pytest loops) share
one browser. It starts on first use and is closed at interpreter exit, or by
`shutdown()`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
from collections.abc import Callable
from typing import Any

from wsnb.browser._driver import HEADLESS_INSTALL_JS
from wsnb.browser._errors import BrowserUnavailable
from wsnb.loop import background_loop, call_on

__all__ = ["HeadlessPage", "chromium_executable", "shutdown", "shutdown_sync"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

INSTALL_HINT = (
    "install Playwright for Python (pip install playwright) and a Chromium: the system's "
    "(apt-get install chromium; set WSNB_CHROMIUM=/path/to/chromium if it is not on PATH) "
    "or Playwright's own (playwright install chromium)"
)

_playwright: Any = None
_browser: Any = None
_starting: asyncio.Lock | None = None
_atexit_registered = False


def chromium_executable() -> str | None:
    """``$WSNB_CHROMIUM``, else the first Chromium on PATH, else None (Playwright's own)."""
    explicit = os.environ.get("WSNB_CHROMIUM")
    if explicit:
        return explicit
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return None


def available() -> str | None:
    """None when a headless page can probably be had, else why not."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed"
    return None


async def _browser_here() -> Any:
    """The shared Browser, launched on first use (runs on the background loop)."""
    global _playwright, _browser, _starting, _atexit_registered
    if _starting is None:
        _starting = asyncio.Lock()
    async with _starting:
        if _browser is not None and _browser.is_connected():
            return _browser
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:
            raise BrowserUnavailable(f"no headless browser: {exc}; {INSTALL_HINT}") from exc
        if _playwright is None:
            _playwright = await async_playwright().start()
        executable = chromium_executable()
        try:
            _browser = await _playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:
            where = executable or "Playwright's bundled Chromium"
            raise BrowserUnavailable(
                f"could not launch headless Chromium ({where}): {str(exc).splitlines()[0]}; "
                f"{INSTALL_HINT}") from exc
        if not _atexit_registered:
            atexit.register(shutdown_sync)
            _atexit_registered = True
        return _browser


async def _shutdown_here() -> None:
    global _playwright, _browser
    browser, _browser = _browser, None
    playwright, _playwright = _playwright, None
    if browser is not None:
        with contextlib.suppress(Exception):  # best effort at shutdown
            await asyncio.wait_for(browser.close(), 10)
    if playwright is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(playwright.stop(), 10)


async def shutdown() -> None:
    """Close the shared headless Chromium (a later socket starts a new one)."""
    await call_on(background_loop(), _shutdown_here())


def shutdown_sync(timeout: float = 15.0) -> None:
    """`shutdown` from synchronous code (atexit, a test's finalizer)."""
    if _browser is None and _playwright is None:
        return
    loop = background_loop()
    if loop.is_closed() or not loop.is_running():
        return
    future = asyncio.run_coroutine_threadsafe(_shutdown_here(), loop)
    with contextlib.suppress(Exception):  # best effort at exit
        future.result(timeout)


class HeadlessPage:
    """One socket's page (its own browser context) in the shared Chromium."""

    mode = "headless"

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self._on_event = on_event
        self._context: Any = None
        self._page: Any = None
        self._loop = background_loop()

    async def start(self) -> None:
        await call_on(self._loop, self._start_here())

    async def _start_here(self) -> None:
        browser = await _browser_here()
        self._context = await browser.new_context()
        page = await self._context.new_page()
        await page.expose_binding("__wsnbEmit", lambda _source, ev: self._on_event(ev))
        await page.evaluate(HEADLESS_INSTALL_JS)
        self._page = page

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await call_on(self._loop, self._call_here(op, args))

    async def _call_here(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if self._page is None:
            raise BrowserUnavailable("the headless page is closed")
        return await self._page.evaluate("([op, args]) => window.__wsnb.call(op, args)",
                                         [op, args])

    async def close(self) -> None:
        await call_on(self._loop, self._close_here())

    async def _close_here(self) -> None:
        context, self._context, self._page = self._context, None, None
        if context is not None:
            with contextlib.suppress(Exception):  # the browser may be gone already
                await asyncio.wait_for(context.close(), 10)
