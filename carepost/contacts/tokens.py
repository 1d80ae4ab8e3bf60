"""Segmentation tokens: how a contact's field value becomes queryable without plaintext.

Pure functions, no I/O (docs/contacts-data.md explains the design). A value is
turned into a *bucket* at its field's declared granularity, and the bucket into
a keyed token ``HMAC(tenant index key, "field:<key>" || 0x00 || bucket)``:

* string: the value, NFC and case-folded (equality ignores case);
* choice / multi-choice: the choice key (one token per chosen key);
* boolean: ``true`` / ``false``;
* number: ``floor(value / granularity)`` for a granularity of 0.1, 1 or 10;
* date: the day, month or year (``2024-03-05``, ``2024-03``, ``2024``); a datetime
  is bucketed by its UTC date. A date also gets the tokens of the coarser calendar
  buckets that hold it (a day: its month and its year; a month: its year), so that
  a range is sent as the fewest whole years, months and days that tile it
  (:func:`date_range_cover`): an age range of 25 years is ~100 tokens, not ~9,500.

A field holds a value exactly when the contact has a token of that field: "is
set" (and whether a field holds data at all) asks for *any* token of the field.
Values that have no bucket token say so with the plain presence marker ``*``:
sealed fields (which get nothing else) and an empty multi-choice. Other values
need no marker: their bucket tokens already mark them, and a CSV import would
otherwise write one more row per field and contact. (Tokens written before
migration 0008 carry a marker on every value; it means the same thing.)

A range (``between``, ``within the last N days``, an age) is expanded by
:func:`number_range_buckets` / :func:`date_range_cover` into the buckets it
touches (dates: tiled by whole years and months where they fit), capped at
:data:`MAX_RANGE_BUCKETS`.
"""

from __future__ import annotations

import calendar
import unicodedata
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from carepost.core.errors import ValidationFailed

PRESENT = "*"
# A range wider than this many buckets is refused: the IN-list would be too big
# to send (choose a coarser granularity, or narrow the range).
MAX_RANGE_BUCKETS = 20_000


class FieldType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    MULTI_CHOICE = "multi_choice"


NUMBER_GRANULARITIES = ("0.1", "1", "10")
DATE_GRANULARITIES = ("day", "month", "year")
DEFAULT_GRANULARITY = {
    FieldType.NUMBER: "1",
    FieldType.DATE: "day",
    FieldType.DATETIME: "day",
}


def granularities_for(field_type: FieldType) -> tuple[str, ...]:
    if field_type is FieldType.NUMBER:
        return NUMBER_GRANULARITIES
    if field_type in (FieldType.DATE, FieldType.DATETIME):
        return DATE_GRANULARITIES
    return ()


# --- numbers -------------------------------------------------------------------------


def number_bucket(value: Decimal | int | float, granularity: str) -> int:
    """The index of the bucket ``[i*g, (i+1)*g)`` that holds ``value``."""
    step = Decimal(granularity)
    exact = value if isinstance(value, Decimal) else Decimal(str(value))
    return int((exact / step).to_integral_value(rounding=ROUND_FLOOR))


def number_bucket_range(index: int, granularity: str) -> tuple[Decimal, Decimal]:
    """The half-open interval ``[low, high)`` of bucket ``index``."""
    step = Decimal(granularity)
    return index * step, (index + 1) * step


def number_range_buckets(
    low: Decimal | int | float, high: Decimal | int | float, granularity: str
) -> list[int]:
    """Every bucket that holds a value of the closed range ``[low, high]``."""
    first, last = number_bucket(low, granularity), number_bucket(high, granularity)
    _check_range_size(last - first + 1)
    return list(range(first, last + 1))


def number_bucket_text(index: int, granularity: str) -> str:
    # The granularity is part of the text, so a bucket of one granularity never
    # matches another's (a change of granularity is refused while data exists).
    return f"n{granularity}:{index}"


# --- dates ---------------------------------------------------------------------------


def date_bucket(value: date, granularity: str) -> str:
    if granularity == "day":
        return value.isoformat()
    if granularity == "month":
        return f"{value.year:04d}-{value.month:02d}"
    if granularity == "year":
        return f"{value.year:04d}"
    raise ValueError(f"unknown date granularity {granularity!r}")


def datetime_bucket(value: datetime, granularity: str) -> str:
    return date_bucket(value.astimezone(UTC).date(), granularity)


def _next_bucket_start(day: date, granularity: str) -> date:
    if granularity == "day":
        return day + timedelta(days=1)
    if granularity == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return date(day.year + 1, 1, 1)


def _bucket_start(day: date, granularity: str) -> date:
    if granularity == "day":
        return day
    if granularity == "month":
        return day.replace(day=1)
    return date(day.year, 1, 1)


def date_bucket_range(day: date, granularity: str) -> tuple[date, date]:
    """The half-open interval ``[first day, first day of the next bucket)`` around ``day``."""
    start = _bucket_start(day, granularity)
    return start, _next_bucket_start(start, granularity)


def date_range_buckets(low: date, high: date, granularity: str) -> list[str]:
    """Every bucket that holds a day of the closed range ``[low, high]``."""
    if high < low:
        return []
    if granularity == "day":
        count = (high - low).days + 1
    elif granularity == "month":
        count = (high.year - low.year) * 12 + high.month - low.month + 1
    else:
        count = high.year - low.year + 1
    _check_range_size(count)
    buckets: list[str] = []
    current = _bucket_start(low, granularity)
    while current <= high:
        buckets.append(date_bucket(current, granularity))
        if current.year == 9999 and granularity != "day":
            break
        current = _next_bucket_start(current, granularity)
    return buckets


