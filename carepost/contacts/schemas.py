"""API shapes for contacts.

Shape only (types, lengths, unknown fields); the meaning of each value (a valid
address, E.164, a birth date in the past) is checked by the service, so imports
and the API agree. Contacts read without the ``phi:read`` permission come back
with every PHI field null and ``phi_redacted`` set.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import date, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carepost.contacts.fields import PHI_FIELDS
from carepost.contacts.models import Contact
from carepost.core.text import SingleLineText


class _ContactFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: SingleLineText | None = Field(
        default=None, max_length=320, json_schema_extra={"format": "email"}
    )
    phone: SingleLineText | None = Field(
        default=None, max_length=32, description="E.164, e.g. +14155552671"
    )
    external_id: SingleLineText | None = Field(
        default=None, max_length=200, description="Your system's id (MRN, CRM id)"
    )
    first_name: SingleLineText | None = Field(default=None, max_length=200)
    last_name: SingleLineText | None = Field(default=None, max_length=200)
    birth_date: date | None = Field(default=None, description="ISO date, not in the future")

    @field_validator("birth_date", mode="before")
    @classmethod
    def _iso_date_text(cls, value: Any) -> Any:
        # Pydantic would read a number as a Unix timestamp; a birth date is written as text.
        if value is not None and not isinstance(value, str | date):
            raise ValueError("use an ISO date: YYYY-MM-DD")
        return value

    def as_values(self, *, only_set: bool) -> dict[str, str | None]:
        """Field name -> text for the service (dates as ISO strings)."""
        names = self.model_fields_set if only_set else set(type(self).model_fields)
        values: dict[str, str | None] = {}
        for name in sorted(names):
            value = getattr(self, name)
            values[name] = value.isoformat() if isinstance(value, date) else value
        return values


class ContactCreate(_ContactFields):
    """A new contact. Omitted fields stay empty; email and external id are unique."""


class ContactUpdate(_ContactFields):
    """Fields to change. An omitted field is left alone; ``null`` clears it."""


class ContactLookup(BaseModel):
    """Find contacts by exactly one identifier, sent in the body so PHI stays out of URLs."""

    model_config = ConfigDict(extra="forbid")

    email: SingleLineText | None = Field(default=None, max_length=320)
    phone: SingleLineText | None = Field(default=None, max_length=32)
    external_id: SingleLineText | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in ("email", "phone", "external_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of email, phone, external_id")
        return self

    def criterion(self) -> tuple[str, str]:
        for name in ("email", "phone", "external_id"):
            value = getattr(self, name)
            if value:
                return name, value
        raise AssertionError("validated to hold one criterion")


class ContactOut(BaseModel):
    id: uuid.UUID
    phi_redacted: bool = Field(
        description="True when the caller lacks phi:read: every PHI field is then null."
    )
    email: str | None
    phone: str | None
    external_id: str | None
    first_name: str | None
    last_name: str | None
    birth_date: date | None
    custom: dict[str, Any] | None = Field(
        default=None, description="Custom field values (PHI: null without phi:read)"
    )
    external_ids: dict[str, str] | None = Field(
        default=None, description="MRN, CRM id (PHI: null without phi:read)"
    )
    journey_stage: str = "new"
    language: str | None = None
    timezone: str | None = None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(
        cls,
        contact: Contact,
        *,
        show_phi: bool,
        external_ids: dict[str, str] | None = None,
        known_fields: Collection[str] | None = None,
    ) -> ContactOut:
        phi: dict[str, Any] = dict.fromkeys(PHI_FIELDS)
        custom: dict[str, Any] | None = None
        if show_phi:
            phi = {name: getattr(contact, name) for name in PHI_FIELDS}
            # Values of deleted fields stay in the blob until the next write: not shown.
            custom = {
                key: value
                for key, value in (contact.custom or {}).items()
                if known_fields is None or key in known_fields
            }
        return cls(
            id=contact.id,
            phi_redacted=not show_phi,
            custom=custom,
            external_ids=(external_ids or {}) if show_phi else None,
            journey_stage=contact.journey_stage or "new",
            language=contact.language,
            timezone=contact.timezone,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
            **phi,
        )


class ContactMatches(BaseModel):
    items: list[ContactOut]


class ContactMergeRequest(BaseModel):
    """Duplicates to merge into the contact of the path (the survivor), in order of
    preference: the first duplicate holding a value fills a blank of the survivor."""

    model_config = ConfigDict(extra="forbid")

    duplicate_ids: list[uuid.UUID] = Field(min_length=1, max_length=100)


class ContactMergeOut(BaseModel):
    """What a merge did (ids, field names and counts: no PHI)."""

    survivor_id: uuid.UUID
    merged_ids: list[uuid.UUID]
    filled: list[str] = Field(description="Fields of the survivor filled from the duplicates")
    events: int = Field(description="Events moved to the survivor")
    consent_records: int = Field(description="Consent records moved to the survivor")
    list_stints: int = Field(description="List memberships (stints) moved to the survivor")
