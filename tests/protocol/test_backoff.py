"""Reconnect backoff (PROTOCOL.md "Reconnect backoff", "Close codes"): no sleeps, fake `now`."""

from __future__ import annotations

import random

import pytest

from wsnb.protocol.backoff import NO_RECONNECT, Backoff, ReconnectPolicy


class TestBackoff:
    def test_defaults(self) -> None:
        b = Backoff()
        assert (b.base, b.cap, b.jitter, b.max_attempts) == (0.5, 30.0, True, None)

    def test_upper_doubles_then_caps(self) -> None:
        b = Backoff(base=0.5, cap=30.0)
        assert [b.upper(k) for k in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
        for k in range(60):
            assert b.upper(k) == min(30.0, 0.5 * 2**k)

    def test_upper_huge_attempt_does_not_overflow(self) -> None:
        b = Backoff(base=0.5, cap=30.0)
        assert b.upper(10**6) == 30.0
        assert b.upper(2000) == 30.0

    def test_cap_equal_to_base(self) -> None:
        b = Backoff(base=2.0, cap=2.0, jitter=False)
        assert [b.delay(k) for k in range(4)] == [2.0] * 4

    def test_no_jitter_is_exact(self) -> None:
        b = Backoff(base=0.25, cap=3.0, jitter=False)
        assert [b.delay(k) for k in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
        assert b.delay(3, random.Random(1)) == 2.0  # the rng is not used

    def test_full_jitter_within_zero_and_upper(self) -> None:
        b = Backoff(base=0.5, cap=30.0)
        rng = random.Random(1234)
        for k in range(12):
            upper = b.upper(k)
            delays = [b.delay(k, rng) for _ in range(200)]
            assert all(0 <= d <= upper for d in delays)
            # full jitter: spread over the whole range, not bunched at the top
            assert min(delays) < upper * 0.1 and max(delays) > upper * 0.9

    def test_jitter_without_rng_uses_module_random(self) -> None:
        b = Backoff(base=1.0, cap=4.0)
        assert all(0 <= b.delay(5) <= 4.0 for _ in range(50))

    def test_seeded_rng_reproducible(self) -> None:
        b = Backoff()
        a = [b.delay(k, random.Random(7)) for k in range(10)]
        again = [b.delay(k, random.Random(7)) for k in range(10)]
        assert a == again
        r1, r2 = random.Random(99), random.Random(99)
        assert [b.delay(k, r1) for k in range(10)] == [b.delay(k, r2) for k in range(10)]
        seeded = [b.delay(3, random.Random(seed)) for seed in range(5)]
        assert len(set(seeded)) == 5  # different seeds, different delays

    @pytest.mark.parametrize(
        "kw,names",
        [({"base": 0}, ["base"]), ({"base": -1}, ["base"]),
         ({"base": 2.0, "cap": 1.0}, ["base", "cap"]), ({"cap": 0.1}, ["cap"]),
         ({"base": float("nan")}, ["base"]), ({"max_attempts": -1}, ["max_attempts"])],
    )
    def test_invalid_params_named(self, kw: dict[str, float], names: list[str]) -> None:
        with pytest.raises(ValueError) as info:
            Backoff(**kw)  # type: ignore[arg-type]
        for name in names:
            assert name in str(info.value)

    def test_max_attempts_zero_is_valid(self) -> None:
        assert Backoff(max_attempts=0).max_attempts == 0

    def test_frozen(self) -> None:
        b = Backoff()
        with pytest.raises(AttributeError):
            b.base = 1.0  # type: ignore[misc]


def policy(**kw: object) -> ReconnectPolicy:
    kw.setdefault("jitter", False)
    return ReconnectPolicy(Backoff(**kw), rng=random.Random(0))  # type: ignore[arg-type]


class TestReconnectPolicy:
    @pytest.mark.parametrize("code", [1000, 1008, 4401])
    def test_no_reconnect_codes(self, code: int) -> None:
        p = policy()
        assert p.on_close(code, 0.0) is None
        assert p.attempt == 0  # stopping is not an attempt

    def test_no_reconnect_set_matches_protocol(self) -> None:
        assert frozenset({1000, 1008, 1015, 4401}) == NO_RECONNECT

    @pytest.mark.parametrize("code", [None, 1001, 1006, 1009, 1011, 1012, 4408])
    def test_reconnect_codes_back_off(self, code: int | None) -> None:
        p = policy(base=1.0, cap=8.0)
        assert [p.on_close(code, float(t)) for t in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
        assert p.attempt == 5

    def test_jittered_policy_stays_within_upper(self) -> None:
        p = ReconnectPolicy(Backoff(base=0.5, cap=30.0), rng=random.Random(3))
        b = p.backoff
        for k in range(20):
            wait = p.on_close(1006, 0.0)
            assert wait is not None and 0 <= wait <= b.upper(k)

    def test_1013_waits_at_least_cap(self) -> None:
        p = ReconnectPolicy(Backoff(base=0.5, cap=30.0), rng=random.Random(5))
        for _ in range(5):
            wait = p.on_close(1013, 0.0)
            assert wait is not None and wait >= 30.0

    def test_4429_uses_hint(self) -> None:
        p = policy(base=0.5, cap=30.0)
        assert p.on_close(4429, 0.0, hint_s=7.0) == 7.0
        assert p.attempt == 1

    def test_4429_without_hint_waits_cap(self) -> None:
        p = policy(base=0.5, cap=30.0)
        assert p.on_close(4429, 0.0) == 30.0
        jittered = ReconnectPolicy(Backoff(base=0.5, cap=30.0), rng=random.Random(1))
        assert jittered.on_close(4429, 0.0) == 30.0

    def test_4429_hint_never_shortens_backoff(self) -> None:
        p = policy(base=4.0, cap=30.0)
        assert p.on_close(4429, 0.0, hint_s=1.0) == 4.0

    def test_hint_ignored_for_other_codes(self) -> None:
        assert policy(base=1.0).on_close(1006, 0.0, hint_s=99.0) == 1.0

    def test_max_attempts_stops(self) -> None:
        p = policy(base=1.0, cap=10.0, max_attempts=3)
        assert [p.on_close(1006, 0.0) for _ in range(5)] == [1.0, 2.0, 4.0, None, None]

    def test_max_attempts_zero_never_reconnects(self) -> None:
        assert policy(max_attempts=0).on_close(1006, 0.0) is None

    def test_counter_resets_after_ready_for_cap(self) -> None:
        p = policy(base=1.0, cap=10.0)
        for _ in range(4):
            p.on_close(1006, 0.0)
        assert p.attempt == 4
        p.on_ready(100.0)
        assert p.on_close(1006, 110.0) == 1.0  # READY for exactly cap: back to attempt 0
        assert p.attempt == 1

    def test_counter_not_reset_before_cap(self) -> None:
        p = policy(base=1.0, cap=10.0)
        for _ in range(3):
            p.on_close(1006, 0.0)
        p.on_ready(100.0)
        assert p.on_close(1006, 109.999) == 8.0  # attempt 3 continues
        assert p.attempt == 4

    def test_ready_is_forgotten_after_close(self) -> None:
        p = policy(base=1.0, cap=10.0)
        p.on_close(1006, 0.0)
        p.on_ready(0.0)
        p.on_close(1006, 1.0)  # short session: attempt 1 -> 2
        assert p.on_close(1006, 1000.0) == 4.0  # not READY in between: no reset
        assert p.attempt == 3

    def test_reset_applies_even_for_final_codes(self) -> None:
        p = policy(base=1.0, cap=10.0)
        p.on_close(1006, 0.0)
        p.on_ready(0.0)
        assert p.on_close(1000, 50.0) is None
        assert p.attempt == 0

    def test_seeded_policy_reproducible(self) -> None:
        def run(seed: int) -> list[float | None]:
            p = ReconnectPolicy(Backoff(), rng=random.Random(seed))
            return [p.on_close(1006, float(t)) for t in range(12)]

        assert run(42) == run(42)
        assert run(42) != run(43)

    def test_default_rng_is_private(self) -> None:
        p = ReconnectPolicy(Backoff())
        assert isinstance(p.rng, random.Random) and p.rng is not random
