"""Dead-link detection: nothing received for ``2 × heartbeat + grace`` means dead."""

from __future__ import annotations


def dead_link_bound(heartbeat_ms: int, grace_ms: float | None = None) -> float:
    """Seconds of silence after which a link counts as dead (PROTOCOL.md)."""
    if grace_ms is None:
        grace_ms = max(250, heartbeat_ms / 2)
    return (2 * heartbeat_ms + grace_ms) / 1000


class DeadLinkTimer:
    """Tracks the last time anything arrived; says when the link must be declared dead.

    A half-open link raises no error on either side: only silence betrays it.
    ``heartbeat_ms=0`` switches detection off (the link is never declared dead).
    """

    def __init__(self, heartbeat_ms: int, now: float, grace_ms: int | None = None) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.bound = dead_link_bound(heartbeat_ms, grace_ms) if heartbeat_ms > 0 else float("inf")
        self.last_received = now

    def touch(self, now: float) -> None:
        """Something (any frame) arrived at `now`."""
        self.last_received = now

    @property
    def deadline(self) -> float:
        """When the link is dead if nothing arrives before."""
        return self.last_received + self.bound

    def expired(self, now: float) -> bool:
        return now >= self.deadline
