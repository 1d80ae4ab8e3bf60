"""The stored policy document of each tenant (one row per tenant, revised in place;
the audit trail keeps who changed what and when)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.tenancy.models import TenantOwned


class StoredPolicy(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "policy_documents"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    # A PolicyDocument as JSON: detector names, domains, template ids; never PHI.
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by_type: Mapped[str] = mapped_column(String(20))
    updated_by_id: Mapped[str] = mapped_column(String(64))
