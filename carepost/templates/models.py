"""Email templates, their layouts, their saved versions and their A/B variants.

A template's content is written by the organization's staff and holds placeholders
(``{{ contact.first_name }}``), never a patient's values, so it is stored in clear;
values are filled in at render time and the rendered message is what the outbox
encrypts. Every save of a template keeps the previous content as a
:class:`TemplateVersion` (who, when, what), so a change can be reviewed and undone.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.tenancy.models import TenantOwned

KINDS = ("transactional", "marketing")


class Layout(IdMixin, TimestampMixin, TenantOwned, Base):
    """A reusable frame (header, footer) around a template's body: ``{{ content }}``."""

    __tablename__ = "template_layouts"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Template(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    layout_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("template_layouts.id", ondelete="RESTRICT"), index=True, default=None
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    # A/B test: the metric that picks the winner, the window after the first send,
    # and the winner once chosen (a variant key).
    ab_metric: Mapped[str] = mapped_column(String(10), default="opens")
    ab_window_hours: Mapped[int] = mapped_column(Integer, default=24)
    ab_winner: Mapped[str | None] = mapped_column(String(40), default=None)
    ab_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_by_type: Mapped[str] = mapped_column(String(20), default="system")
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_by_type: Mapped[str | None] = mapped_column(String(20), default=None)
    updated_by_id: Mapped[str | None] = mapped_column(String(64), default=None)


class TemplateVersion(IdMixin, TimestampMixin, TenantOwned, Base):
    """A template's content as it was saved at ``version`` (the current one included)."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    layout_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(64), default="")


class TemplateVariant(IdMixin, TimestampMixin, TenantOwned, Base):
    """One arm of an A/B test: what it changes (subject, content, sender name) and
    its share of the test, in percent."""

    __tablename__ = "template_variants"
    # The unique index leads with template_id: it serves "the variants of a template".
    __table_args__ = (UniqueConstraint("template_id", "key"),)

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    from_name: Mapped[str | None] = mapped_column(String(200), default=None)
    percent: Mapped[int] = mapped_column(Integer, default=50)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
