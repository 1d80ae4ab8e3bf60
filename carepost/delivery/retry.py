"""When to try a deferred message again: exponential backoff with jitter, bounded by
the delivery lifetime.

The schedule follows Postfix's queue manager in spirit (``minimal_backoff_time``,
``maximal_backoff_time``, ``maximal_queue_lifetime``): the wait doubles from one
minute after each failed attempt and stops growing at one hour; a random jitter of
±20 % spreads retries so that a receiver that greylisted a whole campaign is not hit
by all of it again in the same second. Once the lifetime since the message was first
queued (5 days by default, setting ``delivery_lifetime``) is used up, there is no next
attempt: the caller bounces the message (RFC 5321 section 4.5.4.1 asks senders to give
up after "at least 4-5 days").
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=1)
JITTER = 0.2


def backoff_bounds(attempts: int) -> tuple[timedelta, timedelta]:
    """The shortest and longest wait after the ``attempts``-th failed attempt."""
    exponent = min(max(attempts, 1) - 1, 32)  # 2**32 minutes is far past the cap already
    base = min(FIRST_BACKOFF * (2**exponent), MAX_BACKOFF)
    return base * (1 - JITTER), base * (1 + JITTER)


def next_attempt(
    attempts: int,
    first_queued_at: datetime,
    now: datetime,
    *,
    lifetime: timedelta,
    rng: random.Random | None = None,
) -> datetime | None:
    """The time of the next delivery attempt after ``attempts`` failed ones, or None when
    the lifetime is used up and the message must bounce.

    A wait that would end past the lifetime is shortened to end at it, so every message
    gets one last attempt at the end of its lifetime rather than bouncing early.
    """
    deadline = first_queued_at + lifetime
    if now >= deadline:
        return None
    shortest, longest = backoff_bounds(attempts)
    draw = (rng or random).uniform(0.0, 1.0)
    wait = shortest + (longest - shortest) * draw
    return min(now + wait, deadline)
