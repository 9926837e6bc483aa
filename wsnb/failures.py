"""Why a connection attempt failed, in words: the one classifier wsnb uses.

`classify` turns what opening a WebSocket raised (DNS, TCP, TLS, the HTTP
upgrade, a timeout) into a `Failure`: a `kind`, one line of `text` naming
the cause, a short `hint` in terms of the command line (``wsnb probe`` and
``wsnb doctor`` share the flags it names) and longer `advice` for reports and
library users. ``wsnb probe``, ``wsnb doctor`` and the transport all name a
failure with it, so the same cause reads the same everywhere.

Nothing it returns carries credentials or token-like query values of the URL:
only the host and port are quoted, and every text passes through
`wsnb._secret.scrub` for the URL it was given.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

from wsnb._secret import scrub

__all__ = ["HTTP_ADVICE", "KINDS", "THROTTLE_STATUSES", "ConnectFailed", "Failure", "classify"]

#: Every `Failure.kind`, in the order a connection attempt can meet them.
KINDS = ("url", "dns", "refused", "network", "tls", "timeout", "handshake", "upgrade")
#: HTTP statuses with which servers throttle: wait and retry with backoff.
THROTTLE_STATUSES = (429, 503)

Kind = Literal["url", "dns", "refused", "network", "tls", "timeout", "handshake", "upgrade"]
Phase = Literal["connect", "upgrade"]

_PROXY_HEADERS = ("a proxy in front may not forward the Upgrade/Connection headers (nginx: "
                  "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
                  "proxy_set_header Connection \"upgrade\")")

#: What to do about an HTTP status that refused the upgrade.
HTTP_ADVICE = {
    200: "a plain HTTP page answered: the path is not a WebSocket endpoint, or " + _PROXY_HEADERS,
    400: "the server rejected the upgrade request: check the path and query (Socket.IO "
         "needs /socket.io/?EIO=4&transport=websocket) and whether it requires a subprotocol "
         "(subprotocols=[...])",
    401: "authentication required: pass the credentials the server expects (token=, a "
         "query parameter in the URL, or headers=)",
    403: "forbidden: the server (or a proxy) refused this client: check the token, the "
         "Origin it expects (origin=...) and IP allow-lists",
    404: "no WebSocket endpoint at this path: check the URL's path",
    426: "the server wants a different protocol (version): the request may have reached a "
         "plain HTTP endpoint",
    429: "the server throttles connections: wait (Retry-After) and reconnect with "
         "exponential backoff and jitter",
    502: "a proxy could not reach the WebSocket backend, or does not support upgrades",
    503: "the service is unavailable or throttling: retry later with backoff",
    504: "a proxy timed out waiting for the backend",
}
_REDIRECT_ADVICE = ("the server redirects: connect to the address it names in Location "
                    "(wsnb.Client follows up to 3 redirects, never from wss:// to ws://)")
_HTTP_HINTS = {
    400: "does it require a subprotocol? --subprotocol NAME",
    401: "pass credentials: --token, or --header 'Authorization: ...'",
    403: "check the token, --origin and --header",
}


@dataclass(frozen=True)
class Failure:
    """Why a connection attempt failed.

    `kind` is one of `KINDS`; `text` names the cause in one line; `hint` is
    a short remedy in command-line terms (may be empty); `advice` the remedy
    in words for reports and exceptions; `status` the HTTP status that
    refused the upgrade, if any; `retry_after` its Retry-After header.
    """

    kind: Kind
    text: str
    advice: str = ""
    status: int | None = None
    hint: str = ""
    retry_after: str | None = None

    @property
    def line(self) -> str:
        """`text`, then the `hint` in parentheses: what ``wsnb probe`` prints."""
        return f"{self.text} ({self.hint})" if self.hint else self.text

    @property
    def throttled(self) -> bool:
        """The server refused the upgrade to slow clients down (HTTP 429 or 503)."""
        return self.status in THROTTLE_STATUSES

    def __str__(self) -> str:
        return self.line


class ConnectFailed(Exception):
    """A connection attempt failed; `failure` says why (its `text` is the message)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure

    kind = property(lambda self: self.failure.kind)
    text = property(lambda self: self.failure.text)
    advice = property(lambda self: self.failure.advice)
    hint = property(lambda self: self.failure.hint)
    status = property(lambda self: self.failure.status)
    retry_after = property(lambda self: self.failure.retry_after)
    throttled = property(lambda self: self.failure.throttled)


