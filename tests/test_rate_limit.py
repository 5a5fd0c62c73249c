"""The per-clinic token bucket, on the broker's clock. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from referral_hub.runtime.messaging.admission import RateLimit, RateLimiter

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def limiter() -> RateLimiter:
    return RateLimiter(RateLimit(per_second=2, burst=3))


def test_a_burst_is_admitted_up_to_its_size_then_refused():
    bucket = limiter()
    assert [bucket.allows("a", START) for _ in range(5)] == [True, True, True, False, False]


def test_tokens_come_back_with_stored_time_not_wall_time():
    bucket = limiter()
    for _ in range(3):
        bucket.allows("a", START)
    assert bucket.allows("a", START + timedelta(milliseconds=400)) is False
    assert bucket.allows("a", START + timedelta(milliseconds=600)) is True


def test_a_backlog_sent_slowly_is_admitted_however_fast_it_is_handled():
    bucket = limiter()
    stored = [START + timedelta(seconds=n) for n in range(20)]
    assert all(bucket.allows("a", at) for at in stored)


def test_one_clinic_flooding_leaves_another_untouched():
    bucket = limiter()
    for _ in range(10):
        bucket.allows("noisy", START)
    assert bucket.allows("quiet", START) is True


def test_a_redelivery_is_never_refused_and_spends_nothing():
    bucket = limiter()
    for _ in range(3):
        bucket.allows("a", START)
    assert bucket.allows("a", START, first_attempt=False) is True
    assert bucket.allows("a", START + timedelta(milliseconds=500)) is True


def test_tokens_never_exceed_the_burst():
    bucket = limiter()
    bucket.allows("a", START)
    later = START + timedelta(hours=1)
    assert [bucket.allows("a", later) for _ in range(4)] == [True, True, True, False]
