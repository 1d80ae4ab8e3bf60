"""API shapes of portal items (no PHI: ids, states, times, counts, event codes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel


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
    replies: int
    events: list[PortalEventOut] | None = None
    reply_list: list[PortalReplyOut] | None = None
