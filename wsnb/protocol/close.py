"""What a close means and what the client does next: one table (PROTOCOL.md "Close codes").

`CLOSE_RULES` is the only place that decides whether a code is final, whether
un-acked receipts fail at once, and how long the next attempt waits at least.
Failures before a WebSocket exists (HTTP status at the upgrade, TLS) use the
same vocabulary through `upgrade_rule` and `TLS_RULE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CloseRule:
    """How the client treats one close code.

    ``reconnect``: try again (with backoff). ``auth``: the server refused the
    credentials (surfaced as `wsnb.AuthError`). ``wait_cap``: wait at least the
    backoff cap (1013; 4429 without a hint). ``fail_largest``: the largest
    held message is refused as ``too_large`` instead of being resent (1009).
    """

    words: str
    reconnect: bool = True
    auth: bool = False
    wait_cap: bool = False
    fail_largest: bool = False


CLOSE_RULES: dict[int, CloseRule] = {
    1000: CloseRule("normal closure", reconnect=False),
    1001: CloseRule("going away (server shutting down, or the endpoint is leaving)"),
    1002: CloseRule("protocol error"),
    1003: CloseRule("unsupported data"),
    1005: CloseRule("no status code"),
    1006: CloseRule("abnormal closure (no close frame: dead link, cut or crash)"),
    1007: CloseRule("invalid payload data"),
    1008: CloseRule("policy violation (bad token)", reconnect=False, auth=True),
    1009: CloseRule("message too big", fail_largest=True),
    1010: CloseRule("mandatory extension missing"),
    1011: CloseRule("server error"),
    1012: CloseRule("service restart"),
    1013: CloseRule("try again later", wait_cap=True),
    1015: CloseRule("TLS handshake failed", reconnect=False),
    4401: CloseRule("token refused", reconnect=False, auth=True),
    4408: CloseRule("handshake not received in time"),
    4429: CloseRule("too many connections, sessions or messages", wait_cap=True),
}
_APPLICATION = CloseRule("application code")
_UNKNOWN = CloseRule("unknown code")

#: The certificate was not trusted: retrying cannot fix it.
TLS_RULE = CloseRule("TLS certificate not trusted (not fixed by retrying: pass ssl= or --cafile)",
                     reconnect=False)


def close_rule(code: int | None) -> CloseRule:
    """The rule for `code` (None, no close frame at all, counts as 1006)."""
    if code is None:
        code = 1006
    rule = CLOSE_RULES.get(code)
    if rule is not None:
        return rule
    return _APPLICATION if 4000 <= code <= 4999 else _UNKNOWN


def upgrade_rule(status: int) -> CloseRule:
    """The rule for an HTTP status that refused the WebSocket upgrade."""
    if status in (401, 403):
        return CloseRule(f"HTTP {status} at the upgrade: credentials refused", reconnect=False,
                         auth=True)
    if status in (429, 503):
        return CloseRule(f"HTTP {status} at the upgrade: try again later", wait_cap=True)
    if status in (400, 404, 405, 426):
        return CloseRule(f"HTTP {status} at the upgrade: not a WebSocket endpoint here",
                         reconnect=False)
    return CloseRule(f"HTTP {status} at the upgrade")


def describe_close(code: int | None, reason: str = "") -> str:
    """``"1006 abnormal closure (...)"`` plus the peer's reason, if any."""
    if code is None:
        return "not closed"
    words = close_rule(code).words
    if not reason or reason.lower() in words:
        return f"{code} {words}"
    return f"{code} {words}: {reason}"


_HINT = re.compile(r"retry after (\d+(?:\.\d+)?) s\b")


def retry_hint(reason: str) -> float | None:
    """Seconds from a 4429 reason's ``retry after N s`` (N a decimal number), if any."""
    match = _HINT.search(reason)
    return float(match.group(1)) if match else None


def hint_reason(text: str, seconds: float) -> str:
    """A 4429 close reason carrying its hint in the one format `retry_hint` reads."""
    return f"{text}; retry after {seconds:g} s"
