"""A/B variants: deterministic assignment by hash, and a reproducible winner."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from carepost.templates.variants import (
    VariantSplit,
    VariantStats,
    assign_variant,
    choose_winner,
    winner_due,
)

SPLIT = [VariantSplit("a", 10), VariantSplit("b", 10)]


@given(st.text(max_size=60))
def test_the_same_message_always_gets_the_same_variant(key):
    first = assign_variant(key, SPLIT)
    assert assign_variant(key, list(reversed(SPLIT))) == first


def test_splits_follow_the_percentages_and_the_rest_is_holdout():
    counts = Counter(
        (v.key if v else None) for v in (assign_variant(f"c1:{i}", SPLIT) for i in range(20000))
    )
    assert 1700 < counts["a"] < 2300 and 1700 < counts["b"] < 2300
    assert 15000 < counts[None] < 17000


def test_a_full_split_has_no_holdout():
    full = [VariantSplit("a", 50), VariantSplit("b", 50)]
    assert all(assign_variant(str(i), full) is not None for i in range(2000))


def test_the_winner_is_the_best_rate_by_the_metric():
    stats = [
        VariantStats("a", delivered=1000, opens=300, clicks=10),
        VariantStats("b", delivered=1000, opens=250, clicks=40),
    ]
    assert choose_winner(stats, "opens").key == "a"
    assert choose_winner(stats, "clicks").key == "b"


def test_ties_go_to_more_deliveries_then_to_the_first_key():
    assert choose_winner([VariantStats("b", 10, 1), VariantStats("a", 20, 2)], "opens").key == "a"
    assert choose_winner([VariantStats("b", 10, 1), VariantStats("a", 10, 1)], "opens").key == "a"


def test_no_winner_before_anything_is_delivered():
    assert choose_winner([VariantStats("a", 0), VariantStats("b", 0)], "opens") is None


def test_the_window_decides_when_a_winner_may_be_chosen():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not winner_due(start, timedelta(hours=4), start + timedelta(hours=3))
    assert winner_due(start, timedelta(hours=4), start + timedelta(hours=4))
