"""Wrapped per-tenant keys. Only ciphertext of keys is stored; the master key is elsewhere."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.tenancy.models import TenantOwned


class TenantKey(IdMixin, TimestampMixin, TenantOwned, Base):
    """A tenant's data key (``kind='data'``, versioned) or blind-index key (``kind='index'``)."""

    __tablename__ = "tenant_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "version"),)

    kind: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default="active")  # active | retired
    master_key_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
