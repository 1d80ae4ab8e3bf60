"""Lists (static membership with join/leave history) and the contact event timeline.

Events are the biggest table carepost keeps (tens of millions of rows), so they
are compact: an integer id, an integer-coded kind (:class:`EventKind`, per
tenant), and properties in clear only when the kind is not PHI; the kind's
``phi`` flag sends them to the encrypted column instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON
from carepost.tenancy.models import TenantOwned

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class ContactList(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "lists"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ListMembership(Base):
    """One stint of a contact in a list; the current one has ``left_at`` null."""

    __tablename__ = "list_memberships"
    __table_args__ = (
        # At most one current membership per list and contact; also the index for
        # "members of list L" in segment queries.
        Index(
            "uq_list_memberships_current",
            "list_id",
            "contact_id",
            unique=True,
            sqlite_where=text("left_at IS NULL"),
            postgresql_where=text("left_at IS NULL"),
        ),
        Index("ix_list_memberships_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    list_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class EventKind(Base):
    """A kind of contact event (``email_opened``, ``portal_login``…), coded as an integer."""

    __tablename__ = "event_kinds"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    phi: Mapped[bool] = mapped_column(Boolean, default=True)


class ContactEvent(Base):
    __tablename__ = "contact_events"
    __table_args__ = (
        Index("ix_contact_events_kind_time", "tenant_id", "kind_id", "occurred_at", "contact_id"),
        Index("ix_contact_events_contact_time", "tenant_id", "contact_id", "occurred_at"),
        # A segment's "did this contact have such an event since …", probed per contact
        # by PostgreSQL's nested-loop semi-join: index-only with the kind in it
        # (without, each probe reads the heap to check the kind). Migration 0013.
        Index(
            "ix_contact_events_contact_kind_time",
            "tenant_id",
            "contact_id",
            "kind_id",
            "occurred_at",
        ),
        Index("ix_contact_events_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key to tenants: the contact's cascades (migration 0032).
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind_id: Mapped[int] = mapped_column(ForeignKey("event_kinds.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(40), default="api")
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    sealed_properties: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("contact_events.properties"), default=None
    )
