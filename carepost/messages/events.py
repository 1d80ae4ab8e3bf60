"""Message events: the history of each message, its contact's timeline, and webhooks.

Every event is one ``message_events`` row (codes and ids in ``detail``, never PHI),
one entry on the contact's timeline (kind ``email.<event>``, carrying the message
id, see :mod:`carepost.contacts.events`) when the message has a contact, and one
call of the webhooks' transactional outbox. Delivery outcomes also move the
message's state; engagement events (opened, clicked, ...) only stamp it.

:func:`record_message_event` is the entry point of the feedback helpers (bounces,
complaints, tracking); the outbox itself writes in bulk with :func:`write_events`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from carepost.contacts.activity_models import ContactEvent
from carepost.contacts.events import kind_ids
from carepost.core.bulk import write_rows
from carepost.core.database import utcnow
from carepost.core.errors import NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.messages import ports
from carepost.messages.kinds import MESSAGE_EVENT_KINDS
from carepost.messages.models import Message, MessageEvent, MessageState
from carepost.webhooks.models import WebhookEndpoint

KINDS = MESSAGE_EVENT_KINDS
# Events that move the message to a state (the others leave it where it is).
STATE_OF_KIND = {
    "delivered": MessageState.DELIVERED,
    "deferred": MessageState.DEFERRED,
    "bounced": MessageState.BOUNCED,
    "failed": MessageState.FAILED,
    "suppressed": MessageState.SUPPRESSED,
}
TIMELINE_SOURCE = "email"
EVENTS_TABLE: Table = MessageEvent.__table__  # type: ignore[assignment]
TIMELINE_TABLE: Table = ContactEvent.__table__  # type: ignore[assignment]

# (message id, contact id or None, kind, detail)
EventRow = tuple[uuid.UUID, uuid.UUID | None, str, Mapping[str, Any]]


def timeline_kind(kind: str) -> str:
    return f"email.{kind}"


def write_events(
    session: Session,
    tenant_id: uuid.UUID,
    events: Sequence[EventRow],
    *,
    now: datetime | None = None,
    campaign_id: uuid.UUID | None = None,
    webhooks: bool = True,
) -> None:
    """Write many events at once: their rows, the contacts' timeline, the webhooks
    (``emit`` needs the tenant's keys bound: pass ``webhooks=False`` without them)."""
    if not events:
        return
    now = now or utcnow()
    write_rows(
        session,
        EVENTS_TABLE,
        ("tenant_id", "message_id", "kind", "occurred_at", "detail"),
        [
            (tenant_id, message_id, kind, now, dict(detail))
            for message_id, _c, kind, detail in events
        ],
    )
    with_contact = [event for event in events if event[1] is not None]
    if with_contact:
        kinds = kind_ids(session, tenant_id, {timeline_kind(e[2]) for e in with_contact})
        write_rows(
            session,
            TIMELINE_TABLE,
            (
                "tenant_id",
                "contact_id",
                "kind_id",
                "occurred_at",
                "source",
                "campaign_id",
                "message_id",
            ),
            [
                (
                    tenant_id,
                    contact_id,
                    kinds[timeline_kind(kind)],
                    now,
                    TIMELINE_SOURCE,
                    campaign_id,
                    message_id,
                )
                for message_id, contact_id, kind, _detail in with_contact
            ],
        )
    if webhooks and _has_webhook_endpoints(session, tenant_id):
        for message_id, _contact, kind, detail in events:
            # Ids, kinds and server codes only: the detail of an event never holds PHI
            # (recipient addresses in server replies are masked before they get here).
            ports.emit(
                session,
                tenant_id,
                f"message.{kind}",
                dict(detail) | {"message_id": str(message_id), "occurred_at": now.isoformat()},
            )


def _has_webhook_endpoints(session: Session, tenant_id: uuid.UUID) -> bool:
    """Whether emitting can write anything: one query for a whole batch of events
    rather than one per event for the many tenants without webhooks."""
    found = session.scalar(
        select(WebhookEndpoint.id)
        .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True))
        .limit(1)
    )
    return found is not None


def record_message_event(
    session: Session,
    keys: TenantKeys,
    message_id: uuid.UUID,
    kind: str,
    *,
    occurred_at: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record one event of a message of ``keys``' tenant (the feedback helpers' entry).

    A delivery outcome moves the message's state (a late ``deferred`` never undoes a
    ``delivered`` or ``bounced``); ``detail`` must hold codes and ids, never PHI."""
    if kind not in KINDS:
        raise ValidationFailed(f"must be one of {', '.join(KINDS)}", field="kind")
    when = occurred_at or utcnow()
    row = session.execute(
        select(Message.contact_id, Message.campaign_id, Message.state).where(
            Message.id == message_id, Message.tenant_id == keys.tenant_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound("no such message")
    contact_id, campaign_id, state = row
    values: dict[str, Any] = {"last_event_at": when}
    target = STATE_OF_KIND.get(kind)
    if target is not None and not (
        kind == "deferred" and state in (MessageState.DELIVERED, MessageState.BOUNCED)
    ):
        values["state"] = target
        values["lease_until"] = None
    session.execute(update(Message).where(Message.id == message_id).values(**values))
    write_events(
        session,
        keys.tenant_id,
        [(message_id, contact_id, kind, dict(detail or {}))],
        now=when,
        campaign_id=campaign_id,
    )
