"""Reading the message log: list and search (recipient, state, tag), one message with events.

A search by recipient compares the keyed blind index of the address (the same
label as the contacts' email index), so the address is never decrypted to be
found and never travels in a URL. Reading recipients, subjects or metadata is a
PHI view, audited by the caller (``message.view_phi``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session, defer

from carepost.audit import service as audit
from carepost.contacts.fields import normalize_email
from carepost.core.errors import NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.messages.models import PRIORITY_NAMES, Message, MessageEvent, MessageState
from carepost.messages.schemas import MessageEventOut, MessageOut, ProtectionOut
from carepost.messages.sending import EMAIL_INDEX_LABEL

SEALED_COLUMNS = ("to_address", "to_name", "subject", "body", "data", "attachments", "meta")


@dataclass(frozen=True)
class MessageFilter:
    to: str | None = None
    state: str | None = None
    tag: str | None = None
    campaign_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None


def list_messages(
    session: Session,
    keys: TenantKeys,
    criteria: MessageFilter,
    *,
    after: uuid.UUID | None,
    limit: int,
    with_phi: bool,
) -> list[Message]:
    """Newest first; ``after`` is the last id of the previous page."""
    query = select(Message).where(Message.tenant_id == keys.tenant_id)
    if not with_phi:
        query = query.options(*(defer(getattr(Message, name)) for name in SEALED_COLUMNS))
    else:
        # Bodies and attachments are never listed: only the one-message view shows them.
        query = query.options(defer(Message.body), defer(Message.attachments))
        query = query.options(defer(Message.data))
    if criteria.to is not None:
        try:
            address = normalize_email(criteria.to)
        except ValidationFailed:
            raise ValidationFailed("not a valid email address", field="#/body/to") from None
        query = query.where(Message.to_index == keys.blind_index(EMAIL_INDEX_LABEL, address))
    if criteria.state is not None:
        if criteria.state not in MessageState.ALL:
            raise ValidationFailed(
                f"must be one of {', '.join(MessageState.ALL)}", field="#/query/state"
            )
        query = query.where(Message.state == criteria.state)
    if criteria.tag is not None:
        # Tags are constrained to [A-Za-z0-9_.:-], so the quoted form is unambiguous.
        query = query.where(cast(Message.tags, String).like(f'%"{criteria.tag}"%'))
    if criteria.campaign_id is not None:
        query = query.where(Message.campaign_id == criteria.campaign_id)
    if criteria.contact_id is not None:
        query = query.where(Message.contact_id == criteria.contact_id)
    if after is not None:
        query = query.where(Message.id < after)
    return list(session.scalars(query.order_by(Message.id.desc()).limit(limit)))


def get_message(session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    message = session.scalar(
        select(Message).where(Message.id == message_id, Message.tenant_id == tenant_id)
    )
    if message is None:
        raise NotFound("no such message")
    return message


def message_events(session: Session, message_id: uuid.UUID) -> list[MessageEvent]:
    return list(
        session.scalars(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
    )


def message_out(
    message: Message, *, show_phi: bool, events: Sequence[MessageEvent] | None = None
) -> MessageOut:
    final = message.state in MessageState.FINAL
    meta: dict[str, Any] | None = message.meta if show_phi else None
    return MessageOut(
        id=message.id,
        state=message.state,
        state_reason=message.state_reason,
        to=message.to_address if show_phi else None,
        subject=message.subject if show_phi else None,
        metadata=meta,
        phi_redacted=not show_phi,
        from_address=message.from_address,
        from_name=message.from_name,
        contact_id=message.contact_id,
        campaign_id=message.campaign_id,
        template_id=message.template_id,
        tags=list(message.tags),
        priority=PRIORITY_NAMES.get(message.priority, "normal"),
        purpose=message.purpose,
        attempts=message.attempts,
        next_attempt_at=None if final else message.next_attempt_at,
        first_queued_at=message.first_queued_at,
        last_event_at=message.last_event_at,
        created_at=message.created_at,
        protection=None
        if message.protection_method is None
        else ProtectionOut(
            method=message.protection_method,
            tls=message.protection_tls,
            reasons=list(message.protection_reasons or []),
        ),
        events=None
        if events is None
        else [
            MessageEventOut(kind=e.kind, occurred_at=e.occurred_at, detail=e.detail) for e in events
        ],
    )


def record_phi_view(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: audit.Actor,
    messages: Sequence[Message],
    via: str,
) -> None:
    """Audit that recipients (and for one message, its subject) were shown: ids only."""
    if not messages:
        return
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="message.view_phi",
        object_type="message",
        object_id=str(messages[0].id) if len(messages) == 1 else "",
        details={"via": via, "count": len(messages), "ids": [str(m.id) for m in messages[:100]]},
    )
