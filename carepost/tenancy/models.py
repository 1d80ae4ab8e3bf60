"""Organizations (tenants): the unit of isolation for every row in carepost."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime


class Tenant(IdMixin, TimestampMixin, Base):
    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")
    # Session policy, configurable per organization.
    session_idle_minutes: Mapped[int] = mapped_column(Integer, default=30)
    session_max_hours: Mapped[int] = mapped_column(Integer, default=12)
    # CAN-SPAM needs a postal address in marketing mail; shown in the console settings.
    physical_address: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class TenantOwned:
    """Mixin for every tenant-scoped table: the service layer filters on this column."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )


class TenantOwnedComposite(TenantOwned):
    """:class:`TenantOwned` for a table whose own indexes lead with ``tenant_id``: a
    tenant's rows (and the cascade from ``tenants``) are found through those, so the
    column gets no index of its own, one B-tree fewer to update for every row written
    (contacts, their identifiers, consent records, messages: the bulk write paths)."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
