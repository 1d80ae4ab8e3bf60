"""REST routes for the tenant's journey stages (``/journey-stages``).

Reading needs ``contacts:read``; defining or renaming a stage ``contacts:write``. The
list is not paged: a tenant has the four built-in stages and at most
:data:`~carepost.contacts.stages.MAX_STAGES` of its own. Nothing here is PHI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.contacts import stages
from carepost.contacts.stage_schemas import (
    JourneyStageCreate,
    JourneyStageList,
    JourneyStageOut,
    JourneyStageUpdate,
)
from carepost.core.runtime import Runtime

router = APIRouter(prefix="/journey-stages", tags=["journey stages"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
StageKey = Annotated[str, Path(min_length=1, max_length=stages.MAX_KEY_LENGTH)]


@router.get("", summary="List the journey stages (built-in, then the organization's own)")
def list_stages(runtime: RuntimeDep, principal: Reader) -> JourneyStageList:
    with runtime.bound_session(principal.keys) as session:
        rows = stages.list_stages(session, principal.tenant_id)
    return JourneyStageList(items=[JourneyStageOut.of(row) for row in rows])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Define a journey stage")
def create_stage(
    body: JourneyStageCreate, runtime: RuntimeDep, principal: Writer
) -> JourneyStageOut:
    with runtime.bound_session(principal.keys) as session:
        row = stages.define_stage(
            session, principal.tenant_id, key=body.key, label=body.label, actor=principal.actor
        )
        return JourneyStageOut.of(stages.get_stage(session, principal.tenant_id, row.key))


@router.patch(
    "/{stage_key}",
    summary="Rename a journey stage (its key stays; built-in stages never change)",
)
def rename_stage(
    stage_key: StageKey, body: JourneyStageUpdate, runtime: RuntimeDep, principal: Writer
) -> JourneyStageOut:
    with runtime.bound_session(principal.keys) as session:
        stages.rename_stage(
            session, principal.tenant_id, stage_key, label=body.label, actor=principal.actor
        )
        return JourneyStageOut.of(stages.get_stage(session, principal.tenant_id, stage_key))
