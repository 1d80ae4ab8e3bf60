"""API shapes for an organization's settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import MultiLineText, SingleLineText
from carepost.tenancy.models import Tenant


class TenantOut(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    session_idle_minutes: int
    session_max_hours: int
    physical_address: str
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            slug=tenant.slug,
            name=tenant.name,
            session_idle_minutes=tenant.session_idle_minutes,
            session_max_hours=tenant.session_max_hours,
            physical_address=tenant.physical_address,
            created_at=tenant.created_at,
        )


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    # Strict: JSON true or "5" is not a number of minutes.
    session_idle_minutes: int | None = Field(default=None, ge=1, le=1440, strict=True)
    session_max_hours: int | None = Field(default=None, ge=1, le=720, strict=True)
    physical_address: MultiLineText | None = Field(default=None, max_length=500)
