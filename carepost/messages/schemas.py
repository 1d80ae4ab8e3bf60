"""Request and response shapes of the messages API (docs/email-api.md).

Shapes only: the sending service checks addresses, contacts, content, consent and
suppression, and reports each problem with a JSON pointer, never a value.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from carepost.core.types import IsoDateTime
from carepost.portal.schemas import PortalIdentityIn

MAX_BATCH = 10_000
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Line = Annotated[str, StringConstraints(max_length=998)]
Priority = Literal["high", "normal", "bulk"]
SendPurpose = Literal["transactional", "marketing"]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(
        default="application/octet-stream",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$",
    )
    content: str = Field(description="The file, base64-encoded (RFC 4648)")


class MessageIn(BaseModel):
    """One message: a recipient, a sender, content (raw or a template) and options."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str | None = Field(
        default=None, max_length=320, description="The recipient's address (or contact_id)"
    )
    to_name: str | None = Field(default=None, max_length=200)
    contact_id: uuid.UUID | None = Field(
        default=None, description="Send to this contact's email (and personalize from it)"
    )
    external_id: str | None = Field(
        default=None, max_length=200, description="Send to the contact with this external id"
    )
    from_address: str = Field(alias="from", max_length=320)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    subject: Line | None = Field(default=None, description="Raw subject; {{ }} placeholders")
    html: str | None = Field(default=None, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    template_id: uuid.UUID | None = None
    variant: str | None = Field(default=None, max_length=40)
    data: dict[str, Any] = Field(default_factory=dict, description="Personalization values")
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    metadata: dict[str, Any] = Field(default_factory=dict)
    send_at: IsoDateTime | None = None
    priority: Priority = "normal"
    purpose: SendPurpose = "transactional"
    portal: PortalIdentityIn | None = Field(
        default=None,
        description="A question the recipient may answer at the secure portal instead of an "
        "emailed code, if the message goes there; the answer is hashed before it is stored",
    )


class BatchItemIn(MessageIn):
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItemIn] = Field(min_length=1, max_length=MAX_BATCH)
    atomic: bool = Field(
        default=False,
        description="Refuse the whole batch (422) when any item is invalid; by default "
        "the valid items are queued and each invalid one is reported",
    )


class ItemError(BaseModel):
    pointer: str
    detail: str


class SendResult(BaseModel):
    """What became of one message: queued (or suppressed, with the reason) or refused."""

    index: int | None = None
    id: uuid.UUID | None = None
    state: str
    reason: str = ""
    duplicate: bool = Field(
        default=False, description="The idempotency key was seen before: the first result"
    )
    errors: list[ItemError] = Field(default_factory=list)


class BatchOut(BaseModel):
    queued: int
    suppressed: int
    duplicates: int
    failed: int
    items: list[SendResult]


class MessageEventOut(BaseModel):
    kind: str
    occurred_at: datetime
    detail: dict[str, Any]


class ProtectionOut(BaseModel):
    """How the message was protected when it was prepared for delivery (docs/policy.md):
    the method, the TLS the delivery required, and the reason codes (no PHI)."""

    method: str
    tls: str | None
    reasons: list[str]


class MessageOut(BaseModel):
    """A message of the log. Recipient, subject and metadata need phi:read."""

    id: uuid.UUID
    state: str
    state_reason: str
    to: str | None
    subject: str | None
    metadata: dict[str, Any] | None
    phi_redacted: bool
    from_address: str
    from_name: str | None
    contact_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    template_id: uuid.UUID | None
    tags: list[str]
    priority: Priority
    purpose: str
    attempts: int
    next_attempt_at: datetime | None
    first_queued_at: datetime
    last_event_at: datetime | None
    created_at: datetime
    events: list[MessageEventOut] | None = None
    protection: ProtectionOut | None = None


class MessageSearch(BaseModel):
    """Search the log by recipient (in the body: an address never goes in a URL)."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=320)
    state: str | None = Field(default=None, max_length=12)
    tag: Tag | None = None
    cursor: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=500)


# --- campaigns ---------------------------------------------------------------------

AbMetric = Literal["opens", "clicks"]


class CampaignIn(BaseModel):
    """A campaign: an audience (a list or a saved segment), content (a stored template
    or raw subject/html/text), the sender, and options. With a template that has
    variants the campaign tests them (``ab_test``) on their split, then sends the
    winner to the rest; metric and window default to the template's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)
    list_id: uuid.UUID | None = None
    segment_id: uuid.UUID | None = None
    template_id: uuid.UUID | None = None
    subject: Line | None = None
    html: str | None = Field(default=None, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    from_address: str = Field(alias="from", max_length=320)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    purpose: SendPurpose = "marketing"
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    throttle_per_hour: int | None = Field(default=None, ge=1, le=10_000_000)
    ab_test: bool = Field(default=True, description="Test the template's variants, if any")
    ab_metric: AbMetric | None = Field(default=None, description="The template's when left out")
    ab_window_hours: int | None = Field(default=None, ge=1, le=720)


class CampaignUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    list_id: uuid.UUID | None = None
    segment_id: uuid.UUID | None = None
    template_id: uuid.UUID | None = None
    subject: Line | None = None
    html: str | None = Field(default=None, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    from_address: str | None = Field(default=None, alias="from", max_length=320)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    purpose: SendPurpose | None = None
    throttle_per_hour: int | None = Field(default=None, ge=1, le=10_000_000)
    ab_test: bool | None = None
    ab_metric: AbMetric | None = None
    ab_window_hours: int | None = Field(default=None, ge=1, le=720)

    @field_validator("name")
    @classmethod
    def _name_not_cleared(cls, value: str | None) -> str:
        """A campaign always has a name: leave it out to keep it, never send null."""
        if value is None:
            raise ValueError("a campaign's name cannot be removed")
        return value


class CampaignSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    send_at: IsoDateTime | None = Field(default=None, description="Now when left out")


class VariantResult(BaseModel):
    key: str
    delivered: int
    opens: int
    clicks: int


class AbTestOut(BaseModel):
    metric: str
    window_hours: int
    phase: str | None = Field(description="testing, waiting (the window), decided")
    test_until: datetime | None
    winner: str | None
    decided_at: datetime | None
    results: list[VariantResult] = Field(description="Per variant, when decided")


class CampaignOut(BaseModel):
    id: uuid.UUID
    name: str
    state: str
    list_id: uuid.UUID | None
    segment_id: uuid.UUID | None
    snapshot_id: uuid.UUID | None
    template_id: uuid.UUID | None
    from_address: str
    from_name: str | None
    reply_to: str | None
    purpose: str
    tags: list[str]
    scheduled_at: datetime | None
    throttle_per_hour: int | None
    audience: int
    queued: int
    suppressed: int
    skipped: int
    counts: dict[str, int] = Field(description="Messages per state")
    ab_test: AbTestOut | None = Field(description="The A/B test, when the campaign runs one")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
