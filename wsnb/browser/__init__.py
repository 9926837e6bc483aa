"""A real browser ``WebSocket`` driven from Python (`BrowserSocket`).

In a notebook front end the socket lives in the notebook's own page (an
anywidget view); elsewhere in a headless Chromium page through Playwright. See
`wsnb.browser.socket` for the rule that picks one. Its events land on a
`wsnb.Timeline` next to wsnb's Python clients.
"""

from wsnb.browser._errors import (
    BrowserError,
    BrowserUnavailable,
    CloseInfo,
    DOMException,
    InvalidAccessError,
    InvalidStateError,
    JSError,
    NotOpened,
    SyntaxErr,
)
from wsnb.browser._headless import shutdown
from wsnb.browser.socket import BrowserSocket, JsResult

__all__ = [
    "BrowserError",
    "BrowserSocket",
    "BrowserUnavailable",
    "CloseInfo",
    "DOMException",
    "InvalidAccessError",
    "InvalidStateError",
    "JSError",
    "JsResult",
    "NotOpened",
    "SyntaxErr",
    "shutdown",
]
