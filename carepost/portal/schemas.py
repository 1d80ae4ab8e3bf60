"""API shapes of portal items (no PHI: ids, states, times, counts, event codes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import SingleLineText


class PortalEventOut(BaseModel):
    kind: str
    occurred_at: datetime
    detail: dict[str, Any]


class PortalReplyOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    length: int
    read_at: datetime | None


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


class PortalSettingsOut(PortalSettingsIn):
    effective_notice_subject: str


class PortalQuestionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: SingleLineText = Field(min_length=1, max_length=300)
    answer: SingleLineText = Field(min_length=3, max_length=200, description="Stored hashed only")
