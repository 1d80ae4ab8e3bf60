"""REST routes of the organization's tracking setting (opens and clicks on or off)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.runtime import Runtime
from carepost.tracking import service

router = APIRouter(prefix="/tracking", tags=["tracking"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


class TrackingSettingsBody(BaseModel):
    # Strict: JSON true/false only (1 or 0 is a client's mistake, refused with a 422).
    model_config = ConfigDict(extra="forbid", strict=True)

    track_opens: bool
    track_clicks: bool


@router.get("/settings", summary="Whether opens and clicks are tracked")
def get_tracking(
    runtime: RuntimeDep, principal: Annotated[Principal, Depends(require("tenant:read"))]
) -> TrackingSettingsBody:
    with runtime.bound_session(principal.keys) as session:
        choice = service.tracking_choice(session, principal.tenant_id)
        return TrackingSettingsBody(
            track_opens=choice.track_opens, track_clicks=choice.track_clicks
        )


@router.put("/settings", summary="Turn open and click tracking on or off")
def put_tracking(
    body: TrackingSettingsBody,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("tenant:write"))],
) -> TrackingSettingsBody:
    with runtime.bound_session(principal.keys) as session:
        choice = service.update_tracking(
            session,
            principal.tenant_id,
            track_opens=body.track_opens,
            track_clicks=body.track_clicks,
            actor=principal.actor,
        )
        return TrackingSettingsBody(
            track_opens=choice.track_opens, track_clicks=choice.track_clicks
        )
