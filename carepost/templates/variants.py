"""A/B tests of a template: which variant a message gets, and which variant won.

Pure functions; the campaign engine calls them and stores what they decide.

* :func:`assign_variant`: each variant has a split percentage; a message's key
  (e.g. ``"<campaign id>:<contact id>"``) hashes (SHA-256) to one of 10,000 buckets,
  so the same message always gets the same variant, on any worker, in any order.
  When the percentages add up to less than 100 the rest is the *holdout*
  (``None``): those messages wait for the winner, which is sent to them after the
  test window (the classic "test on 20 %, send the winner to 80 %").
* :func:`choose_winner`: after the window, the variant with the best open (or click)
  rate over the messages it delivered; ties go to the variant with more deliveries,
  then to the key that sorts first, so the choice is reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

BUCKETS = 10_000
METRICS = ("opens", "clicks")
Metric = Literal["opens", "clicks"]


@dataclass(frozen=True)
class VariantSplit:
    """A variant's key and its share of the messages, in percent (0-100)."""

    key: str
    percent: int


@dataclass(frozen=True)
class VariantStats:
    """What a variant achieved in the test window."""

    key: str
    delivered: int
    opens: int = 0
    clicks: int = 0

    def rate(self, metric: Metric) -> float:
        if self.delivered <= 0:
            return 0.0
        return (self.opens if metric == "opens" else self.clicks) / self.delivered


def _bucket(message_key: str) -> int:
    digest = hashlib.sha256(message_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(message_key: str, variants: Sequence[VariantSplit]) -> VariantSplit | None:
    """The variant of one message, or None for the holdout (see the module docstring).

    The variants are taken in key order, so the caller's order does not matter."""
    bucket = _bucket(message_key)
    edge = 0
    for variant in sorted(variants, key=lambda v: v.key):
        edge += max(variant.percent, 0) * (BUCKETS // 100)
        if bucket < edge:
            return variant
    return None


def choose_winner(stats: Sequence[VariantStats], metric: Metric) -> VariantStats | None:
    """The best variant by ``metric`` rate; None when nothing was delivered yet."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    candidates = [s for s in stats if s.delivered > 0]
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda s: s.key)
    return max(ranked, key=lambda s: (s.rate(metric), s.delivered))


def winner_due(test_started_at: datetime, window: timedelta, now: datetime) -> bool:
    """Whether the test window is over, so the winner may be chosen."""
    return now >= test_started_at + window
