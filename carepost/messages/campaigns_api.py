"""REST routes for campaigns: create, change, schedule, pause, resume, cancel, read.

Changing needs ``messages:send``; reading ``reports:read``. Content is raw or a
stored template (``template_id``); a template with variants runs an A/B test
(``ab_test``), whose phase, winner and per-variant figures the campaign shows.
Raw content (subject, HTML, text) is stored encrypted and never listed; the counts
are per message state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.orm import Session

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.core.runtime import Runtime
from carepost.messages import campaigns
from carepost.messages.models import Campaign
from carepost.messages.schemas import (
    AbTestOut,
    CampaignIn,
    CampaignOut,
    CampaignSchedule,
    CampaignUpdate,
    VariantResult,
)

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Sender = Annotated[Principal, Depends(require("messages:send"))]
Reader = Annotated[Principal, Depends(require("reports:read"))]


def _ab_out(campaign: Campaign) -> AbTestOut | None:
    if campaign.ab_metric is None:
        return None
    decided = campaign.ab_decided_at is not None
    return AbTestOut(
        metric=campaign.ab_metric,
        window_hours=campaign.ab_window_hours or 24,
        phase=campaign.ab_phase,
        test_until=campaign.ab_test_until,
        winner=campaign.ab_winner,
        decided_at=campaign.ab_decided_at,
        results=[
            VariantResult(
                key=str(row["key"]),
                delivered=int(row.get("delivered", 0)),
                opens=int(row.get("opens", 0)),
                clicks=int(row.get("clicks", 0)),
            )
            for row in (campaign.ab_results or [])
            if decided
        ],
    )


def _out(session: Session, campaign: Campaign) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        state=campaign.state,
        list_id=campaign.list_id,
        segment_id=campaign.segment_id,
        snapshot_id=campaign.snapshot_id,
        template_id=campaign.template_id,
        from_address=campaign.from_address,
        from_name=campaign.from_name,
        reply_to=campaign.reply_to,
        purpose=campaign.purpose,
        tags=list(campaign.tags),
        scheduled_at=campaign.scheduled_at,
        throttle_per_hour=campaign.throttle_per_hour,
        audience=campaign.audience,
        queued=campaign.queued,
        suppressed=campaign.suppressed,
        skipped=campaign.skipped,
        counts=campaigns.state_counts(session, campaign.id),
        ab_test=_ab_out(campaign),
        created_at=campaign.created_at,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a campaign (a draft)")
def create_campaign(body: CampaignIn, runtime: RuntimeDep, principal: Sender) -> CampaignOut:
    with runtime.bound_session(principal.keys) as session:
        campaign = campaigns.create_campaign(session, principal.keys, body, actor=principal.actor)
        return _out(session, campaign)


@router.get("", summary="List campaigns, newest first")
def list_campaigns(
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[CampaignOut]:
    with runtime.bound_session(principal.keys) as session:
        found = campaigns.list_campaigns(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
        more = len(found) > limit
        found = found[:limit]
        return Page[CampaignOut](
            items=[_out(session, c) for c in found],
            next_cursor=encode_cursor(found[-1].id) if more else None,
        )


@router.get("/{campaign_id}", summary="A campaign with its counts per message state")
def get_campaign(campaign_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> CampaignOut:
    with runtime.bound_session(principal.keys) as session:
        return _out(session, campaigns.get_campaign(session, principal.tenant_id, campaign_id))


@router.patch("/{campaign_id}", summary="Change a draft or scheduled campaign")
def update_campaign(
    campaign_id: uuid.UUID, body: CampaignUpdate, runtime: RuntimeDep, principal: Sender
) -> CampaignOut:
    with runtime.bound_session(principal.keys) as session:
        campaign = campaigns.update_campaign(
            session, principal.keys, campaign_id, body, actor=principal.actor
        )
        return _out(session, campaign)


@router.post(
    "/{campaign_id}/schedule", summary="Schedule a campaign (now when send_at is left out)"
)
def schedule_campaign(
    campaign_id: uuid.UUID, body: CampaignSchedule, runtime: RuntimeDep, principal: Sender
) -> CampaignOut:
    with runtime.bound_session(principal.keys) as session:
        campaign = campaigns.schedule_campaign(
            session, principal.keys, campaign_id, body.send_at, actor=principal.actor
        )
        return _out(session, campaign)


Transition = Callable[..., Campaign]


def _add_transition(action: str, change: Transition, summary: str) -> None:
    """``POST /campaigns/{id}/<action>``: one state change of the campaign's life."""

    def route(campaign_id: uuid.UUID, runtime: RuntimeDep, principal: Sender) -> CampaignOut:
        with runtime.bound_session(principal.keys) as session:
            campaign = change(session, principal.keys, campaign_id, actor=principal.actor)
            return _out(session, campaign)

    router.add_api_route(
        f"/{{campaign_id}}/{action}",
        route,
        methods=["POST"],
        summary=summary,
        name=f"{action}_campaign",
        response_model=CampaignOut,
    )


_add_transition("pause", campaigns.pause_campaign, "Pause a scheduled or sending campaign")
_add_transition("resume", campaigns.resume_campaign, "Resume a paused campaign")
_add_transition("cancel", campaigns.cancel_campaign, "Cancel a campaign (its queued messages too)")
