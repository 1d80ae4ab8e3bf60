"""API shapes of webhook endpoints, deliveries and their attempts.

The secret appears only in :class:`EndpointWithSecret` (creation and rotation).
Deliveries show their state and log, never the payload (it may hold PHI for
endpoints that allowed it) nor any response body.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import SingleLineText
from carepost.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

EventTypes = list[SingleLineText]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: SingleLineText = Field(
        max_length=2000, description="https URL (http only to loopback in development/test)"
    )
    event_types: EventTypes = Field(
        min_length=1,
        max_length=20,
        description="e.g. message.bounced, message.opened; '*' for every event",
    )
    description: SingleLineText = Field(default="", max_length=200)
    enabled: bool = True
    include_phi: bool = Field(
        default=False, description="Send PHI (recipient, subject...) in payloads; off by default"
    )


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: SingleLineText | None = Field(default=None, max_length=2000)
    event_types: EventTypes | None = Field(default=None, min_length=1, max_length=20)
    description: SingleLineText | None = Field(default=None, max_length=200)
    enabled: bool | None = None
    include_phi: bool | None = None


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    include_phi: bool
    created_at: datetime
    updated_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret before the last rotation still signs"
    )

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=list(endpoint.event_types),
            enabled=endpoint.enabled,
            include_phi=endpoint.include_phi,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
        )


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="Shown once: store it now (it verifies Carepost-Signature)")


class EndpointList(BaseModel):
    items: list[EndpointOut]


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    succeeded: bool

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptOut:
        return cls(
            attempt=row.attempt,
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            status_code=row.status_code,
            error=row.error,
            succeeded=row.succeeded,
        )


class DeliveryOut(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    state: str = Field(description="pending, sending, delivered or failed")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    replay_of: uuid.UUID | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=row.event_id,
            event_type=row.event_type,
            state=row.state,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.state == "pending" else None,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            replay_of=row.replay_of,
        )


class DeliveryDetail(DeliveryOut):
    log: list[AttemptOut]
