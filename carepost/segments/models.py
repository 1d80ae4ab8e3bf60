"""Saved segments, their snapshots, and the event index that campaign rules need.

A segment is a named rule (JSON, checked when saved and parsed again at each use:
segments are dynamic, nothing is cached), plus the members of its *included list*
when contacts were added to it by hand (a workflow's Add to Segment step). A
snapshot freezes a segment's members at one instant (``INSERT … SELECT`` of the
compiled rule), so a campaign sends to exactly the people the segment held when it
was sent ("snapshot on send"); the snapshot keeps a copy of the rule it was taken
with, and outlives its segment.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.contacts.activity_models import ContactEvent
from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.tenancy.models import TenantOwned


class Segment(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # Field keys, list ids, kinds and constants chosen by the organization: no PHI.
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by_type: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    # Contacts added to the segment by hand (the workflows' Add to Segment step): the
    # members of this static list belong to the segment besides those of its rule.
    # Made on the first addition; deleting the list drops the additions (SET NULL).
    include_list_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("lists.id", ondelete="SET NULL"), default=None
    )
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_by_type: Mapped[str | None] = mapped_column(String(20), default=None)
    updated_by_id: Mapped[str | None] = mapped_column(String(64), default=None)


class SegmentSnapshot(IdMixin, TimestampMixin, TenantOwned, Base):
    """A segment's members frozen at ``created_at``, for a send that happens later."""

    __tablename__ = "segment_snapshots"

    segment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("segments.id", ondelete="SET NULL"), index=True
    )
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(200))
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_type: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[str] = mapped_column(String(64), default="")


class SegmentSnapshotMember(Base):
    __tablename__ = "segment_snapshot_members"
    __table_args__ = (
        PrimaryKeyConstraint("snapshot_id", "contact_id"),
        # Deleting a contact removes it from snapshots through this index.
        Index("ix_segment_snapshot_members_contact", "contact_id"),
    )

    snapshot_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("segment_snapshots.id", ondelete="CASCADE")
    )
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))


# "Clicked campaign X": events of one campaign, found without reading every event of
# the kind. Partial: most events (logins, imports) belong to no campaign. Declared
# here, with the query that needs it, on the events table of carepost.contacts.
CAMPAIGN_EVENTS_INDEX = Index(
    "ix_contact_events_campaign",
    ContactEvent.tenant_id,
    ContactEvent.campaign_id,
    ContactEvent.kind_id,
    ContactEvent.contact_id,
    sqlite_where=text("campaign_id IS NOT NULL"),
    postgresql_where=text("campaign_id IS NOT NULL"),
)
