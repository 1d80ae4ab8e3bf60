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
