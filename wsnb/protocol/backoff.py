"""Reconnect timing: exponential backoff with full jitter, close-code aware."""

from __future__ import annotations

import random
from dataclasses import dataclass

from wsnb.protocol.close import CLOSE_RULES, CloseRule, close_rule

#: Close codes after which the client does not reconnect (from the close-code table).
NO_RECONNECT = frozenset(code for code, rule in CLOSE_RULES.items() if not rule.reconnect)


@dataclass(frozen=True)
class Backoff:
    """Attempt k waits ``uniform(0, min(cap, base * 2**k))`` seconds (full jitter).

    ``jitter=False`` waits the upper bound exactly: what makes a thousand
    clients reconnect in the same millisecond. ``max_attempts=None`` retries forever.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: bool = True
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base:
            raise ValueError(f"Backoff needs 0 < base <= cap, got base={self.base}, cap={self.cap}")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"Backoff.max_attempts must be >= 0, got {self.max_attempts}")

    def upper(self, attempt: int) -> float:
        """The longest wait for `attempt` (from 0)."""
        return float(min(self.cap, self.base * 2 ** min(attempt, 64)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before reconnect `attempt` (from 0)."""
        upper = self.upper(attempt)
        if not self.jitter:
            return upper
        return (rng or random).uniform(0, upper)


class ReconnectPolicy:
    """Decides whether and when to reconnect after a close.

    The attempt counter resets once a session has stayed READY for ``cap`` seconds.
    """

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.attempt = 0
        self._ready_since: float | None = None

    def on_ready(self, now: float) -> None:
        self._ready_since = now

    def on_close(self, rule: CloseRule | int | None, now: float,
                 hint_s: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop for good.

        `rule` comes from `wsnb.protocol.close`; a ``retry after N s`` hint
        (4429) is a floor, and so is the cap for 1013 or a 4429 without a hint.
        """
        if not isinstance(rule, CloseRule):
            rule = close_rule(rule)
        if self._ready_since is not None and now - self._ready_since >= self.backoff.cap:
            self.attempt = 0
        self._ready_since = None
        if not rule.reconnect:
            return None
        if self.backoff.max_attempts is not None and self.attempt >= self.backoff.max_attempts:
            return None
        wait = self.backoff.delay(self.attempt, self.rng)
        self.attempt += 1
        if rule.wait_cap:
            return max(wait, hint_s if hint_s is not None else self.backoff.cap)
        return wait
