"""The typed tree of a parsed segment rule, and the date arithmetic both the
compiler and the reference evaluation rely on (ages, bucket counts).

Nodes are frozen dataclasses produced by :func:`carepost.segments.rules.parse_rule`;
every reference in them (a field's spec, a list id, event kind codes) has been
checked against the tenant, and relative time has been resolved to instants.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from carepost.contacts.tokens import date_bucket_range, date_cover_size
from carepost.contacts.values import FieldSpec

# The code a built-in event kind has until the tenant records one of its events
# (kind ids start at 1): no event has it, so a rule naming it counts no events.
UNRECORDED_KIND_ID = 0


@dataclass(frozen=True)
class Vocabulary:
    """What a tenant's rules may refer to (loaded by :mod:`carepost.segments.vocabulary`).

    ``event_kinds`` maps each kind key to its code: the tenant's recorded kinds, and
    the built-in ones not recorded yet to :data:`UNRECORDED_KIND_ID`."""

    fields: Mapping[str, FieldSpec]
    list_ids: frozenset[uuid.UUID]
    event_kinds: Mapping[str, int]
    purposes: tuple[str, ...]
    stages: frozenset[str]


# --- the typed tree ----------------------------------------------------------------


@dataclass(frozen=True)
class AllOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class DateRange:
    """A closed range of days; a value matches when its bucket touches the range."""

    low: date
    high: date


@dataclass(frozen=True)
class NumberRange:
    """A closed range; a value matches when its bucket (at the field's granularity)
    is one of the buckets holding ``low`` .. ``high``."""

    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class FieldCondition:
    """A condition on a tokenized field (custom, or the birth date).

    ``op`` is one of: ``present``, ``absent``, ``any_of`` (one of ``values``),
    ``all_of`` (every one of ``values``: multi-choice), ``dates`` (``dates``),
    ``numbers`` (``numbers``). ``values`` hold canonical values as stored.
    """

    spec: FieldSpec
    op: str
    values: tuple[Any, ...] = ()
    dates: DateRange | None = None
    numbers: NumberRange | None = None
    # The widest range of stored days, for a date rule to be sent as its complement.
    bounds: DateRange | None = None
    pointer: str = ""


@dataclass(frozen=True)
class AttributeCondition:
    """A condition on a plain column of contacts: journey stage, language, email/phone set."""

    attribute: str
    op: str  # present, absent, any_of
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListCondition:
    list_id: uuid.UUID


@dataclass(frozen=True)
class ConsentCondition:
    channel: str
    purpose: str
    status: str
    now: datetime


@dataclass(frozen=True)
class SuppressedCondition:
    channel: str  # email, sms or any


@dataclass(frozen=True)
class EventCondition:
    """At least ``at_least`` and at most ``at_most`` events of the kinds (any of them)
    and/or campaign, occurring at or after ``since`` (and never after ``until``).

    No ``kind_ids``: events of any kind (of the campaign). A kind id may be
    :data:`UNRECORDED_KIND_ID` (a built-in kind without events yet)."""

    kind_ids: tuple[int, ...]
    campaign_id: uuid.UUID | None
    at_least: int
    at_most: int | None
    since: datetime | None


Condition = (
    FieldCondition
    | AttributeCondition
    | ListCondition
    | ConsentCondition
    | SuppressedCondition
    | EventCondition
)
Node = AllOf | AnyOf | Not | Condition


# --- dates ------------------------------------------------------------------------


def years_before(today: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February becomes the 28th)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


def age_on(birth: date, today: date) -> int:
    """Age in whole years: the birthday counts from its day (29 Feb: from 1 March)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def age_range(today: date, youngest: int, oldest: int) -> DateRange:
    """The birth dates of people aged ``youngest`` to ``oldest`` today, both included."""
    latest = years_before(today, youngest)
    earliest = years_before(today, oldest + 1) + timedelta(days=1)
    return DateRange(earliest, latest)


def range_sizes(wanted: DateRange, bounds: DateRange, granularity: str) -> tuple[int, int]:
    """(tokens sent for ``wanted``, tokens sent for the part of ``bounds`` outside it):
    a date rule goes to SQL as whichever list is shorter. Both are counted as the
    calendar cover of :func:`carepost.contacts.tokens.date_range_cover` (whole years
    and months where they fit)."""
    low, high = max(wanted.low, bounds.low), min(wanted.high, bounds.high)
    if high < low:
        return 0, 0
    direct = date_cover_size(low, high, granularity)
    before_end = date_bucket_range(low, granularity)[0] - timedelta(days=1)
    after_start = date_bucket_range(high, granularity)[1]
    complement = date_cover_size(bounds.low, before_end, granularity) + date_cover_size(
        after_start, bounds.high, granularity
    )
    return direct, complement


def referenced_lists(node: Node) -> set[uuid.UUID]:
    """The list ids a rule names (to check whether a list is in use)."""
    if isinstance(node, AllOf | AnyOf):
        return set().union(*(referenced_lists(child) for child in node.children))
    if isinstance(node, Not):
        return referenced_lists(node.child)
    return {node.list_id} if isinstance(node, ListCondition) else set()
