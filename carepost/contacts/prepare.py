"""Checking one incoming contact (API body, batch item, import row) before any write.

Pure apart from reading nothing: the caller passes the tenant's field schema and
stages. Errors name the field relative to the item (``birth_date``,
``custom/weight``, ``external_ids/mrn``); the API prefixes the item's pointer.

:func:`prepare_batch` checks a whole batch against a :class:`PreparationContext`;
it needs no database and no keys, so an import can run it in worker processes
while the previous batch is written (see :func:`carepost.contacts.upserts.upsert_prepared`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.values import FieldSpec, normalize_custom
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters

IDENTIFIER_KINDS = ("mrn", "crm")
# What a batch can be keyed by: a unique identifier.
MATCH_KEYS = ("email", "external_id", *IDENTIFIER_KINDS)
ATTRIBUTES = ("journey_stage", "language", "timezone")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")
_MISSING = object()


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass
class PreparedContact:
    """One checked contact: only what the caller sent (``None`` clears a value)."""

    standard: dict[str, str | None] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, str | None] = field(default_factory=dict)
    attributes: dict[str, str | None] = field(default_factory=dict)

    def match_value(self, key: str) -> str | None:
        if key in IDENTIFIER_KINDS:
            return self.identifiers.get(key)
        return self.standard.get(key)

    @property
    def field_names(self) -> list[str]:
        names = [*self.standard, *self.attributes]
        names += [f"custom/{key}" for key in self.custom]
        names += [f"external_ids/{kind}" for kind in self.identifiers]
        return sorted(names)


def match_pointer(key: str) -> str:
    return f"external_ids/{key}" if key in IDENTIFIER_KINDS else key


def _identifier(kind: str, raw: Any) -> str | None:
    name = f"external_ids/{kind}"
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationFailed("must be a string", field=name)
    cleaned = raw.strip()
    if not cleaned or len(cleaned) > 200 or has_forbidden_characters(cleaned):
        raise ValidationFailed("must be 1-200 characters on one line", field=name)
    return cleaned


def _attribute(name: str, raw: Any, stages: Collection[str]) -> str | None:
    if raw is None:
        if name == "journey_stage":
            raise ValidationFailed("a contact always has a journey stage", field=name)
        return None
    if not isinstance(raw, str):
        raise ValidationFailed("must be a string", field=name)
    if name == "journey_stage" and raw not in stages:
        raise ValidationFailed(
            "not a journey stage of this organization (built in: new, active, overdue, at-risk)",
            field=name,
        )
    if name == "language" and not _LANGUAGE.match(raw):
        raise ValidationFailed("use a BCP 47 language tag, e.g. en or es-MX", field=name)
    if name == "timezone" and raw not in _time_zones():
        raise ValidationFailed("use an IANA time zone, e.g. America/Chicago", field=name)
    return raw


def normalize_attribute(name: str, raw: Any) -> str | None:
    """A language (BCP 47) or time zone (IANA) as stored, or ValidationFailed on ``name``."""
    return _attribute(name, raw, ())


@dataclass(frozen=True)
class PreparationContext:
    """What checking a contact needs of its tenant: the custom fields and the stages."""

    schema: Mapping[str, FieldSpec]
    stages: frozenset[str]


@dataclass
class PreparedBatch:
    """A batch checked ahead of its write: per item, the prepared contact or its errors.

    Picklable and free of keys (it holds the plaintext values: keep it in memory,
    between processes of the same host). ``context`` is what it was checked against:
    the write refuses a batch whose tenant changed its fields or stages since.
    """

    context: PreparationContext
    now: datetime
    items: list[PreparedContact | list[FieldError]]


def prepare_batch(
    items: Sequence[Mapping[str, Any]], context: PreparationContext, *, now: datetime
) -> PreparedBatch:
    """Check and normalize every item of a batch (errors are kept per item)."""
    prepared: list[PreparedContact | list[FieldError]] = []
    for raw in items:
        try:
            prepared.append(
                prepare_contact(raw, schema=context.schema, stages=context.stages, now=now)
            )
        except ValidationFailed as failed:
            prepared.append(failed.errors)
    return PreparedBatch(context, now, prepared)


def prepare_contact(
    raw: Mapping[str, Any],
    *,
    schema: Mapping[str, FieldSpec],
    stages: Collection[str],
    now: datetime,
) -> PreparedContact:
    """Check and normalize one contact; every invalid field is reported together."""
    prepared = PreparedContact()
    errors: list[FieldError] = []
    for name, value in raw.items():
        try:
            if name in STANDARD_FIELDS:
                if value is not None and not isinstance(value, str):
                    raise ValidationFailed("must be a string", field=name)
                normalized = STANDARD_FIELDS[name].normalize(value) if value else None
                prepared.standard[name] = normalized or None
            elif name == "custom":
                prepared.custom = normalize_custom(schema, value or {}, now=now)
            elif name == "external_ids":
                if not isinstance(value, Mapping):
                    raise ValidationFailed("must be an object of kind to id", field=name)
                for kind, item in value.items():
                    if kind not in IDENTIFIER_KINDS:
                        raise ValidationFailed(
                            "an external id kind is mrn or crm", field=f"external_ids/{kind}"
                        )
                    prepared.identifiers[kind] = _identifier(kind, item)
            elif name in ATTRIBUTES:
                prepared.attributes[name] = _attribute(name, value, stages)
            else:
                raise ValidationFailed("unknown field", field=name)
        except ValidationFailed as failed:
            errors.extend(failed.errors or [FieldError(name, failed.detail)])
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)
    return prepared
