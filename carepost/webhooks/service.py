"""Webhook endpoints (create, change, rotate, delete), the transactional outbox
:func:`emit`, replays and test events.

The secret is generated here, stored encrypted and returned once (at creation and
rotation); a rotation keeps the old secret signing for :data:`ROTATION_GRACE`. What
URLs, event types and payload keys are acceptable is :mod:`carepost.webhooks.rules`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import new_id, utcnow
from carepost.core.errors import CarepostError, NotFound, ValidationFailed
from carepost.crypto.keyring import current_tenant_keys
from carepost.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from carepost.webhooks.phi import message_phi
from carepost.webhooks.rules import (
    ALL_EVENTS,
    check_event_types,
    check_url,
    normalize_event_type,
    split_phi,
)
from carepost.webhooks.signing import new_secret

ROTATION_GRACE = timedelta(hours=24)
MAX_ENDPOINTS = 20


class WebhookError(CarepostError):
    """The webhook request is not valid."""

    code = "webhook-error"
    status = 422
    title = "Webhook error"


@dataclass(frozen=True)
class CreatedSecret:
    """An endpoint with its secret in clear: returned once, never again."""

    endpoint: WebhookEndpoint
    secret: str


def _audit(
    session: Session, endpoint: WebhookEndpoint, actor: audit.Actor, action: str, **details: Any
) -> None:
    audit.record(
        session,
        tenant_id=endpoint.tenant_id,
        actor=actor,
        action=action,
        object_type="webhook_endpoint",
        object_id=endpoint.id,
        details={"enabled": endpoint.enabled, "include_phi": endpoint.include_phi, **details},
    )


def create_endpoint(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    url: str,
    event_types: Sequence[str],
    description: str = "",
    enabled: bool = True,
    include_phi: bool = False,
    allow_loopback_http: bool = False,
    actor: audit.Actor,
) -> CreatedSecret:
    count = len(list_endpoints(session, tenant_id))
    if count >= MAX_ENDPOINTS:
        raise ValidationFailed(f"an organization has at most {MAX_ENDPOINTS} endpoints")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=new_id(),
        tenant_id=tenant_id,
        url=check_url(url, allow_loopback_http=allow_loopback_http),
        description=description.strip(),
        event_types=check_event_types(event_types),
        secret=secret,
        enabled=enabled,
        include_phi=include_phi,
    )
    session.add(endpoint)
    session.flush()
    _audit(session, endpoint, actor, "webhook.create", event_types=endpoint.event_types)
    return CreatedSecret(endpoint, secret)


def list_endpoints(session: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(WebhookEndpoint.id)
        )
    )


def get_endpoint(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
        )
    )
    if endpoint is None:
        raise NotFound("no such webhook endpoint")
    return endpoint


def update_endpoint(
    session: Session,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    allow_loopback_http: bool = False,
    actor: audit.Actor,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if changes.get("url") is not None:
        endpoint.url = check_url(str(changes["url"]), allow_loopback_http=allow_loopback_http)
    if changes.get("event_types") is not None:
        endpoint.event_types = check_event_types(changes["event_types"])
    if changes.get("description") is not None:
        endpoint.description = str(changes["description"]).strip()
    if changes.get("enabled") is not None:
        endpoint.enabled = bool(changes["enabled"])
    if changes.get("include_phi") is not None:
        endpoint.include_phi = bool(changes["include_phi"])
    endpoint.updated_at = utcnow()
    session.flush()
    _audit(session, endpoint, actor, "webhook.update", fields=sorted(changes))
    return endpoint


def rotate_secret(
    session: Session,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> CreatedSecret:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = (now or utcnow()) + ROTATION_GRACE
    endpoint.secret = secret
    endpoint.updated_at = utcnow()
    session.flush()
    _audit(session, endpoint, actor, "webhook.rotate_secret")
    return CreatedSecret(endpoint, secret)


def delete_endpoint(
    session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    _audit(session, endpoint, actor, "webhook.delete")
    session.delete(endpoint)
    session.flush()


# --- the outbox -------------------------------------------------------------------------


def _subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return ALL_EVENTS in endpoint.event_types or event_type in endpoint.event_types


def _envelope(
    event_id: uuid.UUID,
    event_type: str,
    tenant_id: uuid.UUID,
    data: Mapping[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "id": str(event_id),
        "type": event_type,
        "created_at": created_at.isoformat(),
        "organization_id": str(tenant_id),
        "data": dict(data),
    }


def emit(
    session: Session, tenant_id: uuid.UUID, event_type: str, payload: Mapping[str, Any]
) -> int:
    """Queue ``event_type`` for every enabled endpoint of the tenant subscribed to it,
    in the caller's transaction; returns how many deliveries were written.

    Call it inside a unit of work with the tenant's keys bound (payloads are stored
    encrypted). PHI in ``payload`` (under ``"phi"`` or a key of :data:`PHI_KEYS`)
    goes only to endpoints that allow it.
    """
    name = normalize_event_type(event_type)
    if current_tenant_keys().tenant_id != tenant_id:
        raise WebhookError("emit needs the keys of the tenant it emits for")
    endpoints = [
        endpoint
        for endpoint in session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True)
            )
        )
        if _subscribed(endpoint, name)
    ]
    if not endpoints:
        return 0
    safe, phi = split_phi(payload)
    if "message_id" in payload and any(endpoint.include_phi for endpoint in endpoints):
        # Only endpoints that include PHI see this (below); the event itself has none.
        phi = {**message_phi(session, tenant_id, payload["message_id"]), **phi}
    now = utcnow()
    event_id = new_id()
    for endpoint in endpoints:
        data = {**safe, "phi": phi} if endpoint.include_phi and phi else safe
        session.add(
            WebhookDelivery(
                id=new_id(),
                tenant_id=tenant_id,
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=name,
                payload=_envelope(event_id, name, tenant_id, data, now),
                state="pending",
                next_attempt_at=now,
            )
        )
    session.flush()
    return len(endpoints)


def send_test_event(
    session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, *, actor: audit.Actor
) -> WebhookDelivery:
    """Queue a ``webhook.test`` delivery to one endpoint (subscribed to it or not)."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    now = utcnow()
    event_id = new_id()
    delivery = WebhookDelivery(
        id=new_id(),
        tenant_id=tenant_id,
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type="webhook.test",
        payload=_envelope(
            event_id, "webhook.test", tenant_id, {"message": "a test event from carepost"}, now
        ),
        state="pending",
        next_attempt_at=now,
    )
    session.add(delivery)
    session.flush()
    _audit(session, endpoint, actor, "webhook.test", delivery_id=str(delivery.id))
    return delivery


