"""The tenant's DLP rules: keyword dictionaries (terms stored encrypted: a list of
names or conditions may itself be PHI) and MRN patterns (a regular expression, not
PHI)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON
from carepost.tenancy.models import TenantOwned


class DlpRule(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "dlp_rules"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(60))
    # "dictionary" (terms) or "mrn_pattern" (pattern)
    kind: Mapped[str] = mapped_column(String(20))
    terms: Mapped[list[str] | None] = mapped_column(EncryptedJSON("dlp_rules.terms"), default=None)
    pattern: Mapped[str | None] = mapped_column(String(200), default=None)
    severity: Mapped[str] = mapped_column(String(10), default="medium")
    phi: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
