"""Gateway clients: who may relay through the SMTP gateway, and as whom.

A client belongs to one tenant and is identified by SMTP AUTH (``username`` and an
argon2id hash of its secret, shown once), by a TLS client certificate (SHA-256
fingerprints) or by its source network (CIDR list). It may relay only for
``sender_domains``, each a verified sending domain of the tenant.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin
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
