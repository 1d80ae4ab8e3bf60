"""The sender's view of portal items: list, one item with its events and replies'
metadata (files: size and type; their names with phi:read), reading a reply and
downloading its files (PHI: audited), recall."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from carepost.audit import service as audit
from carepost.core.errors import Conflict, NotFound
from carepost.portal import service
from carepost.portal.models import PortalEvent, PortalItem, PortalReply
from carepost.portal.schemas import (
    PortalEventOut,
    PortalItemOut,
    PortalReplyOut,
    ReplyAttachmentOut,
)

_SEALED = ("to_address", "content", "attachment_meta")


def list_items(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[PortalItem]:
    query = (
        select(PortalItem)
        .where(PortalItem.tenant_id == tenant_id)
        .options(*(defer(getattr(PortalItem, name)) for name in _SEALED))
    )
    if after is not None:
        query = query.where(PortalItem.id < after)
    return list(session.scalars(query.order_by(PortalItem.id.desc()).limit(limit)))


def get_item(session: Session, tenant_id: uuid.UUID, item_id: uuid.UUID) -> PortalItem:
    item = session.scalar(
        select(PortalItem)
        .where(PortalItem.id == item_id, PortalItem.tenant_id == tenant_id)
        .options(defer(PortalItem.content))
    )
    if item is None:
        raise NotFound("no such portal message")
    return item


def reply_counts(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(PortalReply.item_id, func.count())
        .where(PortalReply.item_id.in_(list(ids)))
        .group_by(PortalReply.item_id)
    ).all()
    return {item_id: count for item_id, count in rows}


def reply_out(reply: PortalReply, *, names: bool) -> PortalReplyOut:
    """A reply's metadata; its files' names (PHI) only for ``names`` (phi:read)."""
    return PortalReplyOut(
        id=reply.id,
        created_at=reply.created_at,
        length=reply.length,
        read_at=reply.read_at,
        attachments=[
            ReplyAttachmentOut(
                index=index,
                name=f["filename"] if names else None,
                size=int(f["size"]),
                content_type=f["content_type"],
            )
            for index, f in enumerate(reply.attachment_meta or [])
        ],
        dlp=reply.dlp,
        delivered_as=reply.delivery_id,
    )


def item_out(
    session: Session,
    item: PortalItem,
    *,
    detail: bool,
    replies: int | None = None,
    names: bool = False,
) -> PortalItemOut:
    events = None
    reply_list = None
    if detail:
        events = [
            PortalEventOut(kind=e.kind, occurred_at=e.occurred_at, detail=e.detail)
            for e in session.scalars(
                select(PortalEvent).where(PortalEvent.item_id == item.id).order_by(PortalEvent.id)
            )
        ]
        reply_list = [
            reply_out(r, names=names)
            for r in session.scalars(
                select(PortalReply)
                .where(PortalReply.item_id == item.id)
                .options(defer(PortalReply.body), defer(PortalReply.attachments))
                .order_by(PortalReply.created_at, PortalReply.id)
            )
        ]
        replies = len(reply_list)
    return PortalItemOut(
        id=item.id,
        message_id=item.message_id,
        state=item.state,
        reasons=list(item.reasons),
        created_at=item.created_at,
        expires_at=item.expires_at,
        recalled_at=item.recalled_at,
        first_opened_at=item.first_opened_at,
        locked=item.locked_until is not None,
        has_password=bool(item.password_hash),
        has_question=bool(item.answer_hash),
        replies=replies or 0,
        events=events,
        reply_list=reply_list,
    )


def read_reply(
    session: Session,
    tenant_id: uuid.UUID,
    item_id: uuid.UUID,
    reply_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: datetime,
) -> PortalReply:
    """A reply's text (PHI): marks it read and audits the view."""
    reply = session.scalar(
        select(PortalReply).where(
            PortalReply.id == reply_id,
            PortalReply.item_id == item_id,
            PortalReply.tenant_id == tenant_id,
        )
    )
    if reply is None:
        raise NotFound("no such reply")
    if reply.read_at is None:
        reply.read_at = now
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="portal.reply_view_phi",
        object_type="portal_item",
        object_id=str(item_id),
        details={"reply_id": str(reply_id)},
    )
    return reply


def recall_item(
    session: Session, tenant_id: uuid.UUID, item_id: uuid.UUID, *, actor: audit.Actor, now: datetime
) -> PortalItem:
    item = session.scalar(
        select(PortalItem).where(PortalItem.id == item_id, PortalItem.tenant_id == tenant_id)
    )
    if item is None:
        raise NotFound("no such portal message")
    service.recall(session, item, now=now, actor=actor)
    return item


def item_of_message(
    session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> PortalItem | None:
    """The portal item of one of the organization's messages (None: not in the portal)."""
    return session.scalar(
        select(PortalItem)
        .where(PortalItem.tenant_id == tenant_id, PortalItem.message_id == message_id)
        .options(defer(PortalItem.content))
    )


def replies_of(session: Session, item_id: uuid.UUID) -> list[PortalReply]:
    return list(
        session.scalars(
            select(PortalReply)
            .where(PortalReply.item_id == item_id)
            .options(defer(PortalReply.attachments))
            .order_by(PortalReply.created_at, PortalReply.id)
        )
    )


def set_question(
    session: Session,
    tenant_id: uuid.UUID,
    item_id: uuid.UUID,
    question: str,
    answer: str,
    *,
    actor: audit.Actor,
    now: datetime,
) -> PortalItem:
    item = session.scalar(
        select(PortalItem).where(PortalItem.id == item_id, PortalItem.tenant_id == tenant_id)
    )
    if item is None:
        raise NotFound("no such portal message")
    if item.state != "active":
        raise Conflict("the message is no longer in the portal")
    service.set_question(session, item, question, answer, now=now, actor=actor)
    return item
