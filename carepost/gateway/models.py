"""Gateway clients: who may relay through the SMTP gateway, and as whom.

A client belongs to one tenant and is identified by SMTP AUTH (``username`` and an
argon2id hash of its secret, shown once), by a TLS client certificate (SHA-256
fingerprints) or by its source network (CIDR list). It may relay only for
``sender_domains``, each a verified sending domain of the tenant.

Inbound secure replies (docs/gateway.md): an organization's :class:`InboundRoute`
(its own mail server) and each :class:`InboundReply` received for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.tenancy.models import TenantOwned


class GatewayClient(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "gateway_clients"

    name: Mapped[str] = mapped_column(String(100))
    username: Mapped[str] = mapped_column(String(100), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    networks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cert_fingerprints: Mapped[list[Any]] = mapped_column(JSON, default=list)
    sender_domains: Mapped[list[Any]] = mapped_column(JSON, default=list)
    max_message_bytes: Mapped[int] = mapped_column(Integer)
    max_recipients: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_type: Mapped[str] = mapped_column(String(20), default="")
    created_by_id: Mapped[str] = mapped_column(String(64), default="")


class InboundRoute(IdMixin, TimestampMixin, TenantOwned, Base):
    """Where the organization's inbound secure replies go: its own mail server, reached
    over TLS only (``verify``: the certificate checked against ``host`` with the system
    CAs or ``ca_certificate``; ``encrypt``: TLS without checking the certificate)."""

    __tablename__ = "inbound_routes"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    tls_mode: Mapped[str] = mapped_column(String(10), default="verify")
    ca_certificate: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InboundReply(IdMixin, TenantOwned, Base):
    """One secure reply received for the organization, stored (encrypted, as it came)
    before the listener answers 250; decrypted again at each delivery attempt, never
    stored decrypted."""

    __tablename__ = "inbound_replies"
    __table_args__ = (Index("ix_inbound_replies_due", "state", "next_attempt_at"),)

    state: Mapped[str] = mapped_column(String(12))  # received, delivered, deferred, failed
    mail_from: Mapped[str] = mapped_column(EncryptedString("inbound_replies.mail_from"))
    recipients: Mapped[list[Any]] = mapped_column(EncryptedJSON("inbound_replies.recipients"))
    raw: Mapped[str] = mapped_column(EncryptedString("inbound_replies.raw"))  # base64
    size: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(10), default="")  # smime, openpgp, none
    decrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    signature: Mapped[str] = mapped_column(String(20), default="")
    signer_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(200), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
