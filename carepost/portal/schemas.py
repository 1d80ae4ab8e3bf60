"""API shapes of portal items (no PHI: ids, states, times, counts, event codes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from carepost.core.text import SingleLineText, check_single_line


class PortalEventOut(BaseModel):
    kind: str
    occurred_at: datetime
    detail: dict[str, Any]


class ReplyAttachmentOut(BaseModel):
    """A file the recipient sent with a reply: its name (PHI: only with ``phi:read``),
    size and type; the content is downloaded in the console."""

    index: int
    name: str | None = Field(description="Null without phi:read (a file name may be PHI)")
    size: int
    content_type: str


class PortalReplyOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    length: int
    read_at: datetime | None
    attachments: list[ReplyAttachmentOut] = Field(default_factory=list)
    dlp: dict[str, Any] | None = Field(
        default=None, description="The DLP summary of the reply (detector names and counts)"
    )
    delivered_as: uuid.UUID | None = Field(
        default=None, description='The outbox message that carried it (setting "deliver")'
    )


class PortalItemOut(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    state: str
    reasons: list[str]
    created_at: datetime
    expires_at: datetime
    recalled_at: datetime | None
    first_opened_at: datetime | None
    locked: bool
    has_password: bool
    has_question: bool = False
    replies: int
    events: list[PortalEventOut] | None = None
    reply_list: list[PortalReplyOut] | None = None


class PortalSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notice_subject: SingleLineText = Field(
        default="",
        max_length=200,
        description='The notice\'s subject; empty for "You have a secure message from <name>". '
        "Never put health information here.",
    )
    expiry_days: int = Field(default=30, ge=1, le=365)
    logo_url: str = Field(
        default="",
        max_length=500,
        pattern=r"^(|/[^\s\x00-\x1f\x7f]*|data:image/(png|jpeg|gif|svg\+xml);base64,[A-Za-z0-9+/=]+)$",
        description="Same-origin path or data: URL (the pages' CSP allows no other images)",
    )
    brand_color: str = Field(default="#0b5394", pattern=r"^#[0-9a-fA-F]{6}$")
    reply_delivery: Literal["notice", "deliver"] = Field(
        default="notice",
        description='"notice": the sender is emailed that a reply waits in the console; '
        '"deliver": the reply itself is sent to the sender through the outbox, protected by '
        "the policy (S/MIME or OpenPGP with a key, else TLS required, else the portal)",
    )


class PortalSettingsOut(PortalSettingsIn):
    effective_notice_subject: str


class PortalQuestionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: SingleLineText = Field(min_length=1, max_length=300)
    answer: SingleLineText = Field(min_length=3, max_length=200, description="Stored hashed only")


class PortalIdentityIn(BaseModel):
    """The question the recipient answers at the portal instead of an emailed code, set
    with the message (``portal`` of ``POST /api/v1/messages``). The answer is hashed
    before anything is stored and never shown, logged or kept with the message."""

    model_config = ConfigDict(extra="forbid")

    question: SingleLineText = Field(min_length=1, max_length=300)
    answer: SecretStr = Field(
        min_length=3, max_length=200, description="Stored only as a keyed hash"
    )

    @field_validator("answer")
    @classmethod
    def _one_line(cls, value: SecretStr) -> SecretStr:
        answer = value.get_secret_value()
        check_single_line(answer)
        if len(" ".join(answer.casefold().split())) < 3:
            raise PydanticCustomError(
                "answer_too_short", "use an answer of 3 to 200 characters (spaces aside)"
            )
        return value
