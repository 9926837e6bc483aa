"""Dead-link detection (PROTOCOL.md "Heartbeat and dead links"): fake clock, no sleeps."""

from __future__ import annotations

import pytest

from wsnb.protocol.heartbeat import DeadLinkTimer, dead_link_bound


def spec_bound(hb_ms: float, grace_ms: float | None = None) -> float:
    """2 × heartbeat + grace, grace defaulting to max(250 ms, heartbeat / 2); in seconds."""
    if grace_ms is None:
        grace_ms = max(250, hb_ms / 2)
    return (2 * hb_ms + grace_ms) / 1000


class TestDeadLinkBound:
    @pytest.mark.parametrize(
        "hb,expected",
        [(15000, 37.5), (1000, 2.5), (500, 1.25), (200, 0.65), (100, 0.45), (1, 0.252),
         (1001, 2.5025), (499, 1.248), (501, 1.2525)],
    )
    def test_default_grace(self, hb: int, expected: float) -> None:
        assert dead_link_bound(hb) == pytest.approx(expected, abs=1e-12)
        assert dead_link_bound(hb) == pytest.approx(spec_bound(hb), abs=1e-12)

    @pytest.mark.parametrize("hb", list(range(0, 3000, 37)))
    def test_matches_spec_formula(self, hb: int) -> None:
        assert dead_link_bound(hb) == pytest.approx(spec_bound(hb), abs=1e-12)

    def test_grace_floor_is_250ms(self) -> None:
        # below 500 ms heartbeats, half a heartbeat is less than the 250 ms floor
        assert dead_link_bound(400) == pytest.approx(0.8 + 0.25)
        assert dead_link_bound(500) == pytest.approx(1.0 + 0.25)
        assert dead_link_bound(600) == pytest.approx(1.2 + 0.3)

    @pytest.mark.parametrize("grace", [0, 10, 250, 5000])
    def test_explicit_grace(self, grace: int) -> None:
        assert dead_link_bound(1000, grace) == pytest.approx((2000 + grace) / 1000)
        assert dead_link_bound(1000, grace_ms=grace) == pytest.approx(spec_bound(1000, grace))

    def test_returns_seconds(self) -> None:
        assert isinstance(dead_link_bound(15000), float)


class TestDeadLinkTimer:
    def test_expires_exactly_at_bound(self) -> None:
        t = DeadLinkTimer(1000, now=50.0)
        assert t.bound == dead_link_bound(1000) == 2.5
        assert t.deadline == 52.5
        assert not t.expired(50.0)
        assert not t.expired(52.499)
        assert t.expired(52.5)
        assert t.expired(1e9)

    def test_explicit_grace(self) -> None:
        t = DeadLinkTimer(1000, now=0.0, grace_ms=0)
        assert t.deadline == 2.0
        assert not t.expired(1.999) and t.expired(2.0)

    def test_touch_pushes_deadline(self) -> None:
        t = DeadLinkTimer(200, now=0.0)  # bound 0.65 s
        assert t.deadline == pytest.approx(0.65)
        for now in (0.5, 1.0, 1.6, 2.2):  # something arrives before each deadline
            assert not t.expired(now)
            t.touch(now)
            assert t.last_received == now
            assert t.deadline == pytest.approx(now + 0.65)
        assert not t.expired(2.2 + 0.6)
        assert t.expired(t.deadline)

    def test_touch_after_expiry_revives(self) -> None:
        t = DeadLinkTimer(100, now=0.0)
        assert t.expired(10.0)
        t.touch(10.0)
        assert not t.expired(10.0)

    def test_silence_just_under_two_heartbeats_is_alive(self) -> None:
        # one lost ping is tolerated: only two missed heartbeats plus grace are fatal
        hb = 15000
        t = DeadLinkTimer(hb, now=0.0)
        assert not t.expired(2 * hb / 1000)
        assert t.expired(2 * hb / 1000 + max(0.25, hb / 2000))

    @pytest.mark.parametrize("hb", [0, -1])
    def test_heartbeat_off_never_expires(self, hb: int) -> None:
        t = DeadLinkTimer(hb, now=0.0)
        assert t.bound == float("inf")
        assert t.deadline == float("inf")
        for now in (0.0, 1e6, 1e300):
            assert not t.expired(now)
        t.touch(5.0)
        assert not t.expired(1e300)
