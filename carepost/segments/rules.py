"""The segment rule language: JSON in, typed and checked nodes out (docs/segments.md).

A rule is a tree. A *group* combines rules (``{"all": [...]}``, ``{"any": [...]}``,
``{"not": {...}}``); a *condition* is an object with exactly one of these keys:

* ``field``: a custom field or a standard attribute, with ``op`` and ``value``;
* ``list``: the id of a list the contact is a current member of;
* ``consent``: ``{"channel", "purpose", "status"}`` (granted, revoked, pending,
  expired, none);
* ``suppressed``: ``"email"``, ``"sms"`` or ``"any"``;
* ``event``: behaviour over the timeline: ``kind`` (one or several) and/or
  ``campaign_id``, ``at_least``/``at_most`` times, ``within_last_days`` or ``since``.

Parsing is pure: it takes the tenant's vocabulary (its fields, lists, event kinds,
purposes and stages) and the current time, and either returns the typed tree
(:mod:`carepost.segments.nodes`) or raises one :class:`ValidationFailed` listing
every fault, each with a JSON pointer to the node at fault (``rule/all/2/value``)
and a message that says what is allowed. A reference to anything the tenant does
not have (another organization's list or field included) is such a fault.
Relative time (``within the last N days``, ages) is resolved against ``now`` here,
so a parsed rule is a snapshot of its meaning at that instant; dynamic segments
parse again each time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from carepost.contacts.fields import EARLIEST_BIRTH_DATE
from carepost.contacts.tokens import (
    MAX_RANGE_BUCKETS,
    FieldType,
    number_bucket,
)
from carepost.contacts.values import EARLIEST_DATE, LATEST_DATE, FieldSpec
from carepost.core.errors import FieldError, ValidationFailed
from carepost.segments.nodes import (
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    DateRange,
    EventCondition,
    FieldCondition,
    ListCondition,
    Node,
    Not,
    NumberRange,
    SuppressedCondition,
    Vocabulary,
    age_range,
    range_sizes,
)

MAX_DEPTH = 8
MAX_NODES = 200
MAX_VALUES = 1000
MAX_COUNT = 1_000_000
MAX_DAYS = 36_600
MAX_AGE = 130
# Tokens a whole rule may send (each range is also capped at MAX_RANGE_BUCKETS).
MAX_RULE_TOKENS = 60_000

GROUP_KEYS = ("all", "any", "not")
CONDITION_KEYS = ("field", "list", "consent", "suppressed", "event")
CHANNELS = ("email", "sms")
CONSENT_STATUSES = ("granted", "revoked", "pending", "expired", "none")
SUPPRESSION_CHANNELS = ("email", "sms", "any")

# Standard attributes of a contact that rules may name, besides custom fields.
BIRTH_DATE = FieldSpec("birth_date", FieldType.DATE, granularity="day", past_only=True)
COLUMN_ATTRIBUTES = ("journey_stage", "language", "email", "phone")

PRESENCE_OPS = ("is_set", "is_not_set")
DATE_OPS = ("on", "before", "after", "between", "within_last_days")
OPS_BY_TYPE: dict[FieldType, tuple[str, ...]] = {
    FieldType.STRING: ("equals", "in", *PRESENCE_OPS),
    FieldType.CHOICE: ("equals", "in", *PRESENCE_OPS),
    FieldType.MULTI_CHOICE: ("contains_any", "contains_all", *PRESENCE_OPS),
    FieldType.BOOLEAN: ("equals", *PRESENCE_OPS),
    FieldType.NUMBER: ("equals", "between", *PRESENCE_OPS),
    FieldType.DATE: (*DATE_OPS, *PRESENCE_OPS),
    FieldType.DATETIME: (*DATE_OPS, *PRESENCE_OPS),
}
OPS_BY_ATTRIBUTE: dict[str, tuple[str, ...]] = {
    "journey_stage": ("equals", "in"),
    "language": ("equals", "in", *PRESENCE_OPS),
    "email": PRESENCE_OPS,
    "phone": PRESENCE_OPS,
}


# --- parsing -----------------------------------------------------------------------


class _Problems(Exception):
    """Raised inside a node's parsing to stop at its first fault (collected above)."""


