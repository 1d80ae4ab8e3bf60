"""Checking and normalizing custom field values against a tenant's field schema.

Pure functions: a raw JSON value in, the canonical stored value out (dates as
ISO text, datetimes in UTC with ``Z``, multi-choices sorted and unique), or a
:class:`ValidationFailed` naming the field, never quoting the value (it may be PHI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from carepost.contacts.tokens import FieldType
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters

MAX_STRING = 1000
MAX_CHOICES_PER_VALUE = 200
EARLIEST_DATE = date(1800, 1, 1)
LATEST_DATE = date(2200, 12, 31)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class FieldSpec:
    """What value checks and tokens need of a field definition (a row of contact_fields)."""

    key: str
    type: FieldType
    phi: bool = True
    sealed: bool = False
    granularity: str | None = None
    past_only: bool = False
    choices: tuple[str, ...] = ()


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, field=field)


def _check_date(field: str, parsed: date, spec: FieldSpec, today: date) -> None:
    if not EARLIEST_DATE <= parsed <= LATEST_DATE:
        raise _fail(field, f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
    if spec.past_only and parsed > today:
        raise _fail(field, "must not be in the future")


def normalize_value(spec: FieldSpec, raw: Any, *, field: str, now: datetime) -> Any:
    """The canonical stored form of ``raw`` for ``spec`` (``field`` names it in errors)."""
    kind = spec.type
    if kind is FieldType.STRING:
        if not isinstance(raw, str):
            raise _fail(field, "must be a string")
        cleaned = raw.strip()
        if has_forbidden_characters(cleaned):
            raise _fail(field, "must be one line without control characters")
        if not cleaned or len(cleaned) > MAX_STRING:
            raise _fail(field, f"must be 1 to {MAX_STRING} characters")
        return cleaned
    if kind is FieldType.NUMBER:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _fail(field, "must be a number")
        if isinstance(raw, float) and not math.isfinite(raw):
            raise _fail(field, "must be a finite number")
        if abs(raw) > 1e15:
            raise _fail(field, "must be between -1e15 and 1e15")
        return raw
    if kind is FieldType.BOOLEAN:
        if not isinstance(raw, bool):
            raise _fail(field, "must be true or false")
        return raw
    if kind is FieldType.DATE:
        if not isinstance(raw, str) or not _ISO_DATE.match(raw):
            raise _fail(field, "use an ISO date: YYYY-MM-DD")
        try:
            parsed = date.fromisoformat(raw)
        except ValueError:
            raise _fail(field, "use an ISO date: YYYY-MM-DD") from None
        _check_date(field, parsed, spec, now.date())
        return parsed.isoformat()
    if kind is FieldType.DATETIME:
        message = "use an ISO 8601 date and time with a time zone, e.g. 2024-05-01T09:30:00Z"
        if not isinstance(raw, str) or len(raw) > 40:
            raise _fail(field, message)
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(field, message) from None
        if moment.tzinfo is None:
            raise _fail(field, message)
        moment = moment.astimezone(UTC)
        _check_date(field, moment.date(), spec, now.date())
        if spec.past_only and moment > now:
            raise _fail(field, "must not be in the future")
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind is FieldType.CHOICE:
        if not isinstance(raw, str):
            raise _fail(field, "must be one of the field's choices")
        if raw not in spec.choices:
            raise _fail(field, "is not one of the field's choices")
        return raw
    if kind is FieldType.MULTI_CHOICE:
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise _fail(field, "must be a list of the field's choices")
        if len(raw) > MAX_CHOICES_PER_VALUE:
            raise _fail(field, f"must hold at most {MAX_CHOICES_PER_VALUE} choices")
        if any(item not in spec.choices for item in raw):
            raise _fail(field, "holds a value that is not one of the field's choices")
        return sorted(set(raw))
    raise _fail(field, "has an unknown type")


def normalize_custom(
    schema: Mapping[str, FieldSpec],
    raw: Any,
    *,
    prefix: str = "custom",
    now: datetime,
) -> dict[str, Any]:
    """Check a ``custom`` object: field key -> value, ``None`` to clear. Every bad key
    is reported (``custom/<key>``), not just the first."""
    if not isinstance(raw, Mapping):
        raise _fail(prefix, "must be an object of field key to value")
    clean: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in raw.items():
        field = f"{prefix}/{key}"
        spec = schema.get(key)
        if spec is None:
            errors.append(FieldError(field, "unknown field: define it under /contact-fields"))
            continue
        if value is None:
            clean[key] = None
            continue
        try:
            clean[key] = normalize_value(spec, value, field=field, now=now)
        except ValidationFailed as failed:
            errors.extend(failed.errors)
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)
    return clean


def merge_custom(stored: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply changes (``None`` clears a key) to a stored custom object."""
    merged = dict(stored or {})
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
