"""Portal tables: the items waiting for pickup, their one-time codes, replies, access
events and each organization's portal settings (branding, expiry, notice subject).

An item's content (subject, bodies, attachments) and its recipient's address are
sealed with the tenant's data key; ``token_hash`` is the SHA-256 of the link's
random token (the token itself is only in the notice email), so the database never
holds a working link. Codes and passwords are stored hashed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from carepost.contacts.activity_models import BigId
from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.tenancy.models import TenantOwned


class ItemState:
    ACTIVE = "active"
    RECALLED = "recalled"
    EXPIRED = "expired"


class EventKind:
    DEPOSITED = "deposited"
    OPENED = "opened"
    CODE_SENT = "code_sent"
    CODE_FAILED = "code_failed"
    PASSWORD_FAILED = "password_failed"
    VERIFIED = "verified"
    LOCKED = "locked"
    DOWNLOADED = "downloaded"
    REPLIED = "replied"
    PASSWORD_SET = "password_set"
    QUESTION_SET = "question_set"
    ANSWER_FAILED = "answer_failed"
    THROTTLED = "client_throttled"
    RECALLED = "recalled"
    EXPIRED = "expired"


class PortalItem(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "portal_items"
    __table_args__ = (
        UniqueConstraint("tenant_id", "message_id"),
        UniqueConstraint("token_hash"),
        Index("ix_portal_items_expiry", "state", "expires_at"),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    notice_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)
    to_index: Mapped[str] = mapped_column(String(40))
    to_address: Mapped[str] = mapped_column(EncryptedString("portal_items.to_address"))
    # The sender, notified (without PHI) when a reply waits.
    from_address: Mapped[str] = mapped_column(String(320))
    # {"subject", "html", "text", "attachments": [{"filename", "content_type", "content"}]};
    # None once recalled or expired (purged).
    content: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("portal_items.content"), default=None
    )
    # Attachment names and sizes without content, for the sender's view (names may be PHI:
    # sealed too).
    attachment_meta: Mapped[list[dict[str, Any]] | None] = mapped_column(
        EncryptedJSON("portal_items.attachment_meta"), default=None
    )
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12), default=ItemState.ACTIVE)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    first_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    # A question the sender set, as an alternative to the emailed code: the question
    # sealed, the answer only as a keyed hash (tenant index key) of its normal form.
    question: Mapped[str | None] = mapped_column(
        EncryptedString("portal_items.question"), default=None
    )
    answer_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # Raised to end every recipient session of the item (new password, recall).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)


class PortalChallenge(IdMixin, TimestampMixin, TenantOwned, Base):
    """One one-time code: its keyed hash, its expiry, when it was used."""

    __tablename__ = "portal_challenges"
    __table_args__ = (Index("ix_portal_challenges_item", "item_id", "created_at"),)

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("portal_items.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PortalReply(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "portal_replies"
    __table_args__ = (Index("ix_portal_replies_item", "item_id", "created_at"),)

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("portal_items.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(EncryptedString("portal_replies.body"))
    length: Mapped[int] = mapped_column(Integer, default=0)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The recipient's files: [{"filename", "content_type", "content" (base64)}], sealed
    # like the message content; their names, types and sizes apart (names may be PHI:
    # sealed too) so that listing them never decrypts the files.
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(
        EncryptedJSON("portal_replies.attachments"), default=None
    )
    attachment_meta: Mapped[list[dict[str, Any]] | None] = mapped_column(
        EncryptedJSON("portal_replies.attachment_meta"), default=None
    )
    # The DLP summary of the text and files (detector names and counts, no PHI).
    dlp: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The outbox message that carried the reply to the sender ("deliver" setting).
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), default=None)


class PortalEvent(Base):
    """Something that happened to an item; ``detail`` holds codes and counts, never PHI."""

    __tablename__ = "portal_events"
    __table_args__ = (
        Index("ix_portal_events_item", "item_id", "id"),
        Index("ix_portal_events_client", "tenant_id", "client_hash", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("portal_items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A keyed hash (tenant index key) of the recipient's client address, for the
    # per-address throttle across items; never the address itself.
    client_hash: Mapped[str | None] = mapped_column(String(64), default=None)


class PortalSettings(Base):
    """One row per organization that changed a default (none: the defaults apply)."""

    __tablename__ = "portal_settings"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    notice_subject: Mapped[str] = mapped_column(String(200), default="")
    expiry_days: Mapped[int] = mapped_column(Integer, default=30)
    logo_url: Mapped[str] = mapped_column(String(500), default="")
    brand_color: Mapped[str] = mapped_column(String(7), default="#0b5394")
    # "notice": the sender is told by email and reads the reply in the console;
    # "deliver": the reply itself goes to the sender through the outbox, protected by
    # the policy engine (the message counts as PHI whatever DLP finds).
    reply_delivery: Mapped[str] = mapped_column(String(12), default="notice")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PortalPreset(IdMixin, TimestampMixin, TenantOwned, Base):
    """The identity question a sender set when sending (``portal`` of the send request),
    waiting for the message to be handed to the portal: the question sealed, the answer
    only as a keyed hash (tenant index key, bound to the message id) of its normal form.
    Deleted with the message; copied to the item at hand-off."""

    __tablename__ = "portal_presets"
    __table_args__ = (UniqueConstraint("tenant_id", "message_id"),)

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(EncryptedString("portal_presets.question"))
    answer_hash: Mapped[str] = mapped_column(String(64))
