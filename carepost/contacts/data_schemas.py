"""API shapes for the contact field schema and upserts (lists and events:
:mod:`carepost.contacts.activity_schemas`).

Batch items are plain objects here, checked one by one by the service: a bad
item gets its own error in the answer while the others apply, which a schema
rejecting the whole request could not do.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.contacts.models import CustomField
from carepost.contacts.upserts import MAX_BATCH, ItemResult
from carepost.core.text import SingleLineText

FieldTypeName = Literal["string", "number", "date", "datetime", "boolean", "choice", "multi_choice"]
Granularity = Literal["0.1", "1", "10", "day", "month", "year"]
MatchKey = Literal["email", "external_id", "mrn", "crm"]
ChoiceKey = SingleLineText


class ContactFieldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=40, description="lower_snake_case, immutable")
    label: SingleLineText = Field(min_length=1, max_length=200)
    type: FieldTypeName
    phi: bool = Field(default=True, description="Holds PHI (the safe default)")
    sealed: bool = Field(default=False, description="Encrypted only: no tokens, so not segmentable")
    granularity: Granularity | None = Field(
        default=None,
        description="number: 0.1, 1 or 10 units; date/datetime: day, month or year",
    )
    past_only: bool = Field(default=False, description="date fields: refuse future dates")
    choices: list[ChoiceKey] | None = Field(default=None, max_length=2000)


class ContactFieldUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    type: FieldTypeName | None = None
    phi: bool | None = None
    sealed: bool | None = None
    granularity: Granularity | None = None
    past_only: bool | None = None
    choices: list[ChoiceKey] | None = Field(default=None, max_length=2000)

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ContactFieldOut(BaseModel):
    id: uuid.UUID
    key: str
    label: str
    type: str
    phi: bool
    sealed: bool
    granularity: str | None
    past_only: bool
    choices: list[str] | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, row: CustomField) -> ContactFieldOut:
        return cls.model_validate(row, from_attributes=True)


class ContactFieldList(BaseModel):
    items: list[ContactFieldOut]


CONTACT_ITEM_DESCRIPTION = (
    "A contact: standard fields (email, phone, external_id, first_name, last_name, "
    "birth_date), custom (field key -> value), external_ids ({mrn, crm}), journey_stage, "
    "language, timezone. Omitted fields are left alone; null clears."
)


class UpsertOne(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: MatchKey = Field(description="The unique identifier that finds an existing contact")
    contact: dict[str, Any] = Field(description=CONTACT_ITEM_DESCRIPTION)


class UpsertBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: MatchKey
    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, description=CONTACT_ITEM_DESCRIPTION
    )


class ItemError(BaseModel):
    pointer: str
    detail: str


class ItemOutcome(BaseModel):
    index: int
    status: Literal["created", "updated", "unchanged", "error"]
    id: uuid.UUID | None = None
    errors: list[ItemError] = []

    @classmethod
    def of(cls, result: ItemResult, prefix: str) -> ItemOutcome:
        return cls(
            index=result.index,
            status=result.status,
            id=result.id,
            errors=[
                ItemError(pointer=f"{prefix}/{result.index}/{e.field}", detail=e.message)
                for e in result.errors
            ],
        )


class BatchOutcome(BaseModel):
    created: int
    updated: int
    unchanged: int
    failed: int
    items: list[ItemOutcome]

    @classmethod
    def of(cls, results: list[ItemResult], prefix: str = "#/body/items") -> BatchOutcome:
        def count(status: str) -> int:
            return sum(1 for r in results if r.status == status)

        return cls(
            created=count("created"),
            updated=count("updated"),
            unchanged=count("unchanged"),
            failed=count("error"),
            items=[ItemOutcome.of(r, prefix) for r in results],
        )
