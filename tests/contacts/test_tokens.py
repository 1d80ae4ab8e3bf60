"""Token bucketing and range expansion: a value lands in exactly the bucket whose
range holds it, and a range expands to exactly the buckets it touches."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.contacts import tokens
from carepost.core.errors import ValidationFailed

GRANULARITY = st.sampled_from(tokens.NUMBER_GRANULARITIES)
DATE_GRANULARITY = st.sampled_from(tokens.DATE_GRANULARITIES)
NUMBERS = st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False)
DATES = st.dates(min_value=date(1800, 1, 1), max_value=date(2200, 12, 31))


@given(NUMBERS, GRANULARITY)
def test_a_number_lands_in_the_bucket_whose_range_holds_it(value, granularity):
    index = tokens.number_bucket(value, granularity)
    low, high = tokens.number_bucket_range(index, granularity)
    assert low <= value < high


@given(NUMBERS, NUMBERS, NUMBERS, GRANULARITY)
def test_a_number_range_expands_to_exactly_the_buckets_it_touches(a, b, value, granularity):
    low, high = min(a, b), max(a, b)
    step = Decimal(granularity)
    if (high - low) / step > tokens.MAX_RANGE_BUCKETS - 2:
        return
    buckets = set(tokens.number_range_buckets(low, high, granularity))
    inside = tokens.number_bucket(value, granularity) in buckets
    # Every value of the range is found; a value found is at most one bucket away
    # from the range, i.e. within the range rounded out to the granularity.
    if low <= value <= high:
        assert inside
    first_low, _ = tokens.number_bucket_range(min(buckets), granularity)
    _, last_high = tokens.number_bucket_range(max(buckets), granularity)
    assert inside == (first_low <= value < last_high)


@given(DATES, DATE_GRANULARITY)
def test_a_date_lands_in_the_bucket_whose_range_holds_it(day, granularity):
    start, end = tokens.date_bucket_range(day, granularity)
    assert start <= day < end
    assert tokens.date_bucket(start, granularity) == tokens.date_bucket(day, granularity)


@given(DATES, DATES, DATES, DATE_GRANULARITY)
def test_a_date_range_expands_to_exactly_the_buckets_it_touches(a, b, day, granularity):
    low, high = min(a, b), max(a, b)
    try:
        buckets = tokens.date_range_buckets(low, high, granularity)
    except ValidationFailed:
        return
    assert len(buckets) == len(set(buckets))
    inside = tokens.date_bucket(day, granularity) in buckets
    first, _ = tokens.date_bucket_range(low, granularity)
    _, last = tokens.date_bucket_range(high, granularity)
    assert inside == (first <= day < last)
    if granularity == "day":
        assert inside == (low <= day <= high)


def test_a_range_too_wide_for_an_in_list_is_refused():
    with pytest.raises(ValidationFailed, match="coarser granularity"):
        tokens.date_range_buckets(date(1900, 1, 1), date(2000, 1, 1), "day")
    assert len(tokens.date_range_buckets(date(1900, 1, 1), date(2000, 1, 1), "month")) == 1201


def test_string_tokens_ignore_case_and_sealed_fields_only_mark_presence():
    def mac(label: str, text: str) -> str:
        return f"{label}|{text}"

    upper = tokens.field_tokens(mac, "city", tokens.FieldType.STRING, None, "ÅRHUS", sealed=False)
    lower = tokens.field_tokens(mac, "city", tokens.FieldType.STRING, None, "årHus", sealed=False)
    assert upper == lower == ["field:city|s:århus"]
    sealed = tokens.field_tokens(mac, "note", tokens.FieldType.STRING, None, "x", sealed=True)
    assert sealed == [tokens.PRESENT]
    multi = tokens.field_tokens(
        mac, "conditions", tokens.FieldType.MULTI_CHOICE, None, ["e11", "i10"], sealed=False
    )
    assert multi == ["field:conditions|c:e11", "field:conditions|c:i10"]


def test_only_values_without_bucket_tokens_carry_the_presence_marker():
    """Every value leaves at least one token of its field ("is set" asks for any)."""

    def mac(label: str, text: str) -> str:
        return f"{label}|{text}"

    empty = tokens.field_tokens(
        mac, "conditions", tokens.FieldType.MULTI_CHOICE, None, [], sealed=False
    )
    assert empty == [tokens.PRESENT]
    assert tokens.field_tokens(mac, "a1c", tokens.FieldType.NUMBER, "0.1", 7.2, sealed=False) == [
        "field:a1c|n0.1:72"
    ]
    assert tokens.field_tokens(mac, "a1c", tokens.FieldType.NUMBER, "0.1", None, sealed=False) == []


@given(DATES, DATES, DATES, DATE_GRANULARITY)
def test_a_date_range_cover_matches_exactly_the_days_of_the_buckets_it_touches(
    a, b, day, granularity
):
    """A stored date matches the cover (one of its stored buckets is in it) exactly
    when its own bucket touches the range, and then through one bucket only."""
    low, high = min(a, b), max(a, b)
    cover = set(tokens.date_range_cover(low, high, granularity))
    stored = tokens.stored_bucket_texts(tokens.FieldType.DATE, granularity, day.isoformat())
    hits = [text for text in stored if text.removeprefix("d:") in cover]
    first, _ = tokens.date_bucket_range(low, granularity)
    _, last = tokens.date_bucket_range(high, granularity)
    assert len(hits) == (1 if first <= day < last else 0)


def test_an_age_range_is_sent_as_whole_years_and_months_with_days_at_the_edges():
    cover = tokens.date_range_cover(date(1950, 6, 16), date(1976, 6, 15), "day")
    assert cover[:2] == ["1950-06-16", "1950-06-17"] and "1950-07" in cover
    assert "1951" in cover and "1975" in cover and "1976-05" in cover
    assert cover[-1] == "1976-06-15"
    assert len(cover) < 70  # instead of 9,496 days
    # A century of days fits too, where the day list was refused.
    assert len(tokens.date_range_cover(date(1900, 1, 1), date(2000, 1, 1), "day")) == 101


def test_a_date_is_stored_at_its_granularity_and_every_coarser_one():
    def stored(granularity: str) -> list[str]:
        return tokens.stored_bucket_texts(tokens.FieldType.DATE, granularity, "2024-03-05")

    assert stored("day") == ["d:2024-03-05", "d:2024-03", "d:2024"]
    assert stored("month") == ["d:2024-03", "d:2024"]
    assert stored("year") == ["d:2024"]
    moment = tokens.stored_bucket_texts(
        tokens.FieldType.DATETIME, "day", "2024-12-31T23:30:00-05:00"
    )
    assert moment == ["d:2025-01-01", "d:2025-01", "d:2025"]
