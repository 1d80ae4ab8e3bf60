"""Consent records, the current consent per contact, tenant topics and the suppression list.

``consent_records`` is append-only: every grant, revocation or pending request is
a new row, so the history is never lost. ``consent_current`` holds the latest
record (by capture time) per contact, channel and purpose, maintained in the same
transaction as each append; segmentation and send paths read it set-based through
its ``(tenant_id, channel, purpose, status, contact_id)`` index.

Suppressed addresses are PHI: the value is encrypted and a keyed blind index
(the same labels as the contact's email and phone indexes) finds it, so "is this
contact suppressed" is a join on the index columns, never a decryption.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedString
from carepost.tenancy.models import TenantOwned, TenantOwnedComposite


class ConsentRecord(IdMixin, TimestampMixin, TenantOwnedComposite, Base):
    """One consent event as it was captured; never changed once written."""

    __tablename__ = "consent_records"
    __table_args__ = (
        Index(
            "ix_consent_records_contact",
            "tenant_id",
            "contact_id",
            "channel",
            "purpose",
            "captured_at",
        ),
    )

    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))
    purpose: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(20))
    # Free text or a reference (a scanned form's id); may name a condition, so encrypted.
    evidence: Mapped[str | None] = mapped_column(EncryptedString("consent_records.evidence"))
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    recorded_by_type: Mapped[str] = mapped_column(String(20))
    recorded_by_id: Mapped[str] = mapped_column(String(64), default="")


class ConsentCurrent(Base):
    """The latest consent record per contact, channel and purpose (a maintained view)."""

    __tablename__ = "consent_current"
    __table_args__ = (
        Index(
            "ix_consent_current_segment",
            "tenant_id",
            "channel",
            "purpose",
            "status",
            "contact_id",
        ),
    )

    contact_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10))
    record_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consent_records.id", ondelete="CASCADE")
    )
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Topic(IdMixin, TimestampMixin, TenantOwned, Base):
    """A tenant-defined subject a recipient can opt in to (a purpose of its own)."""

    __tablename__ = "consent_topics"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)


class Suppression(IdMixin, TimestampMixin, TenantOwnedComposite, Base):
    """An address nothing (or no marketing) may be sent to; one entry per address."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("tenant_id", "address_index"),)

    channel: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(EncryptedString("suppressions.address"))
    address_index: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    created_by_type: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    created_by_label: Mapped[str] = mapped_column(String(320), default="")
