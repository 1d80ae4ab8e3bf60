"""Contacts (patients, members): identity and demographic PHI, stored encrypted.

Email and phone are PHI identifiers: the value is encrypted and a keyed blind
index (HMAC with the tenant's index key) supports exact lookups and uniqueness.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedString
from carepost.tenancy.models import TenantOwned


class Contact(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email_index"),
        UniqueConstraint("tenant_id", "external_id_index"),
        Index("ix_contacts_tenant_phone", "tenant_id", "phone_index"),
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
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
