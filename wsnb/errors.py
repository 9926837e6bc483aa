"""Every exception wsnb raises, named by what went wrong."""

from __future__ import annotations


class WsnbError(Exception):
    """Base class for wsnb errors."""


class NotOpen(WsnbError):
    """`send` with ``when_closed="raise"`` while the client is not READY."""


class Backpressure(WsnbError):
    """`send` with ``when_full="raise"`` while the outbox is full."""


class Refused(WsnbError):
    """The peer refused a message for good (a ``nack``), or it could never be sent."""

    def __init__(self, code: str, reason: str = "", id: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.id = id
        where = f" (message {id})" if id is not None else ""
        text = f"refused{where}: {code}"
        super().__init__(f"{text}: {reason}" if reason else text)


class HandshakeTimeout(WsnbError):
    """No ``handshake_ack`` (client) or ``handshake`` (server) arrived in time."""


class AuthError(WsnbError):
    """The server refused the token (close 4401 or 1008); the client does not retry."""


class ProtocolError(WsnbError, ValueError):
    """A frame broke PROTOCOL.md; ``code`` is the wire code (``bad_json``, ``too_large``...)."""

    def __init__(self, code: str, reason: str, id: int | None = None,
                 frame_type: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.id = id
        self.frame_type = frame_type  # "msg" or "chunk": a refusal of message `id`
        super().__init__(f"{code}: {reason}")
