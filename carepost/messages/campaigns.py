"""Campaigns: one message to every contact of a list or segment, scheduled and throttled.

draft -> scheduled -> sending -> done, with pause/resume and cancel. When a
scheduled campaign's time comes, its audience is frozen once (a segment snapshot,
:func:`carepost.segments.service.snapshot_segment`; for a list, a snapshot of its
current members made the same way, with one ``INSERT … SELECT``), so contacts
joining later are not included and a crash never changes who gets it.

The ``messages.campaigns`` job then queues the snapshot in batches of
:data:`BATCH` contacts, in contact id order from ``enqueued_through`` (a keyset
cursor committed with each batch), through the same path as the API
(:func:`carepost.messages.sending.send_messages`: personalization, consent,
suppression; at ``bulk`` priority, so transactional mail goes first). Each
message's idempotency key is ``campaign:<id>:<contact>``: a batch repeated after a
crash cannot queue anyone twice.

Throttle: with ``throttle_per_hour`` the messages are spaced 3600/T seconds apart
(their ``next_attempt_at``) and only the next :data:`LOOKAHEAD` of them is
queued at a time, so pausing stops the campaign within that window; paused
campaigns hold their already queued messages (state ``held``) until resumed.

Content is raw (subject/html/text) or a stored template of :mod:`carepost.templates`,
checked when the campaign is saved and again when it starts: it must be the
tenant's, a marketing template for a marketing campaign (its CAN-SPAM checks run
again, since the organization's address may have changed since it was saved) and
never a marketing template for a transactional one (that would skip consent). A
template that reads PHI goes, for marketing, only to contacts with a marketing
authorization: :func:`carepost.consent.decision.may_send` decides per contact.

A/B test (a template with variants and ``ab_metric`` set): phase ``testing`` queues
only the contacts :func:`carepost.templates.variants.assign_variant` gives a variant
(by ``<campaign>:<contact>``, so the same on any worker and after a crash), each with
its variant; the rest is the holdout. Then ``waiting`` until ``ab_test_until`` (the
window after the test portion was queued); then the job reads the test messages'
deliveries and human opens/clicks (machine-flagged ones do not count), picks the
winner with :func:`~carepost.templates.variants.choose_winner`, records it (campaign
fields, ``campaign.ab_winner`` audit event, the template's ``ab_winner``) and, in
phase ``decided``, walks the snapshot again queueing the winner to the holdout only.
The splits are frozen at the start (``ab_results``), so editing the template's
variants mid-test cannot move a contact from one arm to another.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts.activity_models import ListMembership
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.lists import get_list
from carepost.core.collector import collector_paused
from carepost.core.database import new_id, utcnow
from carepost.core.errors import CarepostError, Conflict, NotFound, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.messages import ports
from carepost.messages.models import (
    Campaign,
    CampaignState,
    Message,
    MessageEvent,
    MessageState,
)
from carepost.messages.schemas import CampaignIn, CampaignUpdate, MessageIn, SendPurpose
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.segments.models import SegmentSnapshot, SegmentSnapshotMember
from carepost.segments.service import get_segment, snapshot_segment
from carepost.templates import service as templates
from carepost.templates.models import Template, TemplateVariant
from carepost.templates.rendering import load_layout, organization_of
from carepost.templates.validation import check_content
from carepost.templates.variants import (
    Metric,
    VariantSplit,
    VariantStats,
    assign_variant,
    choose_winner,
)

BATCH = 2000
LOOKAHEAD = timedelta(minutes=1)
CAMPAIGNS_PER_RUN = 20
log = get_logger(__name__)
CAMPAIGN_ACTOR = audit.Actor("system", "", "carepost campaigns")


class AbPhase:
    """Where a campaign's A/B test is (``Campaign.ab_phase``; None without a test)."""

    TESTING = "testing"  # queueing the test portion, each contact with its variant
    WAITING = "waiting"  # the test window: opens and clicks come in
    DECIDED = "decided"  # the winner goes to the holdout


