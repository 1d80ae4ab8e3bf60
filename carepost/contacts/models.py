"""Contacts (patients, members) and their data: identity, custom fields, tokens, stages.

Email and phone are PHI identifiers: the value is encrypted and a keyed blind
index (HMAC with the tenant's index key) supports exact lookups and uniqueness.
Custom field values live in one encrypted JSON blob per contact (``custom``);
what segments query is the token table (:class:`ContactToken`), kept in step with
every write (docs/contacts-data.md). Lists and events are in
:mod:`carepost.contacts.activity_models`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.tenancy.models import TenantOwned, TenantOwnedComposite

BUILT_IN_STAGES = ("new", "active", "overdue", "at-risk")


class Contact(IdMixin, TimestampMixin, TenantOwnedComposite, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email_index"),
        UniqueConstraint("tenant_id", "external_id_index"),
        Index("ix_contacts_tenant_phone", "tenant_id", "phone_index"),
        Index("ix_contacts_tenant_stage", "tenant_id", "journey_stage"),
        # "This id is one of the tenant's", index-only: the last check of every segment
        # count when the planner joins the condition's contact ids to contacts
        # (the primary key alone reads the wide, encrypted heap row). Migration 0013.
        Index("ix_contacts_tenant_id_id", "tenant_id", "id"),
    )

    email: Mapped[str | None] = mapped_column(EncryptedString("contacts.email"))
    email_index: Mapped[str | None] = mapped_column(String(40), default=None)
    phone: Mapped[str | None] = mapped_column(EncryptedString("contacts.phone"))
    phone_index: Mapped[str | None] = mapped_column(String(40), default=None)
    external_id: Mapped[str | None] = mapped_column(EncryptedString("contacts.external_id"))
    external_id_index: Mapped[str | None] = mapped_column(String(40), default=None)
    first_name: Mapped[str | None] = mapped_column(EncryptedString("contacts.first_name"))
    last_name: Mapped[str | None] = mapped_column(EncryptedString("contacts.last_name"))
    birth_date: Mapped[str | None] = mapped_column(EncryptedString("contacts.birth_date"))
    # Every custom field value, keyed by field key (PHI or not: one sealed blob).
    custom: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("contacts.custom"), default=None
    )
    # Not PHI on their own, and needed in clear: segment rules, template language,
    # quiet hours in the recipient's time zone.
    journey_stage: Mapped[str] = mapped_column(
        String(40), default="new", server_default=text("'new'")
    )
    language: Mapped[str | None] = mapped_column(String(35), default=None)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ContactIdentifier(IdMixin, TenantOwned, Base):
    """An identity of a contact in another system (MRN, CRM id), unique per tenant and kind."""

    __tablename__ = "contact_identifiers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "value_index"),
        UniqueConstraint("contact_id", "kind"),
    )

    # No foreign key to tenants: the contact's cascades (migration 0008). No index of
    # its own: the unique key above leads with it (migration 0031).
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    value: Mapped[str] = mapped_column(EncryptedString("contact_identifiers.value"))
    value_index: Mapped[str] = mapped_column(String(40))


class CustomField(IdMixin, TimestampMixin, TenantOwned, Base):
    """One tenant-defined contact field: its type, PHI and sealed flags, granularity."""

    __tablename__ = "contact_fields"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    phi: Mapped[bool] = mapped_column(Boolean, default=True)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    granularity: Mapped[str | None] = mapped_column(String(10), default=None)
    past_only: Mapped[bool] = mapped_column(Boolean, default=False)
    choices: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ContactToken(Base):
    """One segmentation token of one contact's field (see carepost.contacts.tokens).

    The primary key is the segment-query index: "contacts whose ``conditions``
    holds token T" is a range scan on (tenant, field, token) yielding contact ids.
    """

    __tablename__ = "contact_tokens"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "field_key", "token", "contact_id"),
        Index("ix_contact_tokens_contact", "contact_id", "field_key"),
    )

    # No foreign keys: a CSV import writes about ten of these rows per contact, and
    # each key costs a check per row (tenants: migration 0008; contacts: 0017). Every
    # path that deletes a contact deletes its tokens (service.delete_contact, merge);
    # tests/contacts/test_token_orphans.py checks that none outlives its contact.
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    contact_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    field_key: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(String(40))


class JourneyStage(IdMixin, TimestampMixin, TenantOwned, Base):
    """A tenant's own journey stage, beyond the built-in ones (BUILT_IN_STAGES)."""

    __tablename__ = "journey_stages"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))


class ContactStageHistory(IdMixin, TenantOwned, Base):
    """Each change of a contact's journey stage, oldest first by ``changed_at``."""

    __tablename__ = "contact_stage_history"
    __table_args__ = (Index("ix_contact_stage_history_contact", "contact_id", "changed_at"),)

    # No foreign key to tenants: the contact's cascades (migration 0008).
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid(), index=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    stage: Mapped[str] = mapped_column(String(40))
    previous_stage: Mapped[str | None] = mapped_column(String(40), default=None)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContactMerge(TenantOwned, Base):
    """The tombstone of a contact merged into another (carepost.contacts.merge).

    The merged contact is gone; this row lets a client holding its id learn where
    its data went. It follows the survivor: merging the survivor in turn re-points
    it, and deleting the survivor deletes it (the trail ends with the person's data).
    """

    __tablename__ = "contact_merges"
    __table_args__ = (Index("ix_contact_merges_survivor", "survivor_id"),)

    merged_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    survivor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(64), default="")
