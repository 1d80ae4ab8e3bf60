"""The delivery path's way into the portal (called by carepost/protection).

The caller holds a tenant session with the tenant's keys bound and marks the
original message delivered itself.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.core.config import get_settings
from carepost.core.database import new_id
from carepost.messages.models import Message
from carepost.portal import content as portal_content
from carepost.portal import presets, service
from carepost.portal.models import EventKind, ItemState, PortalItem


def notice_text(organization: str, url: str, expires_at: datetime) -> str:
    """The pickup notice: the organization, the link, the date. Nothing of the message."""
    return (
        f"{organization} has sent you a secure message.\n\n"
        f"To read it, open this link and confirm it is you with a code we email you:\n{url}\n\n"
        f"The message can be read until {expires_at.strftime('%d %B %Y')}.\n\n"
        "If you were not expecting it, you can ignore this email."
    )


def hand_to_portal(
    session: Session, message: Message, *, reasons: Sequence[str], now: datetime
) -> uuid.UUID:
    """Stores the message content for pickup (encrypted), queues ONE notice Message to
    message.to_address (created_by_type="portal", purpose transactional, no PHI), audits
    'portal.deposited'; idempotent per message id; returns the portal item id."""
    found = session.scalar(
        select(PortalItem.id).where(
            PortalItem.tenant_id == message.tenant_id, PortalItem.message_id == message.id
        )
    )
    if found is not None:
        return found
    brand = service.branding(session, message.tenant_id)
    token = secrets.token_urlsafe(32)
    snapshot = portal_content.snapshot(message)
    item = PortalItem(
        id=new_id(),
        tenant_id=message.tenant_id,
        message_id=message.id,
        to_index=message.to_index,
        to_address=message.to_address,
        from_address=message.from_address,
        content=snapshot,
        attachment_meta=portal_content.attachment_meta(snapshot),
        reasons=[str(r)[:80] for r in reasons][:40],
        token_hash=service.token_hash(token),
        state=ItemState.ACTIVE,
        expires_at=now + timedelta(days=brand.expiry_days),
        created_at=now,
    )
    session.add(item)
    session.flush()
    url = f"{get_settings().base_url}/s/{token}"
    item.notice_id = service.queue_notice(
        session,
        tenant_id=message.tenant_id,
        to_address=message.to_address,
        from_address=message.from_address,
        from_name=message.from_name,
        subject=brand.notice_subject,
        text=notice_text(brand.organization, url, item.expires_at),
        idempotency_key=f"portal-notice:{message.id}",
        now=now,
        created_by_id=str(item.id),
    )
    service.record_event(
        session,
        item,
        EventKind.DEPOSITED,
        now=now,
        actor=service.PORTAL_ACTOR,
        detail={"reasons": item.reasons, "attachments": len(snapshot["attachments"])},
    )
    if presets.apply_preset(session, item):
        service.record_event(
            session, item, EventKind.QUESTION_SET, now=now, actor=service.PORTAL_ACTOR,
            detail={"set": "with_message"},
        )  # fmt: skip
    return item.id
