"""API shapes for consent, topics and the suppression list.

Shape only (types, lengths, unknown fields); the service checks meanings (a known
purpose, a capture time not in the future, a real address). Evidence and
addresses are PHI: they come back only to callers holding ``phi:read``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.consent.models import ConsentCurrent, ConsentRecord, Suppression, Topic
from carepost.core.text import MultiLineText, SingleLineText
from carepost.core.types import IsoDateTime

ChannelName = Literal["email", "sms"]
StatusName = Literal["granted", "revoked", "pending"]
SourceName = Literal[
    "web_form", "api", "import", "paper", "preference_center", "keyword", "one_click", "mailto"
]
ReasonName = Literal["unsubscribe", "hard_bounce", "complaint", "manual", "imported"]
ScopeName = Literal["all", "marketing"]


class ConsentCreate(BaseModel):
    """A consent event to record for the contact: it is appended, never overwritten."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    purpose: SingleLineText = Field(
        min_length=1,
        max_length=40,
        description="transactional, marketing, marketing_phi, research, or a topic key",
    )
    status: StatusName
    source: SourceName = "api"
    evidence: MultiLineText | None = Field(
        default=None, max_length=2000, description="Free text or a reference; stored encrypted"
    )
    captured_at: IsoDateTime | None = Field(
        default=None, description="When the consent was given (default: now)"
    )
    expires_at: IsoDateTime | None = None


class ConsentOut(BaseModel):
    id: uuid.UUID
    channel: str
    purpose: str
    status: str
    source: str
    evidence: str | None = Field(description="Null without phi:read")
    evidence_redacted: bool
    captured_at: datetime
    expires_at: datetime | None
    recorded_at: datetime
    recorded_by_type: str

    @classmethod
    def of(cls, record: ConsentRecord, *, show_phi: bool) -> ConsentOut:
        return cls(
            id=record.id,
            channel=record.channel,
            purpose=record.purpose,
            status=record.status,
            source=record.source,
            evidence=record.evidence if show_phi else None,
            evidence_redacted=not show_phi and record.evidence is not None,
            captured_at=record.captured_at,
            expires_at=record.expires_at,
            recorded_at=record.created_at,
            recorded_by_type=record.recorded_by_type,
        )


class CurrentConsentOut(BaseModel):
    channel: str
    purpose: str
    status: str
    record_id: uuid.UUID
    captured_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, row: ConsentCurrent) -> CurrentConsentOut:
        return cls(
            channel=row.channel,
            purpose=row.purpose,
            status=row.status,
            record_id=row.record_id,
            captured_at=row.captured_at,
            expires_at=row.expires_at,
        )


class ContactConsents(BaseModel):
    current: list[CurrentConsentOut]
    history: list[ConsentOut] = Field(description="Every record, newest capture first")


class TopicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: SingleLineText = Field(min_length=2, max_length=40, pattern=r"^[a-z][a-z0-9_-]+$")
    name: SingleLineText = Field(min_length=1, max_length=200)
    description: MultiLineText = Field(default="", max_length=1000)
    channels: list[ChannelName] = Field(default=["email", "sms"], min_length=1, max_length=2)


class TopicOut(BaseModel):
    id: uuid.UUID
    key: str
    name: str
    description: str
    channels: list[str]
    created_at: datetime

    @classmethod
    def of(cls, topic: Topic) -> TopicOut:
        return cls(
            id=topic.id,
            key=topic.key,
            name=topic.name,
            description=topic.description,
            channels=list(topic.channels),
            created_at=topic.created_at,
        )


class TopicList(BaseModel):
    items: list[TopicOut]


class SuppressionCreate(BaseModel):
    """An address to suppress, in the body: PHI never goes in a URL."""

    model_config = ConfigDict(extra="forbid")

    address: SingleLineText = Field(
        min_length=1, max_length=320, description="An email address or an E.164 phone number"
    )
    reason: ReasonName = "manual"
    scope: ScopeName | None = Field(
        default=None, description="Default: marketing for unsubscribes, all for the rest"
    )


class SuppressionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: SingleLineText = Field(min_length=1, max_length=320)
    purpose: SingleLineText = Field(default="marketing", min_length=1, max_length=40)


class SuppressionCheckOut(BaseModel):
    suppressed: bool = Field(description="Whether a message of this purpose is blocked")
    listed: bool = Field(description="Whether the address is on the list at all")
    reason: str | None
    scope: str | None


class SuppressionRemove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: MultiLineText = Field(min_length=1, max_length=500, description="Why (audited)")


class SuppressionOut(BaseModel):
    id: uuid.UUID
    channel: str
    address: str | None = Field(description="Null without phi:read")
    reason: str
    scope: str
    source: str
    created_at: datetime
    created_by_type: str
    created_by_label: str

    @classmethod
    def of(cls, entry: Suppression, *, show_phi: bool) -> SuppressionOut:
        return cls(
            id=entry.id,
            channel=entry.channel,
            address=entry.address if show_phi else None,
            reason=entry.reason,
            scope=entry.scope,
            source=entry.source,
            created_at=entry.created_at,
            created_by_type=entry.created_by_type,
            created_by_label=entry.created_by_label,
        )


class ImportLineError(BaseModel):
    line: int
    column: str
    detail: str


class SuppressionImportOut(BaseModel):
    imported: int
    already_listed: int
    rejected: int
    errors: list[ImportLineError] = Field(description="The first 1,000 rejected lines")
