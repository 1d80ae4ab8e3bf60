"""The retry schedule: exponential backoff with jitter inside bounds that never shrink,
capped at about an hour, and no attempt after the delivery lifetime."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery.retry import MAX_BACKOFF, backoff_bounds, next_attempt

QUEUED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIFETIME = timedelta(days=5)

attempts = st.integers(min_value=1, max_value=10_000)
elapsed = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10))
lifetimes = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=30))


def test_the_schedule_doubles_from_one_minute_to_one_hour():
    middles = [sum(backoff_bounds(n), timedelta()) / 2 for n in range(1, 10)]
    assert [m.total_seconds() / 60 for m in middles] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@given(attempts)
def test_bounds_never_shrink_and_stay_under_the_cap(n):
    shortest, longest = backoff_bounds(n)
    next_shortest, next_longest = backoff_bounds(n + 1)
    assert timedelta(0) < shortest <= longest
    assert shortest <= next_shortest and longest <= next_longest
    assert longest <= MAX_BACKOFF * 1.2


@given(attempts, elapsed, lifetimes, st.integers())
def test_next_attempt_is_within_the_bounds_or_at_the_deadline(n, since, lifetime, seed):
    now = QUEUED + since
    result = next_attempt(n, QUEUED, now, lifetime=lifetime, rng=random.Random(seed))
    deadline = QUEUED + lifetime
    if now >= deadline:
        assert result is None
        return
    assert result is not None
    assert now < result <= deadline
    shortest, longest = backoff_bounds(n)
    assert result == deadline or now + shortest <= result <= now + longest


@given(attempts, st.integers())
def test_after_the_lifetime_there_is_no_next_attempt(n, seed):
    rng = random.Random(seed)
    assert next_attempt(n, QUEUED, QUEUED + LIFETIME, lifetime=LIFETIME, rng=rng) is None
    assert next_attempt(n, QUEUED, QUEUED + LIFETIME * 2, lifetime=LIFETIME, rng=rng) is None


def test_a_message_retried_until_it_bounces_gets_about_five_days():
    rng = random.Random(7)
    now, tries = QUEUED, 0
    while (when := next_attempt(tries + 1, QUEUED, now, lifetime=LIFETIME, rng=rng)) is not None:
        assert when > now
        now, tries = when, tries + 1
    assert now == QUEUED + LIFETIME  # the last attempt is at the end of the lifetime
    # 1+2+...+32 minutes, then about hourly: roughly 5 * 24 attempts.
    assert 100 < tries < 160


def test_jitter_spreads_retries():
    draws = {
        next_attempt(3, QUEUED, QUEUED, lifetime=LIFETIME, rng=random.Random(seed))
        for seed in range(20)
    }
    assert len(draws) == 20