@dataclass
class _Parser:
    vocabulary: Vocabulary
    now: datetime
    errors: list[FieldError] = field(default_factory=list)
    nodes: int = 0
    tokens: int = 0

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()

    def fail(self, pointer: str, message: str) -> _Problems:
        self.errors.append(FieldError(pointer, message))
        return _Problems()

    def node(self, raw: Any, pointer: str, depth: int) -> Node | None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if self.nodes == MAX_NODES + 1:
                self.fail(pointer, f"a rule holds at most {MAX_NODES} nodes")
            return None
        if depth > MAX_DEPTH:
            self.fail(pointer, f"groups nest at most {MAX_DEPTH} deep")
            return None
        try:
            return self._node(raw, pointer, depth)
        except _Problems:
            return None

    def _node(self, raw: Any, pointer: str, depth: int) -> Node | None:
        if not isinstance(raw, Mapping):
            raise self.fail(pointer, _SHAPE)
        kinds = [key for key in (*GROUP_KEYS, *CONDITION_KEYS) if key in raw]
        if len(kinds) != 1:
            raise self.fail(pointer, _SHAPE)
        [kind] = kinds
        if kind in GROUP_KEYS:
            extra = sorted(set(raw) - {kind})
            if extra:
                raise self.fail(f"{pointer}/{extra[0]}", "a group has no other keys")
            return self._group(kind, raw[kind], f"{pointer}/{kind}", depth)
        if kind == "field":
            return self._field(raw, pointer)
        if kind == "list":
            self._only(raw, pointer, {"list"})
            return self._list(raw["list"], f"{pointer}/list")
        if kind == "consent":
            self._only(raw, pointer, {"consent"})
            return self._consent(raw["consent"], f"{pointer}/consent")
        if kind == "suppressed":
            self._only(raw, pointer, {"suppressed"})
            value = raw["suppressed"]
            if value not in SUPPRESSION_CHANNELS:
                raise self.fail(f"{pointer}/suppressed", "must be email, sms or any")
            return SuppressedCondition(str(value))
        self._only(raw, pointer, {"event"})
        return self._event(raw["event"], f"{pointer}/event")

    def _only(self, raw: Mapping[str, Any], pointer: str, allowed: set[str]) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            raise self.fail(f"{pointer}/{extra[0]}", f"unknown key: allowed are {_names(allowed)}")

    def _group(self, kind: str, raw: Any, pointer: str, depth: int) -> Node | None:
        if kind == "not":
            child = self.node(raw, pointer, depth + 1)
            return Not(child) if child is not None else None
        if not isinstance(raw, list) or not raw:
            raise self.fail(pointer, f"'{kind}' takes a non-empty array of rules")
        children = [self.node(item, f"{pointer}/{i}", depth + 1) for i, item in enumerate(raw)]
        if any(child is None for child in children):
            return None
        kept = tuple(child for child in children if child is not None)
        return AllOf(kept) if kind == "all" else AnyOf(kept)

    # --- fields ------------------------------------------------------------------

    def _field(self, raw: Mapping[str, Any], pointer: str) -> Node:
        self._only(raw, pointer, {"field", "op", "value"})
        key = raw["field"]
        op = raw.get("op")
        if not isinstance(key, str):
            raise self.fail(f"{pointer}/field", "must be a field key")
        if key in COLUMN_ATTRIBUTES:
            allowed = OPS_BY_ATTRIBUTE[key]
        elif key == BIRTH_DATE.key:
            allowed = (*OPS_BY_TYPE[FieldType.DATE], "age_between")
        elif key in self.vocabulary.fields:
            spec = self.vocabulary.fields[key]
            allowed = PRESENCE_OPS if spec.sealed else OPS_BY_TYPE[spec.type]
        else:
            raise self.fail(
                f"{pointer}/field",
                "no such field: use a key defined under /contact-fields, or birth_date, "
                f"{', '.join(COLUMN_ATTRIBUTES)}",
            )
        if op not in allowed:
            sealed = key in self.vocabulary.fields and self.vocabulary.fields[key].sealed
            why = " (the field is sealed: not segmentable)" if sealed else ""
            raise self.fail(f"{pointer}/op", f"for this field op is one of {_names(allowed)}{why}")
        assert isinstance(op, str)
        value_pointer = f"{pointer}/value"
        if op in PRESENCE_OPS:
            if "value" in raw:
                raise self.fail(value_pointer, f"'{op}' takes no value")
            present = "present" if op == "is_set" else "absent"
            if key in COLUMN_ATTRIBUTES:
                return AttributeCondition(key, present)
            spec = BIRTH_DATE if key == BIRTH_DATE.key else self.vocabulary.fields[key]
            return FieldCondition(spec, present, pointer=pointer)
        if "value" not in raw:
            raise self.fail(value_pointer, f"'{op}' needs a value")
        value = raw["value"]
        if key in COLUMN_ATTRIBUTES:
            return self._attribute(key, op, value, value_pointer)
        spec = BIRTH_DATE if key == BIRTH_DATE.key else self.vocabulary.fields[key]
        return self._typed(spec, op, value, value_pointer, pointer)

    def _attribute(self, key: str, op: str, value: Any, pointer: str) -> AttributeCondition:
        values = [value] if op == "equals" else self._array(value, pointer)
        for index, item in enumerate(values):
            at = pointer if op == "equals" else f"{pointer}/{index}"
            if not isinstance(item, str) or not 1 <= len(item) <= 40:
                raise self.fail(at, "must be a text of 1 to 40 characters")
            if key == "journey_stage" and item not in self.vocabulary.stages:
                stages = _names(self.vocabulary.stages)
                raise self.fail(at, f"not a journey stage of this organization: {stages}")
        return AttributeCondition(key, "any_of", tuple(dict.fromkeys(values)))

    def _array(self, value: Any, pointer: str, *, length: int | None = None) -> list[Any]:
        if length is not None:
            if not isinstance(value, list) or len(value) != length:
                raise self.fail(pointer, f"must be an array of {length} values")
            return value
        if not isinstance(value, list) or not value:
            raise self.fail(pointer, "must be a non-empty array")
        if len(value) > MAX_VALUES:
            raise self.fail(pointer, f"at most {MAX_VALUES} values")
        return value

    def _typed(self, spec: FieldSpec, op: str, value: Any, pointer: str, node: str) -> Node:
        kind = spec.type
        if kind in (FieldType.STRING, FieldType.CHOICE, FieldType.MULTI_CHOICE):
            items = [value] if op == "equals" else self._array(value, pointer)
            clean = []
            for index, item in enumerate(items):
                at = pointer if op == "equals" else f"{pointer}/{index}"
                if not isinstance(item, str) or not item.strip() or len(item) > 1000:
                    raise self.fail(at, "must be a non-empty text of at most 1000 characters")
                if kind is not FieldType.STRING and item not in spec.choices:
                    raise self.fail(at, "not one of the field's choices")
                clean.append(item.strip() if kind is FieldType.STRING else item)
            unique = tuple(dict.fromkeys(clean))
            self._count_tokens(len(unique), node)
            return FieldCondition(
                spec, "all_of" if op == "contains_all" else "any_of", unique, pointer=node
            )
        if kind is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                raise self.fail(pointer, "must be true or false")
            return FieldCondition(spec, "any_of", (value,), pointer=node)
        if kind is FieldType.NUMBER:
            if op == "equals":
                low = high = self._number(value, pointer)
            else:
                pair = self._array(value, pointer, length=2)
                low = self._number(pair[0], f"{pointer}/0")
                high = self._number(pair[1], f"{pointer}/1")
                if high < low:
                    raise self.fail(pointer, "the first bound must not exceed the second")
            assert spec.granularity is not None
            count = number_bucket(high, spec.granularity) - number_bucket(low, spec.granularity)
            self._check_range(count + 1, pointer)
            return FieldCondition(spec, "numbers", numbers=NumberRange(low, high), pointer=node)
        return self._dates(spec, op, value, pointer, node)

    def _number(self, value: Any, pointer: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(pointer, "must be a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(pointer, "must be a finite number") from None
        if not number.is_finite() or abs(number) > Decimal("1e15"):
            raise self.fail(pointer, "must be a number between -1e15 and 1e15")
        return number

    def _date(self, value: Any, pointer: str) -> date:
        if isinstance(value, str) and len(value) == 10:
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(pointer, "use an ISO date: YYYY-MM-DD")

    def _count(self, value: Any, pointer: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(pointer, f"must be a whole number from {low} to {high}")
        return value

    def _dates(self, spec: FieldSpec, op: str, value: Any, pointer: str, node: str) -> Node:
        bounds = _stored_bounds(spec, self.today)
        if op == "age_between":
            pair = self._array(value, pointer, length=2)
            youngest = self._count(pair[0], f"{pointer}/0", 0, MAX_AGE)
            oldest = self._count(pair[1], f"{pointer}/1", 0, MAX_AGE)
            if oldest < youngest:
                raise self.fail(pointer, "the first age must not exceed the second")
            wanted = age_range(self.today, youngest, oldest)
        elif op == "within_last_days":
            days = self._count(value, pointer, 0, MAX_DAYS)
            wanted = DateRange(self.today - timedelta(days=days), self.today)
        elif op == "between":
            pair = self._array(value, pointer, length=2)
            low, high = self._date(pair[0], f"{pointer}/0"), self._date(pair[1], f"{pointer}/1")
            if high < low:
                raise self.fail(pointer, "the first date must not be after the second")
            wanted = DateRange(low, high)
        else:
            day = self._date(value, pointer)
            if op == "on":
                wanted = DateRange(day, day)
            elif op == "before":
                wanted = DateRange(bounds.low, day - timedelta(days=1))
            else:
                wanted = DateRange(day + timedelta(days=1), bounds.high)
        assert spec.granularity is not None
        direct, complement = range_sizes(wanted, bounds, spec.granularity)
        self._check_range(min(direct, complement), pointer)
        return FieldCondition(spec, "dates", dates=wanted, bounds=bounds, pointer=node)

    def _check_range(self, count: int, pointer: str) -> None:
        if count > MAX_RANGE_BUCKETS:
            raise self.fail(
                pointer,
                f"the range spans {count} buckets of the field (at most {MAX_RANGE_BUCKETS}): "
                "narrow it or use a field with a coarser granularity",
            )
        self._count_tokens(count, pointer)

    def _count_tokens(self, count: int, pointer: str) -> None:
        self.tokens += count
        if self.tokens > MAX_RULE_TOKENS:
            raise self.fail(
                pointer, f"the rule's ranges and lists add up to over {MAX_RULE_TOKENS} values"
            )

    # --- lists, consent, events -------------------------------------------------------

    def _list(self, raw: Any, pointer: str) -> ListCondition:
        try:
            list_id = uuid.UUID(raw) if isinstance(raw, str) else None
        except ValueError:
            list_id = None
        if list_id is None or list_id not in self.vocabulary.list_ids:
            raise self.fail(pointer, "no such list: use the id of one of this organization's lists")
        return ListCondition(list_id)

    def _consent(self, raw: Any, pointer: str) -> ConsentCondition:
        if not isinstance(raw, Mapping):
            raise self.fail(pointer, "must be an object with channel, purpose and status")
        self._only(raw, pointer, {"channel", "purpose", "status"})
        channel, purpose, status = raw.get("channel"), raw.get("purpose"), raw.get("status")
        if channel not in CHANNELS:
            raise self.fail(f"{pointer}/channel", f"must be one of {_names(CHANNELS)}")
        if purpose not in self.vocabulary.purposes:
            raise self.fail(
                f"{pointer}/purpose",
                f"must be a purpose of this organization: {_names(self.vocabulary.purposes)}",
            )
        if status not in CONSENT_STATUSES:
            raise self.fail(f"{pointer}/status", f"must be one of {_names(CONSENT_STATUSES)}")
        return ConsentCondition(str(channel), str(purpose), str(status), self.now)

    def _event(self, raw: Any, pointer: str) -> EventCondition:
        if not isinstance(raw, Mapping):
            raise self.fail(pointer, "must be an object naming a kind and/or a campaign_id")
        allowed = {"kind", "campaign_id", "at_least", "at_most", "within_last_days", "since"}
        self._only(raw, pointer, allowed)
        kinds = raw.get("kind")
        kind_ids: list[int] = []
        if kinds is not None:
            names = [kinds] if isinstance(kinds, str) else self._array(kinds, f"{pointer}/kind")
            for index, name in enumerate(names):
                at = f"{pointer}/kind" if isinstance(kinds, str) else f"{pointer}/kind/{index}"
                if not isinstance(name, str) or name not in self.vocabulary.event_kinds:
                    raise self.fail(at, "no such event kind in this organization")
                kind_ids.append(self.vocabulary.event_kinds[name])
        campaign = raw.get("campaign_id")
        campaign_id = None
        if campaign is not None:
            try:
                campaign_id = uuid.UUID(campaign) if isinstance(campaign, str) else None
            except ValueError:
                campaign_id = None
            if campaign_id is None:
                raise self.fail(f"{pointer}/campaign_id", "must be a campaign id")
        if not kind_ids and campaign_id is None:
            raise self.fail(f"{pointer}/kind", "name a kind, a campaign_id, or both")
        at_least = self._count(raw.get("at_least", 1), f"{pointer}/at_least", 0, MAX_COUNT)
        at_most = None
        if raw.get("at_most") is not None:
            at_most = self._count(raw["at_most"], f"{pointer}/at_most", 0, MAX_COUNT)
            if at_most < at_least and "at_least" in raw:
                raise self.fail(f"{pointer}/at_most", "must not be less than at_least")
            if "at_least" not in raw:
                at_least = 0
        since = None
        if "within_last_days" in raw and "since" in raw:
            raise self.fail(f"{pointer}/since", "give within_last_days or since, not both")
        if "within_last_days" in raw:
            days = self._count(raw["within_last_days"], f"{pointer}/within_last_days", 1, MAX_DAYS)
            since = self.now - timedelta(days=days)
        elif "since" in raw:
            since = self._instant(raw["since"], f"{pointer}/since")
        return EventCondition(tuple(sorted(set(kind_ids))), campaign_id, at_least, at_most, since)

    def _instant(self, raw: Any, pointer: str) -> datetime:
        message = "use an ISO date (YYYY-MM-DD) or a date and time with a UTC offset"
        if not isinstance(raw, str) or len(raw) > 40:
            raise self.fail(pointer, message)
        try:
            if len(raw) == 10:
                return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(pointer, message) from None
        if moment.tzinfo is None:
            raise self.fail(pointer, message)
        return moment.astimezone(UTC)


_SHAPE = (
    "a rule is an object with exactly one of: all, any, not (groups) or "
    "field, list, consent, suppressed, event (conditions)"
)


def _names(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _stored_bounds(spec: FieldSpec, today: date) -> DateRange:
    """The days a stored value of the field can hold (what the value checks allow)."""
    if spec is BIRTH_DATE:
        return DateRange(EARLIEST_BIRTH_DATE, today)
    return DateRange(EARLIEST_DATE, today if spec.past_only else LATEST_DATE)


def parse_rule(raw: Any, vocabulary: Vocabulary, *, now: datetime, pointer: str = "rule") -> Node:
    """The typed rule, or ValidationFailed with every fault located by pointer."""
    parser = _Parser(vocabulary, now)
    node = parser.node(raw, pointer, 1)
    if parser.errors or node is None:
        errors = parser.errors or [FieldError(pointer, _SHAPE)]
        raise ValidationFailed(errors[0].message, errors=errors)
    return node
