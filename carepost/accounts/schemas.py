"""API shapes for users, API keys and the signed-in principal."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from carepost.accounts.models import ApiKey, User
from carepost.accounts.permissions import PERMISSIONS
from carepost.core.text import SingleLineText
from carepost.core.types import IsoDateTime

RoleName = Literal["owner", "admin", "marketer", "analyst", "auditor"]
SCOPE_NAMES: list[JsonValue] = list(sorted(PERMISSIONS))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    role: RoleName
    status: Literal["active", "disabled"]
    mfa_enabled: bool = Field(description="Signs in with a second factor (app or passkey)")
    locked_until: datetime | None
    last_sign_in_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, user: User, *, has_passkey: bool = False) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            role=user.role,
            status=user.status,
            mfa_enabled=user.totp_enabled or has_passkey,
            locked_until=user.locked_until,
            last_sign_in_at=user.last_sign_in_at,
            created_at=user.created_at,
        )


class UserCreate(Strict):
    email: SingleLineText = Field(
        min_length=3, max_length=320, json_schema_extra={"format": "email"}
    )
    role: RoleName
    name: SingleLineText = Field(default="", max_length=200)


class UserCreated(BaseModel):
    user: UserOut
    one_time_password: str = Field(
        description="Shown once. The user must change it at first sign-in."
    )


class UserUpdate(Strict):
    role: RoleName | None = None
    name: SingleLineText | None = Field(default=None, max_length=200)
    status: Literal["active", "disabled"] | None = None


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreate(Strict):
    name: SingleLineText = Field(min_length=1, max_length=200)
    # Checked by the service (naming the unknown scope); the enum documents the choices.
    scopes: list[SingleLineText] = Field(
        min_length=1,
        max_length=50,
        json_schema_extra={"items": {"type": "string", "enum": SCOPE_NAMES}},
    )
    # A time zone is required: a naive time is ambiguous (and cannot be compared).
    expires_at: IsoDateTime | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _timestamp_text(cls, value: Any) -> Any:
        # Pydantic would read a number as a Unix time; the API takes RFC 3339 text.
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("use an RFC 3339 time with a time zone, e.g. 2030-01-31T12:00:00Z")
        return value


class ApiKeyCreated(BaseModel):
    api_key: ApiKeyOut
    secret: str = Field(description="The full key. Shown once; store it now.")


class Me(BaseModel):
    tenant_id: uuid.UUID
    organization: str
    actor_type: str
    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    role: str | None
    permissions: list[str]


class SignedOut(BaseModel):
    sessions_revoked: int
