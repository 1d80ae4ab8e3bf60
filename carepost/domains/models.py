"""Sending domains of a tenant and their DKIM keys.

A domain is checked (SPF, DKIM, DMARC in DNS) on demand; the last result is kept
with it so the console shows it without asking DNS again. Each DKIM key has a
selector of its own and a state:

- ``next``: generated and shown for publishing, not used to sign yet;
- ``active``: signs outgoing mail (one per algorithm);
- ``retired``: replaced; its record may be removed from DNS once mail signed
  with it has been delivered (days).

The private key is a secret: stored encrypted under the tenant's data key (label
``dkim_keys.private_key``), decrypted only to sign, never returned or logged.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedString
from carepost.tenancy.models import TenantOwned


class SendingDomain(IdMixin, TimestampMixin, TenantOwned, Base):
    """A domain a tenant sends mail from (the From address's domain)."""

    __tablename__ = "sending_domains"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    # Lower-case, IDNA (punycode) form: what DNS and DKIM d= use.
    name: Mapped[str] = mapped_column(String(253))
    # pending (never passed a check), verified (the last check passed), failing.
    state: Mapped[str] = mapped_column(String(20), default="pending")
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The last check's findings (record names, what was found, what to fix): public DNS data.
    last_check: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_by_type: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[str] = mapped_column(String(64), default="")


class DkimKey(IdMixin, TimestampMixin, TenantOwned, Base):
    """One DKIM key pair of a domain."""

    __tablename__ = "dkim_keys"
    __table_args__ = (
        UniqueConstraint("domain_id", "selector"),
        Index("ix_dkim_keys_domain_state", "domain_id", "state"),
    )

    domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE")
    )
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(20))
    # The p= value of the DNS record (base64): public.
    public_key: Mapped[str] = mapped_column(Text)
    # PKCS#8 PEM, encrypted; NULL once retired (the private half is destroyed).
    private_key: Mapped[str | None] = mapped_column(EncryptedString("dkim_keys.private_key"))
    state: Mapped[str] = mapped_column(String(10))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