def _refused(exc: OSError) -> bool:
    """ECONNREFUSED, also when asyncio tried several addresses and every one refused."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return True
    numbers = re.findall(r"\[Errno (\d+)\]", str(exc))
    return bool(numbers) and str(exc).startswith("Multiple exceptions") and all(
        int(n) == errno.ECONNREFUSED for n in numbers)


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _http(exc: InvalidStatus) -> Failure:
    response = exc.response
    status = response.status_code
    body = _one_line(bytes(response.body or b"").decode("utf-8", "replace"))
    text = f"upgrade refused: HTTP {status} {response.reason_phrase}".rstrip()
    if body:
        text += f": {body}"
    if 300 <= status < 400:
        advice = _REDIRECT_ADVICE
    else:
        advice = HTTP_ADVICE.get(status, "the server refused the WebSocket upgrade")
    retry_after = response.headers.get("Retry-After")
    hint = _HTTP_HINTS.get(status, "")
    if status in THROTTLE_STATUSES:
        hint = f"retry after {retry_after} s, with backoff" if retry_after else \
            "retry later, with backoff"
    return Failure("upgrade", text, advice, status, hint, retry_after)


def _classify(exc: BaseException, host: str, port: int, secure: bool, timeout: float | None,
              phase: Phase | None) -> Failure:
    where = f"{host}:{port}"
    if isinstance(exc, ConnectFailed):
        return exc.failure
    if isinstance(exc, InvalidURI):
        return Failure("url", f"invalid URL: {exc.msg}",
                       "use ws://host:port/path or wss://host:port/path")
    if isinstance(exc, socket.gaierror):
        return Failure("dns", f"DNS: cannot resolve {host!r}: {exc.strerror or exc}",
                       "check the host name for typos, and that this machine can resolve it "
                       "(DNS, VPN, /etc/hosts)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure("tls", f"TLS: certificate verification failed: "
                              f"{exc.verify_message or exc.reason}",
                       "a private CA needs ssl=ssl.create_default_context(cafile=...); a public "
                       "one usually means the server does not send its intermediate "
                       "certificates, or the certificate is for another name or expired",
                       hint="pass --cafile CA.pem, or --insecure to skip verification")
    if isinstance(exc, ssl.SSLError):
        plain = any(w in str(exc).upper() for w in ("WRONG_VERSION", "HTTP_REQUEST",
                                                    "RECORD_LAYER"))
        return Failure("tls", f"TLS: handshake failed: {exc.reason or exc}",
                       "check that the port speaks TLS (wss://) and that the TLS versions match",
                       hint="is this a plain ws:// server? try ws://" if plain else "")
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, EOFError)) and secure \
            and phase == "connect":
        return Failure("tls", "TLS: the server dropped the connection during the TLS handshake",
                       "check that the port speaks TLS; a plain server answers ws:// only",
                       hint="is this a plain ws:// server? try ws://")
    if isinstance(exc, InvalidStatus):
        return _http(exc)
    if isinstance(exc, TimeoutError):
        limit = f" within {timeout:g} s" if timeout is not None else ""
        if phase == "connect":
            return Failure("timeout", f"timeout: no TCP{'/TLS' if secure else ''} connection to "
                                      f"{where}{limit}",
                           "the host is unreachable, or a firewall drops the packets")
        what = ("connected, but no HTTP 101 upgrade response" if phase == "upgrade"
                else "no WebSocket upgrade")
        return Failure("timeout", f"timeout: {what}{limit}",
                       "the port accepts connections but does not answer the upgrade: not an "
                       "HTTP server, a stalled proxy, or an overloaded server")
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        why = f": {_one_line(str(cause))}" if cause is not None and str(cause) else ""
        return Failure("handshake", f"handshake: no valid HTTP response{why}",
                       "the port did not answer with HTTP: a TLS port reached with ws://, or not "
                       "a web server",
                       hint="is this a TLS server? try wss://" if not secure else "")
    if isinstance(exc, InvalidHandshake):
        return Failure("handshake", f"handshake: not a valid WebSocket upgrade: "
                                    f"{_one_line(str(exc)) or type(exc).__name__}",
                       "the answer was not a WebSocket upgrade: " + _PROXY_HEADERS)
    if isinstance(exc, OSError):
        if _refused(exc):
            return Failure("refused", f"refused: nothing accepts connections on {where}",
                           "check the host and port, and that the server is running and listens "
                           "on an address this machine reaches (127.0.0.1 is local only)",
                           hint="is the server running? right port?")
        why = exc.strerror or str(exc) or type(exc).__name__
        if phase == "upgrade":
            why += " during the upgrade"
        return Failure("network", f"network: {why} ({where})",
                       "check the network, routes, proxies and firewalls between here and the "
                       "server")
    return Failure("network", f"network: {type(exc).__name__}: {exc} ({where})",
                   "check the network between here and the server")


def classify(exc: BaseException, *, url: str, timeout: float | None = None,
             phase: Phase | None = None) -> Failure:
    """Name why opening a WebSocket to `url` failed with `exc`.

    Accepts what connecting raises: `socket.gaierror` (DNS),
    `ConnectionRefusedError` and other `OSError`, `ssl.SSLCertVerificationError`
    and `ssl.SSLError`, `TimeoutError`, websockets' `InvalidStatus`,
    `InvalidHandshake` (e.g. `InvalidMessage`) and `InvalidURI`, and a
    `ConnectFailed` (returned as is); anything else is a network failure.
    `timeout` is the limit that ran out (for the words); `phase` says where
    the attempt was: ``"connect"`` before TCP (and TLS) were up,
    ``"upgrade"`` after, waiting for HTTP 101; None when unknown.
    """
    parts = urlsplit(url)
    try:
        port: Any = parts.port
    except ValueError:
        port = None
    secure = parts.scheme.lower() == "wss"
    failure = _classify(exc, parts.hostname or "?", port or (443 if secure else 80), secure,
                        timeout, phase)
    text, hint, advice = (scrub(t, url) for t in (failure.text, failure.hint, failure.advice))
    if (text, hint, advice) == (failure.text, failure.hint, failure.advice):
        return failure
    return Failure(failure.kind, text, advice, failure.status, hint, failure.retry_after)
