"""API shapes for templates, layouts, versions, A/B variants and previews."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import MultiLineText, SingleLineText
from carepost.templates.models import Layout, Template, TemplateVariant, TemplateVersion
from carepost.templates.rendering import RenderedMessage
from carepost.templates.sandbox import MAX_SOURCE

Kind = Literal["transactional", "marketing"]
Source = MultiLineText
VariantKey = SingleLineText


def _changes(model: BaseModel) -> dict[str, Any]:
    """The fields the client sent (None clears a nullable one)."""
    return {name: getattr(model, name) for name in model.model_fields_set}


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=200)
    kind: Kind = "transactional"
    subject: SingleLineText = Field(min_length=1, max_length=2000)
    html: Source | None = Field(default=None, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)
    layout_id: uuid.UUID | None = None


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    kind: Kind | None = None
    subject: SingleLineText | None = Field(default=None, min_length=1, max_length=2000)
    html: Source | None = Field(default=None, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)
    layout_id: uuid.UUID | None = None
    ab_metric: Literal["opens", "clicks"] | None = None
    ab_window_hours: int | None = Field(default=None, ge=1, le=24 * 30)

    def changes(self) -> dict[str, Any]:
        found = _changes(self)
        # name, kind, subject and the A/B settings cannot be cleared.
        required = ("name", "kind", "subject", "ab_metric", "ab_window_hours")
        return {k: v for k, v in found.items() if v is not None or k not in required}


class TemplateOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    subject: str
    html: str | None
    text: str | None
    layout_id: uuid.UUID | None
    version: int
    ab_metric: str
    ab_window_hours: int
    ab_winner: str | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, row: Template) -> TemplateOut:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            subject=row.subject,
            html=row.html,
            text=row.text,
            layout_id=row.layout_id,
            version=row.version,
            ab_metric=row.ab_metric,
            ab_window_hours=row.ab_window_hours,
            ab_winner=row.ab_winner,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class VersionOut(BaseModel):
    version: int
    name: str
    kind: str
    subject: str
    html: str | None
    text: str | None
    layout_id: uuid.UUID | None
    actor_type: str
    actor_id: str
    created_at: datetime

    @classmethod
    def of(cls, row: TemplateVersion) -> VersionOut:
        return cls(
            version=row.version,
            name=row.name,
            kind=row.kind,
            subject=row.subject,
            html=row.html,
            text=row.text,
            layout_id=row.layout_id,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            created_at=row.created_at,
        )


class LayoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=200)
    html: Source = Field(min_length=1, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)


class LayoutUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    html: Source | None = Field(default=None, min_length=1, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in _changes(self).items() if v is not None or k == "text"}


class LayoutOut(BaseModel):
    id: uuid.UUID
    name: str
    html: str
    text: str | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, row: Layout) -> LayoutOut:
        return cls(
            id=row.id,
            name=row.name,
            html=row.html,
            text=row.text,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class VariantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: VariantKey = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    subject: SingleLineText | None = Field(default=None, max_length=2000)
    html: Source | None = Field(default=None, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)
    from_name: SingleLineText | None = Field(default=None, max_length=200)
    percent: int = Field(ge=0, le=100, description="Share of the test's messages, in percent")


class VariantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SingleLineText | None = Field(default=None, max_length=2000)
    html: Source | None = Field(default=None, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)
    from_name: SingleLineText | None = Field(default=None, max_length=200)
    percent: int | None = Field(default=None, ge=0, le=100)

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in _changes(self).items() if v is not None or k != "percent"}


class VariantOut(BaseModel):
    id: uuid.UUID
    key: str
    subject: str | None
    html: str | None
    text: str | None
    from_name: str | None
    percent: int

    @classmethod
    def of(cls, row: TemplateVariant) -> VariantOut:
        return cls(
            id=row.id,
            key=row.key,
            subject=row.subject,
            html=row.html,
            text=row.text,
            from_name=row.from_name,
            percent=row.percent,
        )


class PreviewIn(BaseModel):
    """Preview a saved template (``template_id`` in the path) or the draft given here."""

    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID | None = Field(
        default=None, description="A real contact; without it, a built-in sample contact"
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Per-message data")
    variant: VariantKey | None = Field(default=None, max_length=40)


class DraftPreviewIn(PreviewIn):
    kind: Kind = "transactional"
    subject: SingleLineText = Field(min_length=1, max_length=2000)
    html: Source | None = Field(default=None, max_length=MAX_SOURCE)
    text: Source | None = Field(default=None, max_length=MAX_SOURCE)
    layout_id: uuid.UUID | None = None


class PreviewOut(BaseModel):
    subject: str
    html: str | None
    text: str
    uses_phi: bool
    phi_shown: bool = Field(description="A real contact's PHI is in this preview (audited)")
    masked: bool = Field(description="The contact's PHI was replaced by [field] placeholders")
    variant: str | None
    from_name: str | None

    @classmethod
    def of(cls, message: RenderedMessage, *, phi_shown: bool, masked: bool) -> PreviewOut:
        return cls(
            subject=message.subject,
            html=message.html,
            text=message.text,
            uses_phi=message.uses_phi,
            phi_shown=phi_shown,
            masked=masked,
            variant=message.variant,
            from_name=message.from_name,
        )
