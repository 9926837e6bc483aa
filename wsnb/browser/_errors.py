"""Exceptions of wsnb.browser; a DOMException thrown in the page maps to one by its name."""

from __future__ import annotations

from dataclasses import dataclass

from wsnb.protocol.close import close_rule

__all__ = [
    "BrowserError",
    "BrowserUnavailable",
    "CloseInfo",
    "DOMException",
    "InvalidAccessError",
    "InvalidStateError",
    "JSError",
    "NotOpened",
    "SyntaxErr",
    "dom_exception",
]


class BrowserError(Exception):
    """Base class of wsnb.browser's errors."""


class BrowserUnavailable(BrowserError):
    """Neither a notebook front end nor a headless Chromium can host the WebSocket."""


class JSError(BrowserError):
    """The page threw; ``name`` and ``message`` are the thrown error's."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class DOMException(JSError):
    """A DOMException thrown by the page's WebSocket (subclassed by ``name``)."""


class InvalidStateError(DOMException):
    """``send()`` while CONNECTING (the browser's InvalidStateError DOMException)."""


class InvalidAccessError(DOMException):
    """``close(code)`` with a code other than 1000 or 3000-4999."""


class SyntaxErr(DOMException):
    """The page's ``SyntaxError``: a bad URL, bad subprotocols, a close reason over 123 bytes."""


_BY_NAME: dict[str, type[JSError]] = {
    "InvalidStateError": InvalidStateError,
    "InvalidAccessError": InvalidAccessError,
    "SyntaxError": SyntaxErr,
    "NotFoundError": DOMException,
    "SecurityError": DOMException,
}


def dom_exception(name: str, message: str) -> JSError:
    """The Python exception for an error the page threw, by its name."""
    return _BY_NAME.get(name, JSError)(name, message)


@dataclass(frozen=True)
class CloseInfo:
    """The page's ``CloseEvent``: code, reason and wasClean."""

    code: int
    reason: str
    was_clean: bool

    def __str__(self) -> str:
        text = f"{self.code} wasClean={'true' if self.was_clean else 'false'}"
        words = _close_words(self.code)
        if words:
            text += f" {words}"
        if self.reason and self.reason.lower() not in words:
            text += f": {self.reason}"
        return text


def _close_words(code: int) -> str:
    words = close_rule(code).words  # the one close-code table
    return "" if words == "unknown code" else words


class NotOpened(BrowserError):
    """The page's WebSocket closed before it opened (``close`` has the CloseEvent)."""

    def __init__(self, url: str, close: CloseInfo, errors: int) -> None:
        super().__init__(f"browser WebSocket to {url} closed before opening: {close}"
                         f" ({errors} error event{'s' if errors != 1 else ''})")
        self.url = url
        self.close = close
        self.code = close.code
        self.reason = close.reason
        self.was_clean = close.was_clean
