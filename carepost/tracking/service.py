"""Tracking settings and the recording of opens and clicks.

The public routes (:mod:`carepost.tracking.pages`) read a token, then call
:func:`record_hit`, which finds the message through the ledger
(:mod:`carepost.delivery.message_ledger`), checks the tenant's setting, classifies
the hit (:mod:`carepost.tracking.machines`) and records ``opened``/``clicked`` with
``{"machine": bool, "machine_reason": ..., "link_index": n}`` -- ids and flags only:
never the URL (it may carry PHI), the user agent or the address.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import current_tenant_keys
from carepost.delivery.message_ledger import message_ledger
from carepost.tracking.links import TokenKind, TrackedLink
from carepost.tracking.machines import machine_reason
from carepost.tracking.models import TrackingSettings
from carepost.workflows import wakeups


@dataclass(frozen=True)
class TrackingChoice:
    track_opens: bool = True
    track_clicks: bool = True


def tracking_choice(session: Session, tenant_id: uuid.UUID) -> TrackingChoice:
    """The tenant's setting (both on unless changed); the outbox asks it before
    calling :func:`carepost.tracking.links.tracked_html`."""
    row = session.get(TrackingSettings, tenant_id)
    if row is None:
        return TrackingChoice()
    return TrackingChoice(row.track_opens, row.track_clicks)


def update_tracking(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    track_opens: bool,
    track_clicks: bool,
    actor: audit.Actor,
) -> TrackingChoice:
    row = session.get(TrackingSettings, tenant_id)
    if row is None:
        row = TrackingSettings(tenant_id=tenant_id)
        session.add(row)
    row.track_opens, row.track_clicks, row.updated_at = track_opens, track_clicks, utcnow()
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="tracking.update",
        object_type="tracking_settings",
        object_id=tenant_id,
        details={"track_opens": track_opens, "track_clicks": track_clicks},
    )
    return TrackingChoice(track_opens, track_clicks)


@dataclass(frozen=True)
class Hit:
    """What the recorder did with one request (for tests and logs: no PHI)."""

    recorded: bool
    machine_reason: str | None = None


def record_hit(
    runtime: Runtime,
    link: TrackedLink,
    *,
    user_agent: str | None,
    client_ip: str | None,
    now: datetime | None = None,
) -> Hit:
    """Record an open or click of a message, if its tenant tracks them."""
    ledger = message_ledger()
    now = now or utcnow()
    with runtime.database.session() as session:
        tenant_id = ledger.tenant_of(session, link.message_id)
    if tenant_id is None:
        return Hit(False)
    kind = "opened" if link.kind is TokenKind.OPEN else "clicked"
    with runtime.tenant_session(tenant_id) as session:
        choice = tracking_choice(session, tenant_id)
        if not (choice.track_opens if kind == "opened" else choice.track_clicks):
            return Hit(False)
        keys = current_tenant_keys()
        message = ledger.find(session, keys, link.message_id)
        if message is None:
            return Hit(False)
        reason = machine_reason(
            kind=kind,
            user_agent=user_agent,
            client_ip=client_ip,
            sent_at=message.sent_at,
            now=now,
        )
        detail: dict[str, object] = {"machine": reason is not None}
        if reason is not None:
            detail["machine_reason"] = reason
        if link.link_index is not None:
            detail["link_index"] = link.link_index
        ledger.record_event(session, keys, link.message_id, kind, occurred_at=now, detail=detail)
        # Runs waiting for this open/click wake in the same transaction (wait index).
        wakeups.on_tracking_hit(session, link.message_id, kind, link_index=link.link_index, now=now)
    return Hit(True, reason)