# Calendar buckets from the finest to the coarsest: a value of a granularity is also
# tokenized at every coarser one (its "enclosing" buckets).
_DATE_LEVELS = ("day", "month", "year")


def enclosing_granularities(granularity: str) -> tuple[str, ...]:
    """The granularity and every coarser one that a date value is tokenized at."""
    return _DATE_LEVELS[_DATE_LEVELS.index(granularity) :]


def _last_day(day: date, level: str) -> date:
    """The last day of the ``level`` bucket that starts on ``day``."""
    if level == "year":
        return date(day.year, 12, 31)
    if level == "month":
        return day.replace(day=calendar.monthrange(day.year, day.month)[1])
    return day


def _starts(day: date, level: str) -> bool:
    if level == "year":
        return day.month == 1 and day.day == 1
    if level == "month":
        return day.day == 1
    return True


def date_range_cover(low: date, high: date, granularity: str) -> list[str]:
    """The fewest calendar buckets (whole years, then whole months, then single
    days, none finer than ``granularity``) that together hold exactly the days of the
    ``granularity`` buckets touching the closed range ``[low, high]``.

    The buckets are disjoint, so a stored value matches at most one of them: the
    cover selects the same contacts as :func:`date_range_buckets`, with a few dozen
    tokens where that would send thousands."""
    if high < low:
        return []
    levels = enclosing_granularities(granularity)[::-1]  # coarsest first
    current = _bucket_start(low, granularity)
    last = _last_day(_bucket_start(high, granularity), granularity)
    buckets: list[str] = []
    while True:
        level = next(
            level
            for level in levels
            if _starts(current, level) and _last_day(current, level) <= last
        )
        buckets.append(date_bucket(current, level))
        end = _last_day(current, level)
        if end >= last:
            break
        current = end + timedelta(days=1)
    _check_range_size(len(buckets))
    return buckets


def date_cover_size(low: date, high: date, granularity: str) -> int:
    """How many buckets :func:`date_range_cover` sends (without the size check)."""
    if high < low:
        return 0
    try:
        return len(date_range_cover(low, high, granularity))
    except ValidationFailed:  # pragma: no cover - a cover is never that long
        return MAX_RANGE_BUCKETS + 1


def _check_range_size(count: int) -> None:
    if count > MAX_RANGE_BUCKETS:
        raise ValidationFailed(
            f"the range spans {count} buckets (at most {MAX_RANGE_BUCKETS}): "
            "narrow it or use a field with a coarser granularity"
        )


# --- values to bucket texts ----------------------------------------------------------


def fold_text(value: str) -> str:
    """Equality on strings ignores case and Unicode composition."""
    return unicodedata.normalize("NFC", value).casefold()


def bucket_texts(field_type: FieldType, granularity: str | None, value: object) -> list[str]:
    """The bucket texts of one canonical value (as stored in the contact's JSON)."""
    if field_type is FieldType.STRING:
        return [f"s:{fold_text(str(value))}"]
    if field_type is FieldType.CHOICE:
        return [f"c:{value}"]
    if field_type is FieldType.MULTI_CHOICE:
        assert isinstance(value, list)
        return [f"c:{choice}" for choice in value]
    if field_type is FieldType.BOOLEAN:
        return ["b:true" if value else "b:false"]
    if field_type is FieldType.NUMBER:
        assert granularity is not None and isinstance(value, int | float)
        return [number_bucket_text(number_bucket(value, granularity), granularity)]
    if field_type is FieldType.DATE:
        assert granularity is not None
        return [f"d:{date_bucket(date.fromisoformat(str(value)), granularity)}"]
    if field_type is FieldType.DATETIME:
        assert granularity is not None
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return [f"d:{datetime_bucket(moment, granularity)}"]
    raise ValueError(f"unknown field type {field_type!r}")


def stored_bucket_texts(field_type: FieldType, granularity: str | None, value: object) -> list[str]:
    """The bucket texts stored for one value: :func:`bucket_texts`, and for a date
    also the coarser calendar buckets that hold it (see :func:`date_range_cover`)."""
    if field_type not in (FieldType.DATE, FieldType.DATETIME):
        return bucket_texts(field_type, granularity, value)
    assert granularity is not None
    if field_type is FieldType.DATE:
        day = date.fromisoformat(str(value))
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        day = moment.astimezone(UTC).date()
    return [f"d:{date_bucket(day, level)}" for level in enclosing_granularities(granularity)]


def token_label(field_key: str) -> str:
    """The blind-index label of a field's tokens: binds each token to its field."""
    return f"field:{field_key}"


def field_tokens(
    hmac_token: Callable[[str, str], str],
    field_key: str,
    field_type: FieldType,
    granularity: str | None,
    value: object,
    *,
    sealed: bool,
) -> list[str]:
    """All tokens of one field's value: the keyed bucket tokens, or the presence marker
    alone for a sealed field or a value without buckets (an empty multi-choice).
    ``hmac_token`` is ``TenantKeys.blind_index``."""
    if value is None:
        return []
    if sealed:
        return [PRESENT]
    label = token_label(field_key)
    texts = dict.fromkeys(stored_bucket_texts(field_type, granularity, value))
    return [hmac_token(label, text) for text in texts] or [PRESENT]


def range_tokens(
    hmac_token: Callable[[str, str], str], field_key: str, texts: Iterable[str]
) -> list[str]:
    """Tokens for a list of bucket texts (what a segment compiler puts in its IN-list)."""
    label = token_label(field_key)
    return [hmac_token(label, text) for text in texts]
