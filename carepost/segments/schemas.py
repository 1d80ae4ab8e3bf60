"""API shapes for segments, their counts, members, exports and snapshots.

A rule travels as a JSON object and is checked by the service
(:mod:`carepost.segments.rules`), whose errors point into it (``#/body/rule/all/2/op``);
the schema only insists that it is an object.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import MultiLineText, SingleLineText
from carepost.segments.models import Segment, SegmentSnapshot
from carepost.segments.service import MAX_EXPORT_COLUMNS

RULE_DESCRIPTION = (
    'A segment rule: {"all": [...]}, {"any": [...]}, {"not": {...}}, or a condition '
    '({"field", "op", "value"}, {"list"}, {"consent"}, {"suppressed"}, {"event"}); '
    "see docs/segments.md"
)


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=200)
    description: MultiLineText = Field(default="", max_length=2000)
    rule: dict[str, Any] = Field(description=RULE_DESCRIPTION)


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    description: MultiLineText | None = Field(default=None, max_length=2000)
    rule: dict[str, Any] | None = Field(default=None, description=RULE_DESCRIPTION)

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if getattr(self, name) is not None
        }


class SegmentOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    rule: dict[str, Any]
    include_list_id: uuid.UUID | None = Field(
        default=None,
        description="The static list of contacts added to the segment by hand (a "
        "workflow's Add to Segment step): its members belong to the segment besides "
        "those of the rule",
    )
    created_at: datetime
    created_by_type: str
    created_by_id: str
    updated_at: datetime | None
    updated_by_type: str | None
    updated_by_id: str | None

    @classmethod
    def of(cls, row: Segment) -> SegmentOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            rule=row.rule,
            include_list_id=row.include_list_id,
            created_at=row.created_at,
            created_by_type=row.created_by_type,
            created_by_id=row.created_by_id,
            updated_at=row.updated_at,
            updated_by_type=row.updated_by_type,
            updated_by_id=row.updated_by_id,
        )


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: dict[str, Any] = Field(description=RULE_DESCRIPTION)


class RuleError(BaseModel):
    pointer: str
    detail: str


class PreviewOut(BaseModel):
    """The live count of a rule being edited, or why it is not valid yet."""

    valid: bool
    count: int | None
    errors: list[RuleError]


class CountOut(BaseModel):
    count: int
    counted_at: datetime


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] | None = Field(
        default=None,
        max_length=MAX_EXPORT_COLUMNS,
        description=(
            "Columns in order: id, journey_stage, language, timezone, created_at, "
            "updated_at; PHI (needs phi:export) email, phone, external_id, first_name, "
            "last_name, birth_date; custom.<field key>. Default: id, journey_stage, language."
        ),
    )


class SnapshotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SingleLineText = Field(min_length=1, max_length=200)


class SnapshotOut(BaseModel):
    id: uuid.UUID
    segment_id: uuid.UUID | None
    reason: str
    member_count: int
    created_at: datetime

    @classmethod
    def of(cls, row: SegmentSnapshot) -> SnapshotOut:
        return cls(
            id=row.id,
            segment_id=row.segment_id,
            reason=row.reason,
            member_count=row.member_count,
            created_at=row.created_at,
        )