def list_deliveries(
    session: Session,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    before: uuid.UUID | None = None,
    limit: int = 50,
    state: str | None = None,
) -> list[WebhookDelivery]:
    """Newest first (a delivery log reads backwards)."""
    get_endpoint(session, tenant_id, endpoint_id)
    query = select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


def get_delivery(
    session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    delivery = session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.id == delivery_id,
        )
    )
    if delivery is None:
        raise NotFound("no such webhook delivery")
    return delivery


def delivery_attempts(
    session: Session, tenant_id: uuid.UUID, delivery_id: uuid.UUID
) -> list[WebhookAttempt]:
    return list(
        session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.tenant_id == tenant_id, WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempt)
        )
    )


def _payload_for(endpoint: WebhookEndpoint, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A stored payload as the endpoint may receive it now (PHI dropped if it no
    longer allows it)."""
    copy = dict(payload)
    data = copy.get("data")
    if not endpoint.include_phi and isinstance(data, Mapping) and "phi" in data:
        copy["data"] = {key: value for key, value in data.items() if key != "phi"}
    return copy


def replay_delivery(
    session: Session,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
    *,
    actor: audit.Actor,
) -> WebhookDelivery:
    """Queue the same event again to the same endpoint (a new delivery in the log; the
    event id is kept, so a receiver that de-duplicates by it sees a repeat)."""
    original = get_delivery(session, tenant_id, endpoint_id, delivery_id)
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    copy = WebhookDelivery(
        id=new_id(),
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        event_id=original.event_id,
        event_type=original.event_type,
        payload=_payload_for(endpoint, original.payload),
        state="pending",
        next_attempt_at=utcnow(),
        replay_of=original.id,
    )
    session.add(copy)
    session.flush()
    _audit(
        session,
        endpoint,
        actor,
        "webhook.replay",
        delivery_id=str(original.id),
        replay_id=str(copy.id),
    )
    return copy
