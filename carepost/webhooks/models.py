"""Webhook endpoints, the deliveries queued for them and the log of each attempt.

``webhook_deliveries`` is a transactional outbox: :func:`carepost.webhooks.service.emit`
writes the rows in the caller's transaction (a message event and its webhooks commit
or roll back together) and the worker job sends them later. Payloads may carry PHI
(only for endpoints that allow it) and are stored encrypted; secrets too.
``webhook_attempts`` is the delivery log: status code, duration, error -- never the
receiver's response body.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.tenancy.models import TenantOwned


class WebhookEndpoint(IdMixin, TimestampMixin, TenantOwned, Base):
    """A URL of the tenant's that receives the events it subscribes to."""

    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(EncryptedString("webhook_endpoints.secret"))
    # The secret before the last rotation, still signed with until it expires, so a
    # receiver can switch without losing deliveries.
    previous_secret: Mapped[str | None] = mapped_column(
        EncryptedString("webhook_endpoints.previous_secret"), default=None
    )
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    include_phi: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebhookDelivery(IdMixin, TimestampMixin, TenantOwned, Base):
    """One event to send to one endpoint, with its state in the retry schedule."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("webhook_deliveries.payload"))
    # pending -> sending -> delivered | pending (retry) | failed
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    replay_of: Mapped[uuid.UUID | None] = mapped_column(default=None)


class WebhookAttempt(IdMixin, TenantOwned, Base):
    """One HTTP attempt of a delivery (the delivery log)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),)

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(200), default=None)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
