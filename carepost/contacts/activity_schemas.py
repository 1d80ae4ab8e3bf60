"""API shapes for lists, list memberships and contact events.

Event items are plain objects here, checked one by one by the service
(:mod:`carepost.contacts.events`): a bad item gets its own error while the others
are kept, which a schema rejecting the whole request could not do.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carepost.contacts.activity_models import ContactList
from carepost.contacts.events import MAX_EVENTS, ItemResult
from carepost.contacts.lists import MAX_MEMBER_CHANGES, MembershipOutcome
from carepost.core.text import MultiLineText, SingleLineText


class ListCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=200)
    description: MultiLineText = Field(default="", max_length=2000)


class ListUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    description: MultiLineText | None = Field(default=None, max_length=2000)

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if getattr(self, name) is not None
        }


class ListOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    member_count: int
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, row: ContactList, member_count: int) -> ListOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            member_count=member_count,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class MemberChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: list[uuid.UUID] = Field(default=[], max_length=MAX_MEMBER_CHANGES)
    remove: list[uuid.UUID] = Field(default=[], max_length=MAX_MEMBER_CHANGES)

    @model_validator(mode="after")
    def _bounded(self) -> MemberChanges:
        if len(self.add) + len(self.remove) > MAX_MEMBER_CHANGES:
            raise ValueError(f"one call changes at most {MAX_MEMBER_CHANGES} memberships")
        return self


class ItemError(BaseModel):
    pointer: str
    detail: str


class MemberChangesOutcome(BaseModel):
    added: int
    removed: int
    unchanged: int
    failed: int
    errors: list[ItemError]

    @classmethod
    def of(cls, outcome: MembershipOutcome) -> MemberChangesOutcome:
        return cls(
            added=outcome.added,
            removed=outcome.removed,
            unchanged=outcome.unchanged,
            failed=len(outcome.errors),
            errors=[ItemError(pointer=e.field, detail=e.message) for e in outcome.errors],
        )


class MemberOut(BaseModel):
    contact_id: uuid.UUID
    joined_at: datetime


EVENT_ITEM_DESCRIPTION = (
    "An event: the contact by exactly one of contact_id, email or external_id; kind "
    "(lower_snake_case, created on first use); occurred_at (ISO 8601 with a UTC offset, "
    "at most 5 minutes ahead); optional source; optional properties (an object of at "
    "most 4 KB as JSON, stored encrypted)."
)


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_EVENTS, description=EVENT_ITEM_DESCRIPTION
    )


class EventItemOutcome(BaseModel):
    index: int
    status: Literal["created", "error"]
    id: int | None = None
    contact_id: uuid.UUID | None = None
    errors: list[ItemError] = []


class EventBatchOutcome(BaseModel):
    created: int
    failed: int
    items: list[EventItemOutcome]

    @classmethod
    def of(cls, results: list[ItemResult], prefix: str = "#/body/items") -> EventBatchOutcome:
        items = [
            EventItemOutcome(
                index=r.index,
                status="error" if r.errors else "created",
                id=r.id,
                contact_id=r.contact_id,
                errors=[
                    ItemError(pointer=f"{prefix}/{r.index}/{e.field}", detail=e.message)
                    for e in r.errors
                ],
            )
            for r in results
        ]
        failed = sum(1 for r in results if r.errors)
        return cls(created=len(results) - failed, failed=failed, items=items)


class EventRecorded(BaseModel):
    id: int
    contact_id: uuid.UUID


class EventOut(BaseModel):
    id: int
    kind: str
    occurred_at: datetime
    source: str
    properties: dict[str, Any] | None = None
    properties_redacted: bool = Field(
        description="True when the event has properties that need phi:read to see"
    )


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = None
