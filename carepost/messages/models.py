"""Outbox tables: messages (the queue itself), their event history and campaigns.

A message is one recipient's copy, stored rendered: its address, subject, body,
per-message data and attachments are PHI and sealed with the tenant's data key
(AES-256-GCM, :mod:`carepost.crypto.fields`); ``to_index`` is the keyed blind
index of the address under the contact email label, so "messages to this
address", "is this address suppressed" and "which contact is it" are joins on
index columns, never decryptions. Tags are clear, constrained labels (searchable).

``messages`` is the queue: a worker claims due rows (``state`` queued or deferred,
``next_attempt_at`` passed) in priority order, leases them (``lease_until``) and
records the outcome. The partial index ``ix_messages_due`` serves exactly the
claim query, ``ix_messages_leases`` the recovery of a crashed worker's claims.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.contacts.activity_models import BigId
from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.tenancy.models import TenantOwned, TenantOwnedComposite


class MessageState:
    """The life of a message.

    queued -> sending -> delivered | deferred (-> sending again) | bounced | failed;
    suppressed at acceptance (consent or suppression list); held while its campaign
    is paused (back to queued on resume); cancelled with its campaign.
    """

    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    HELD = "held"
    CANCELLED = "cancelled"

    ALL = (QUEUED, SENDING, DEFERRED, DELIVERED, BOUNCED, FAILED, SUPPRESSED, HELD, CANCELLED)
    DUE = (QUEUED, DEFERRED)
    FINAL = (DELIVERED, BOUNCED, FAILED, SUPPRESSED, CANCELLED)


# Lower sorts first: transactional mail never waits behind a campaign.
PRIORITIES: dict[str, int] = {"high": 0, "normal": 1, "bulk": 2}
PRIORITY_NAMES: dict[int, str] = {value: name for name, value in PRIORITIES.items()}
_DUE_STATES = "state IN ('queued', 'deferred')"
# A key of a stored body: its text part was made from its HTML (the same words).
TEXT_FROM_HTML = "text_from_html"


class Message(IdMixin, TimestampMixin, TenantOwnedComposite, Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index(
            "ix_messages_due",
            "priority",
            "next_attempt_at",
            postgresql_where=text(_DUE_STATES),
            sqlite_where=text(_DUE_STATES),
        ),
        Index(
            "ix_messages_leases",
            "lease_until",
            postgresql_where=text("state = 'sending'"),
            sqlite_where=text("state = 'sending'"),
        ),
        Index("ix_messages_tenant_id_id", "tenant_id", "id"),
        Index("ix_messages_recipient", "tenant_id", "to_index", "id"),
        Index("ix_messages_tenant_state", "tenant_id", "state", "id"),
        Index("ix_messages_campaign", "campaign_id", "state"),
        Index("ix_messages_contact", "contact_id"),
    )

    contact_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), default=None
    )
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), default=None
    )
    to_address: Mapped[str] = mapped_column(EncryptedString("messages.to_address"))
    to_index: Mapped[str] = mapped_column(String(40))
    to_name: Mapped[str | None] = mapped_column(EncryptedString("messages.to_name"), default=None)
    from_address: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200), default=None)
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    subject: Mapped[str] = mapped_column(EncryptedString("messages.subject"))
    # {"html": str | None, "text": str}: rendered once, at acceptance.
    body: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("messages.body"))
    data: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("messages.data"), default=None
    )
    # [{"filename", "content_type", "content" (base64)}]
    attachments: Mapped[list[dict[str, str]] | None] = mapped_column(
        EncryptedJSON("messages.attachments"), default=None
    )
    meta: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", EncryptedJSON("messages.metadata"), default=None
    )
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    variant: Mapped[str | None] = mapped_column(String(40), default=None)
    uses_phi: Mapped[bool] = mapped_column(Boolean, default=False)
    purpose: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(SmallInteger, default=PRIORITIES["normal"])
    state: Mapped[str] = mapped_column(String(12), default=MessageState.QUEUED)
    # Why it is in its state, as a stable code or the server's status (never content).
    state_reason: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    first_queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When the receiving server accepted it (feedback tells scanners' instant opens by it).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by_type: Mapped[str] = mapped_column(String(20), default="")
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    # The protection decision of the last preparation (carepost/protection, migration
    # 0021): method, TLS requirement and reason codes (detector names, never content).
    protection_method: Mapped[str | None] = mapped_column(String(20), default=None)
    protection_tls: Mapped[str | None] = mapped_column(String(16), default=None)
    protection_reasons: Mapped[list[str] | None] = mapped_column(JSON, default=None)


# The table itself, for Core statements and bulk writes (the outbox COPY, outcome UPDATEs).
MESSAGES_TABLE: Table = Message.__table__  # type: ignore[assignment]


class MessageEvent(Base):
    """One thing that happened to a message; ``detail`` holds codes and ids, never PHI."""

    __tablename__ = "message_events"
    __table_args__ = (Index("ix_message_events_message", "message_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key to tenants: the message's cascades (migration 0032).
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CampaignState:
    """draft -> scheduled -> sending -> done; scheduled or sending may be paused
    (and resumed) or cancelled."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class Campaign(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_state", "state", "scheduled_at"),)

    name: Mapped[str] = mapped_column(String(200))
    list_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("lists.id", ondelete="SET NULL"), default=None
    )
    segment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("segments.id", ondelete="SET NULL"), default=None
    )
    # The frozen audience (a segment snapshot, also made for a list) taken at send.
    snapshot_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("segment_snapshots.id", ondelete="SET NULL"), default=None
    )
    # A stored template (carepost/templates), or else the raw content below.
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    subject: Mapped[str | None] = mapped_column(EncryptedString("campaigns.subject"), default=None)
    html: Mapped[str | None] = mapped_column(EncryptedString("campaigns.html"), default=None)
    text_body: Mapped[str | None] = mapped_column(
        "text", EncryptedString("campaigns.text"), default=None
    )
    from_name: Mapped[str | None] = mapped_column(String(200), default=None)
    from_address: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    purpose: Mapped[str] = mapped_column(String(20), default="marketing")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    throttle_per_hour: Mapped[int | None] = mapped_column(Integer, default=None)
    state: Mapped[str] = mapped_column(String(12), default=CampaignState.DRAFT)
    # Enqueueing resumes after this contact id of the snapshot (keyset, so a crash
    # mid-enqueue neither skips nor repeats anyone).
    enqueued_through: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    # When the next message may go, for the hourly throttle (paced per message).
    pace_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    audience: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failure: Mapped[str] = mapped_column(Text, default="")
    # A/B test of the template's variants (migration 0014): the metric (None = no
    # test), the window, the phase (testing -> waiting -> decided), the winner and
    # the figures it was chosen on (per variant: delivered, opens, clicks).
    ab_metric: Mapped[str | None] = mapped_column(String(10), default=None)
    ab_window_hours: Mapped[int | None] = mapped_column(Integer, default=None)
    ab_phase: Mapped[str | None] = mapped_column(String(10), default=None)
    ab_test_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ab_winner: Mapped[str | None] = mapped_column(String(40), default=None)
    ab_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ab_results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    created_by_type: Mapped[str] = mapped_column(String(20), default="")
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
