"""Secrets that never print: tokens and HMAC keys."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Handed to websockets: its DEBUG logging prints frames, and the handshake frame carries the token.
TRANSPORT_LOGGER = logging.getLogger("wsnb.transport")
TRANSPORT_LOGGER.setLevel(logging.INFO)


class Secret:
    """Holds a token or key; its repr and str are masked so it never reaches a log or widget."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        if not isinstance(value, (str, bytes)):
            raise TypeError(f"a token or secret must be str or bytes, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str | bytes:
        return self._value

    def as_bytes(self) -> bytes:
        return self._value.encode() if isinstance(self._value, str) else self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        if isinstance(other, Secret):
            other = other._value
        if isinstance(other, str):
            other = other.encode()
        if not isinstance(other, bytes):
            return NotImplemented
        return hmac.compare_digest(self.as_bytes(), other)

    __hash__ = None  # type: ignore[assignment]


def optional_secret(value: str | bytes | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def masked_url(url: str) -> str:
    """The URL without credentials or query string (which may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_SECRET_PARAMS = ("token", "key", "secret", "auth", "pass", "sig", "session", "jwt", "code")


def safe_url(url: str) -> str:
    """The URL with credentials and secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode([(k, "***" if any(w in k.lower() for w in _SECRET_PARAMS) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """`text` with every secret part of `url` (credentials, token-like query values,
    the URL itself) replaced, for error messages that may quote the URL."""
    parts = urlsplit(url)
    secrets: list[str] = [url]
    if "@" in parts.netloc:
        secrets.append(parts.netloc.rsplit("@", 1)[0])
    secrets += [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if v and any(w in k.lower() for w in _SECRET_PARAMS)]
    if parts.query:
        secrets.append(parts.query)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, safe_url(url) if secret == url else "***")
    return text