def get_campaign(session: Session, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    row = session.scalar(
        select(Campaign).where(Campaign.tenant_id == tenant_id, Campaign.id == campaign_id)
    )
    if row is None:
        raise NotFound("no such campaign")
    return row


def list_campaigns(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Campaign]:
    query = select(Campaign).where(Campaign.tenant_id == tenant_id)
    if after is not None:
        query = query.where(Campaign.id < after)
    return list(session.scalars(query.order_by(Campaign.id.desc()).limit(limit)))


def state_counts(session: Session, campaign_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(Message.state, func.count())
        .where(Message.campaign_id == campaign_id)
        .group_by(Message.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


def _check_content(
    subject: str | None, html: str | None, text: str | None, template_id: uuid.UUID | None
) -> None:
    if template_id is not None:
        if subject or html or text:
            raise ValidationFailed(
                "send either a template_id or raw subject/html/text, not both",
                field="#/body/template_id",
            )
        return
    if not subject:
        raise ValidationFailed("a subject is required (or a template_id)", field="#/body/subject")
    if html is None and text is None:
        raise ValidationFailed("give html or text content (or a template_id)", field="#/body/html")
    # Syntax errors now, not at send time (unknown names are each contact's affair).
    try:
        ports.compile_content(subject, html, text)
    except ports.TemplateError as failed:
        raise ValidationFailed(failed.detail, field=f"#/body/{failed.part or 'subject'}") from None


def check_template(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID, purpose: str
) -> Template:
    """The stored template a campaign may send for ``purpose``, or a 422 naming
    ``template_id`` (or ``purpose``).

    The template's save-time checks run again with the organization's address as it
    is now, for the template and each variant: a marketing template saved before the
    address changed must still carry the current one (CAN-SPAM)."""
    pointer = "#/body/template_id"
    try:
        row = templates.get_template(session, tenant_id, template_id)
    except NotFound:
        raise ValidationFailed("no such template", field=pointer) from None
    if purpose == "marketing" and row.kind != "marketing":
        raise ValidationFailed(
            "a marketing campaign sends a marketing template (one with the unsubscribe "
            "link and postal address CAN-SPAM requires)",
            field=pointer,
        )
    if purpose != "marketing" and row.kind == "marketing":
        raise ValidationFailed(
            "a marketing template is sent for the marketing purpose (consent applies)",
            field="#/body/purpose",
        )
    layout = load_layout(session, tenant_id, row.layout_id) if row.layout_id else None
    address = organization_of(session, tenant_id)["physical_address"]
    schema = load_schema(session, tenant_id)
    bodies: list[tuple[str, str | None, str | None]] = [(row.subject, row.html, row.text)]
    for arm in templates.variants_of(session, tenant_id, row.id):
        html, text = (arm.html, arm.text) if (arm.html or arm.text) else (row.html, row.text)
        bodies.append((arm.subject or row.subject, html, text))
    for subject, html, text in bodies:
        try:
            check_content(
                kind=row.kind,
                subject=subject,
                html=html,
                text=text,
                layout=layout,
                schema=schema,
                physical_address=address,
            )
        except CarepostError as failed:
            raise ValidationFailed(
                f"the template does not pass its checks: {failed.detail}", field=pointer
            ) from None
    return row


def _check_ab(session: Session, campaign: Campaign, ab_test: bool) -> None:
    """Turn the A/B test on (metric and window from the template unless given) when
    the template has variants and the campaign wants a test; off otherwise."""
    variants = (
        templates.variants_of(session, campaign.tenant_id, campaign.template_id)
        if campaign.template_id is not None and ab_test
        else []
    )
    if not variants:
        campaign.ab_metric = campaign.ab_window_hours = None
        return
    template = session.get(Template, campaign.template_id)
    assert template is not None
    campaign.ab_metric = campaign.ab_metric or template.ab_metric
    campaign.ab_window_hours = campaign.ab_window_hours or template.ab_window_hours


def _email(value: str, pointer: str) -> str:
    from carepost.contacts.fields import normalize_email

    try:
        return normalize_email(value)
    except ValidationFailed:
        raise ValidationFailed("not a valid email address", field=pointer) from None


def _check_audience(
    session: Session, tenant_id: uuid.UUID, list_id: uuid.UUID | None, segment_id: uuid.UUID | None
) -> None:
    if (list_id is None) == (segment_id is None):
        raise ValidationFailed("name exactly one of list_id or segment_id", field="#/body/list_id")
    if list_id is not None:
        get_list(session, tenant_id, list_id)
    if segment_id is not None:
        get_segment(session, tenant_id, segment_id)


def create_campaign(
    session: Session, keys: TenantKeys, body: CampaignIn, *, actor: audit.Actor
) -> Campaign:
    _check_audience(session, keys.tenant_id, body.list_id, body.segment_id)
    _check_content(body.subject, body.html, body.text, body.template_id)
    if body.template_id is not None:
        check_template(session, keys.tenant_id, body.template_id, body.purpose)
    campaign = Campaign(
        id=new_id(),
        tenant_id=keys.tenant_id,
        name=body.name,
        list_id=body.list_id,
        segment_id=body.segment_id,
        template_id=body.template_id,
        subject=body.subject,
        html=body.html,
        text_body=body.text,
        from_address=_email(body.from_address, "#/body/from"),
        from_name=body.from_name,
        reply_to=_email(body.reply_to, "#/body/reply_to") if body.reply_to else None,
        purpose=body.purpose,
        tags=list(body.tags),
        throttle_per_hour=body.throttle_per_hour,
        ab_metric=body.ab_metric,
        ab_window_hours=body.ab_window_hours,
        state=CampaignState.DRAFT,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    _check_ab(session, campaign, body.ab_test)
    session.add(campaign)
    session.flush()
    _audit(session, keys, actor, "campaign.create", campaign)
    return campaign


def _audit(
    session: Session,
    keys: TenantKeys,
    actor: audit.Actor,
    action: str,
    campaign: Campaign,
    **details: Any,
) -> None:
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action=action,
        object_type="campaign",
        object_id=campaign.id,
        details={"state": campaign.state, **details},
    )


def update_campaign(
    session: Session,
    keys: TenantKeys,
    campaign_id: uuid.UUID,
    changes: CampaignUpdate,
    *,
    actor: audit.Actor,
) -> Campaign:
    campaign = get_campaign(session, keys.tenant_id, campaign_id)
    if campaign.state not in (CampaignState.DRAFT, CampaignState.SCHEDULED):
        raise Conflict("only a draft or scheduled campaign can be changed")
    given = changes.model_fields_set
    for name in ("name", "subject", "html", "from_name", "throttle_per_hour"):
        if name in given:
            setattr(campaign, name, getattr(changes, name))
    if "text" in given:
        campaign.text_body = changes.text
    if "from_address" in given and changes.from_address is not None:
        campaign.from_address = _email(changes.from_address, "#/body/from")
    if "reply_to" in given:
        campaign.reply_to = (
            _email(changes.reply_to, "#/body/reply_to") if changes.reply_to else None
        )
    if "purpose" in given and changes.purpose is not None:
        campaign.purpose = changes.purpose
    if given & {"list_id", "segment_id"}:
        campaign.list_id, campaign.segment_id = changes.list_id, changes.segment_id
        _check_audience(session, keys.tenant_id, campaign.list_id, campaign.segment_id)
    if "template_id" in given:
        campaign.template_id = changes.template_id
        if changes.template_id is not None:
            # Content is the template's now, or else the raw content given with it.
            campaign.subject = campaign.html = campaign.text_body = None
    for name in ("ab_metric", "ab_window_hours"):
        if name in given:
            setattr(campaign, name, getattr(changes, name))
    _check_content(campaign.subject, campaign.html, campaign.text_body, campaign.template_id)
    if campaign.template_id is not None:
        check_template(session, keys.tenant_id, campaign.template_id, campaign.purpose)
    ab_test = changes.ab_test if changes.ab_test is not None else campaign.ab_metric is not None
    if "template_id" in given and changes.ab_test is None:
        ab_test = True
    _check_ab(session, campaign, ab_test)
    campaign.updated_at = utcnow()
    session.flush()
    _audit(session, keys, actor, "campaign.update", campaign, fields=sorted(given))
    return campaign


def schedule_campaign(
    session: Session,
    keys: TenantKeys,
    campaign_id: uuid.UUID,
    send_at: datetime | None,
    *,
    actor: audit.Actor,
) -> Campaign:
    campaign = get_campaign(session, keys.tenant_id, campaign_id)
    if campaign.state not in (CampaignState.DRAFT, CampaignState.SCHEDULED):
        raise Conflict("only a draft or scheduled campaign can be scheduled")
    campaign.scheduled_at = send_at or utcnow()
    campaign.state = CampaignState.SCHEDULED
    campaign.updated_at = utcnow()
    session.flush()
    _audit(session, keys, actor, "campaign.schedule", campaign)
    return campaign


def pause_campaign(
    session: Session, keys: TenantKeys, campaign_id: uuid.UUID, *, actor: audit.Actor
) -> Campaign:
    campaign = get_campaign(session, keys.tenant_id, campaign_id)
    if campaign.state not in (CampaignState.SCHEDULED, CampaignState.SENDING):
        raise Conflict("only a scheduled or sending campaign can be paused")
    campaign.state = CampaignState.PAUSED
    campaign.updated_at = utcnow()
    held = _move_messages(session, campaign.id, MessageState.DUE, MessageState.HELD)
    _audit(session, keys, actor, "campaign.pause", campaign, held=held)
    return campaign


def resume_campaign(
    session: Session, keys: TenantKeys, campaign_id: uuid.UUID, *, actor: audit.Actor
) -> Campaign:
    campaign = get_campaign(session, keys.tenant_id, campaign_id)
    if campaign.state != CampaignState.PAUSED:
        raise Conflict("only a paused campaign can be resumed")
    now = utcnow()
    campaign.state = CampaignState.SENDING if campaign.started_at else CampaignState.SCHEDULED
    campaign.pace_next_at = now
    campaign.updated_at = now
    released = _move_messages(
        session, campaign.id, (MessageState.HELD,), MessageState.QUEUED, next_attempt_at=now
    )
    _audit(session, keys, actor, "campaign.resume", campaign, released=released)
    return campaign


def cancel_campaign(
    session: Session, keys: TenantKeys, campaign_id: uuid.UUID, *, actor: audit.Actor
) -> Campaign:
    campaign = get_campaign(session, keys.tenant_id, campaign_id)
    if campaign.state in (CampaignState.CANCELLED, CampaignState.DONE):
        raise Conflict("the campaign has ended already")
    now = utcnow()
    campaign.state = CampaignState.CANCELLED
    campaign.finished_at = campaign.updated_at = now
    cancelled = _move_messages(
        session, campaign.id, (*MessageState.DUE, MessageState.HELD), MessageState.CANCELLED
    )
    _audit(session, keys, actor, "campaign.cancel", campaign, cancelled=cancelled)
    return campaign


def _move_messages(
    session: Session,
    campaign_id: uuid.UUID,
    from_states: Sequence[str],
    to_state: str,
    **values: Any,
) -> int:
    moved = session.execute(
        update(Message)
        .where(Message.campaign_id == campaign_id, Message.state.in_(from_states))
        .values(state=to_state, **values)
    )
    session.flush()
    return int(moved.rowcount)  # type: ignore[attr-defined]


def _freeze_audience(session: Session, keys: TenantKeys, campaign: Campaign) -> uuid.UUID:
    reason = f"campaign {campaign.id}"
    if campaign.segment_id is not None:
        return snapshot_segment(session, keys, campaign.segment_id, reason=reason)
    if campaign.list_id is None:
        raise Conflict("the campaign's list or segment was deleted")
    snapshot = SegmentSnapshot(
        id=new_id(),
        tenant_id=keys.tenant_id,
        segment_id=None,
        rule={"list": str(campaign.list_id)},
        reason=reason,
        member_count=0,
        created_by_type="system",
    )
    session.add(snapshot)
    session.flush()
    members = select(
        literal(snapshot.id, SegmentSnapshotMember.snapshot_id.type),
        literal(keys.tenant_id, SegmentSnapshotMember.tenant_id.type),
        ListMembership.contact_id,
    ).where(
        ListMembership.tenant_id == keys.tenant_id,
        ListMembership.list_id == campaign.list_id,
        ListMembership.left_at.is_(None),
    )
    session.execute(
        insert(SegmentSnapshotMember).from_select(
            ["snapshot_id", "tenant_id", "contact_id"], members
        )
    )
    snapshot.member_count = int(
        session.scalar(
            select(func.count())
            .select_from(SegmentSnapshotMember)
            .where(SegmentSnapshotMember.snapshot_id == snapshot.id)
        )
        or 0
    )
    return snapshot.id


def start_campaign(session: Session, keys: TenantKeys, campaign: Campaign, now: datetime) -> None:
    if campaign.template_id is not None:
        # Checked again: the template or the organization's address may have changed.
        check_template(session, keys.tenant_id, campaign.template_id, campaign.purpose)
    snapshot_id = _freeze_audience(session, keys, campaign)
    snapshot = session.get(SegmentSnapshot, snapshot_id)
    assert snapshot is not None
    campaign.snapshot_id = snapshot_id
    campaign.audience = snapshot.member_count
    campaign.state = CampaignState.SENDING
    campaign.started_at = campaign.pace_next_at = now
    splits: list[dict[str, Any]] = []
    if campaign.ab_metric is not None and campaign.template_id is not None:
        splits = [
            {"key": arm.key, "percent": arm.percent}
            for arm in templates.variants_of(session, keys.tenant_id, campaign.template_id)
        ]
    if splits:
        campaign.ab_phase = AbPhase.TESTING
        campaign.ab_results = splits
    else:
        campaign.ab_metric = campaign.ab_window_hours = None
    session.flush()
    _audit(session, keys, CAMPAIGN_ACTOR, "campaign.start", campaign, audience=campaign.audience)


def _splits(campaign: Campaign) -> list[VariantSplit]:
    return [VariantSplit(str(s["key"]), int(s["percent"])) for s in campaign.ab_results or []]


def _variant_of(
    campaign: Campaign, splits: list[VariantSplit], contact_id: uuid.UUID
) -> str | bool | None:
    """The variant a contact gets in this phase: a key, None (the template without
    variants) or False (not in this phase: the holdout while testing, the test
    portion once decided)."""
    if campaign.ab_phase is None:
        return None
    arm = assign_variant(f"{campaign.id}:{contact_id}", splits)
    if campaign.ab_phase == AbPhase.TESTING:
        return arm.key if arm is not None else False
    if campaign.ab_phase == AbPhase.DECIDED:
        return campaign.ab_winner if arm is None else False
    return False


def enqueue_batch(
    session: Session, keys: TenantKeys, campaign: Campaign, limits: SendLimits, now: datetime
) -> int:
    """Queue the next batch of the audience (within the throttle); returns how many
    contacts it took (0: nothing more to queue now), those of another A/B phase
    included (passed over, not queued)."""
    size = BATCH
    spacing: timedelta | None = None
    if campaign.throttle_per_hour:
        spacing = timedelta(seconds=3600 / campaign.throttle_per_hour)
        start = max(campaign.pace_next_at or now, now - spacing)
        room = int((now + LOOKAHEAD - start) / spacing) + 1
        size = max(0, min(size, room))
    if size == 0:
        return 0
    query = select(SegmentSnapshotMember.contact_id).where(
        SegmentSnapshotMember.snapshot_id == campaign.snapshot_id
    )
    if campaign.enqueued_through is not None:
        query = query.where(SegmentSnapshotMember.contact_id > campaign.enqueued_through)
    contact_ids = list(
        session.scalars(query.order_by(SegmentSnapshotMember.contact_id).limit(size))
    )
    if not contact_ids:
        return 0
    sender_names: dict[str, str | None] = {}
    if campaign.ab_phase is not None and campaign.template_id is not None:
        sender_names = {
            arm.key: arm.from_name
            for arm in session.scalars(
                select(TemplateVariant).where(
                    TemplateVariant.tenant_id == keys.tenant_id,
                    TemplateVariant.template_id == campaign.template_id,
                )
            )
        }
    splits = _splits(campaign)
    requests: list[tuple[MessageIn, str | None]] = []
    for contact_id in contact_ids:
        variant = _variant_of(campaign, splits, contact_id)
        if variant is False:
            continue
        assert variant is None or isinstance(variant, str)
        send_at = None
        if spacing is not None:
            send_at = max(campaign.pace_next_at or now, now) + spacing * len(requests)
        request = MessageIn.model_construct(
            to=None,
            to_name=None,
            contact_id=contact_id,
            external_id=None,
            from_address=campaign.from_address,
            # A variant may set the sender name (one of the things an A/B test tries).
            from_name=(sender_names.get(variant) if variant else None) or campaign.from_name,
            reply_to=campaign.reply_to,
            subject=campaign.subject,
            html=campaign.html,
            text=campaign.text_body,
            template_id=campaign.template_id,
            variant=variant,
            data={},
            attachments=[],
            tags=list(campaign.tags),
            metadata={"campaign_id": str(campaign.id)},
            send_at=send_at,
            priority="bulk",
            purpose=cast(SendPurpose, campaign.purpose),
        )
        requests.append((request, f"campaign:{campaign.id}:{contact_id}"))
    if requests:
        context = SendContext(actor=CAMPAIGN_ACTOR, limits=limits, campaign_id=campaign.id)
        with collector_paused():
            results = send_messages(session, keys, requests, context, now=now)
        for result in results:
            if result.duplicate:
                continue
            if result.state == MessageState.QUEUED:
                campaign.queued += 1
            elif result.state == MessageState.SUPPRESSED:
                campaign.suppressed += 1
            else:
                campaign.skipped += 1  # no email address, or content that cannot render
    campaign.enqueued_through = contact_ids[-1]
    if spacing is not None:
        campaign.pace_next_at = max(campaign.pace_next_at or now, now) + spacing * len(requests)
    campaign.updated_at = now
    session.flush()
    return len(contact_ids)


def variant_results(
    session: Session, tenant_id: uuid.UUID, campaign_id: uuid.UUID
) -> list[VariantStats]:
    """Per variant of a campaign's test messages: how many were delivered, and how
    many of them a person opened or clicked (each message once; opens and clicks
    flagged as a machine's — privacy proxies, link scanners — do not count)."""
    delivered = dict(
        session.execute(
            select(Message.variant, func.count())
            .where(
                Message.tenant_id == tenant_id,
                Message.campaign_id == campaign_id,
                Message.variant.is_not(None),
                Message.state == MessageState.DELIVERED,
            )
            .group_by(Message.variant)
        ).all()
    )
    events = session.execute(
        select(Message.variant, MessageEvent.message_id, MessageEvent.kind, MessageEvent.detail)
        .join(Message, Message.id == MessageEvent.message_id)
        .where(
            Message.tenant_id == tenant_id,
            Message.campaign_id == campaign_id,
            Message.variant.is_not(None),
            MessageEvent.kind.in_(("opened", "clicked")),
        )
    )
    seen: dict[tuple[str, str], set[uuid.UUID]] = {}
    for variant, message_id, kind, detail in events:
        if (detail or {}).get("machine"):
            continue
        seen.setdefault((str(variant), str(kind)), set()).add(message_id)
        if kind == "clicked":
            # A click is an open too (images blocked, the pixel never loaded).
            seen.setdefault((str(variant), "opened"), set()).add(message_id)
    keys = sorted({str(v) for v in delivered} | {v for v, _ in seen})
    return [
        VariantStats(
            key=key,
            delivered=int(delivered.get(key, 0)),
            opens=len(seen.get((key, "opened"), ())),
            clicks=len(seen.get((key, "clicked"), ())),
        )
        for key in keys
    ]


def decide_winner(session: Session, keys: TenantKeys, campaign: Campaign, now: datetime) -> str:
    """End the test window: pick the winner, record it, and start sending it to the
    holdout. With nothing delivered at all the first variant (by key) is taken, so a
    campaign never waits forever; the audit event says so."""
    assert campaign.template_id is not None
    metric = cast(Metric, campaign.ab_metric or "opens")
    stats = {s.key: s for s in variant_results(session, keys.tenant_id, campaign.id)}
    splits = _splits(campaign)
    rows = [stats.get(split.key) or VariantStats(split.key, 0) for split in splits]
    best = choose_winner(rows, metric)
    winner = best.key if best is not None else sorted(s.key for s in splits)[0]
    campaign.ab_winner = winner
    campaign.ab_decided_at = now
    campaign.ab_phase = AbPhase.DECIDED
    campaign.ab_results = [
        {
            "key": row.key,
            "percent": split.percent,
            "delivered": row.delivered,
            "opens": row.opens,
            "clicks": row.clicks,
        }
        for row, split in zip(rows, splits, strict=True)
    ]
    campaign.enqueued_through = None  # walk the snapshot again, for the holdout
    campaign.updated_at = now
    # When the variant was deleted from the template since, the campaign keeps it.
    with contextlib.suppress(NotFound):
        templates.record_winner(
            session, keys.tenant_id, campaign.template_id, winner, actor=CAMPAIGN_ACTOR
        )
    session.flush()
    _audit(
        session,
        keys,
        CAMPAIGN_ACTOR,
        "campaign.ab_winner",
        campaign,
        variant=winner,
        metric=metric,
        chosen_by="rate" if best is not None else "nothing_delivered",
        results=campaign.ab_results,
    )
    return winner


def _finish_if_done(session: Session, keys: TenantKeys, campaign: Campaign, now: datetime) -> None:
    pending = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.campaign_id == campaign.id,
            Message.state.in_((*MessageState.DUE, MessageState.SENDING, MessageState.HELD)),
        )
    )
    if not pending:
        campaign.state = CampaignState.DONE
        campaign.finished_at = now
        _audit(
            session,
            keys,
            CAMPAIGN_ACTOR,
            "campaign.done",
            campaign,
            queued=campaign.queued,
            suppressed=campaign.suppressed,
            skipped=campaign.skipped,
        )


def advance_campaign(
    runtime: Runtime, keys: TenantKeys, campaign_id: uuid.UUID, *, max_batches: int = 50
) -> int:
    """One step of one campaign: start it when due, queue batches, end it when all went."""
    limits = SendLimits.from_settings(runtime.settings)
    taken = 0
    for _ in range(max_batches):
        with runtime.bound_session(keys) as session:
            query = select(Campaign).where(
                Campaign.id == campaign_id, Campaign.tenant_id == keys.tenant_id
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            campaign = session.scalar(query)
            now = utcnow()
            if campaign is None:
                return taken
            if campaign.state == CampaignState.SCHEDULED:
                if campaign.scheduled_at is None or campaign.scheduled_at > now:
                    return taken
                start_campaign(session, keys, campaign, now)
            if campaign.state != CampaignState.SENDING:
                return taken
            if campaign.ab_phase == AbPhase.WAITING:
                if campaign.ab_test_until is not None and campaign.ab_test_until > now:
                    return taken
                decide_winner(session, keys, campaign, now)
            count = enqueue_batch(session, keys, campaign, limits, now)
            taken += count
            if count == 0:
                if campaign.enqueued_through is None or not _more_to_queue(session, campaign):
                    if campaign.ab_phase == AbPhase.TESTING:
                        _end_test_portion(session, keys, campaign, now)
                    else:
                        _finish_if_done(session, keys, campaign, now)
                return taken
    return taken


def _end_test_portion(
    session: Session, keys: TenantKeys, campaign: Campaign, now: datetime
) -> None:
    """The test portion is queued: the window starts now."""
    campaign.ab_phase = AbPhase.WAITING
    campaign.ab_test_until = now + timedelta(hours=campaign.ab_window_hours or 24)
    campaign.updated_at = now
    session.flush()
    _audit(
        session,
        keys,
        CAMPAIGN_ACTOR,
        "campaign.ab_test_sent",
        campaign,
        queued=campaign.queued,
        test_until=campaign.ab_test_until.isoformat(),
    )


def _more_to_queue(session: Session, campaign: Campaign) -> bool:
    query = select(SegmentSnapshotMember.contact_id).where(
        SegmentSnapshotMember.snapshot_id == campaign.snapshot_id
    )
    if campaign.enqueued_through is not None:
        query = query.where(SegmentSnapshotMember.contact_id > campaign.enqueued_through)
    return session.scalar(query.limit(1)) is not None


def advance_campaigns(runtime: Runtime) -> int:
    """The job: every campaign due to start or still sending takes a step."""
    now = utcnow()
    with runtime.database.session() as session:
        due = session.execute(
            select(Campaign.id, Campaign.tenant_id)
            .where(
                (Campaign.state == CampaignState.SENDING)
                | ((Campaign.state == CampaignState.SCHEDULED) & (Campaign.scheduled_at <= now))
            )
            .order_by(Campaign.scheduled_at)
            .limit(CAMPAIGNS_PER_RUN)
        ).all()
        keys_of = {tenant_id: runtime.keyring.load(session, tenant_id) for _, tenant_id in due}
    return sum(advance_campaign(runtime, keys_of[tenant_id], cid) for cid, tenant_id in due)
