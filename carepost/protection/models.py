"""What carepost knows of a recipient domain's TLS: its MTA-STS policy (RFC 8461),
whether its MX hosts publish usable DANE TLSA records (RFC 7672), and whether a past
delivery saw STARTTLS. Shared by every tenant: domain names and facts, no tenant data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, UTCDateTime


class DomainTlsRecord(Base):
    __tablename__ = "domain_tls"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    # The id of the ``_mta-sts`` TXT record the cached policy was fetched for.
    mta_sts_id: Mapped[str] = mapped_column(String(64), default="")
    mta_sts_mode: Mapped[str] = mapped_column(String(10), default="none")
    mta_sts_mx: Mapped[list[str]] = mapped_column(JSON, default=list)
    mta_sts_max_age: Mapped[int] = mapped_column(Integer, default=0)
    # The cached policy holds until then (fetched + max_age), even if DNS fails.
    mta_sts_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    dane_usable: Mapped[bool] = mapped_column(Boolean, default=False)
    starttls_seen: Mapped[bool] = mapped_column(Boolean, default=False)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When DNS is asked again (the TXT id, TLSA): the policy's own lifetime is max_age.
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
