"""REST routes of DLP: the tenant's dictionaries and MRN patterns, and a dry-run scan
of a posted message. Thin: permissions, shapes, service calls."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.runtime import Runtime
from carepost.dlp import service
from carepost.dlp.schemas import RuleCreate, RuleList, RuleOut, RuleUpdate, ScanOut, ScanRequest

router = APIRouter(prefix="/dlp", tags=["dlp"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("dlp:read"))]
Writer = Annotated[Principal, Depends(require("dlp:write"))]
Scanner = Annotated[Principal, Depends(require("dlp:scan"))]


@router.get("/dictionaries", summary="The organization's keyword dictionaries and MRN patterns")
def list_rules(runtime: RuntimeDep, principal: Reader) -> RuleList:
    with runtime.bound_session(principal.keys) as session:
        return RuleList(
            items=[RuleOut.of(rule) for rule in service.list_rules(session, principal.tenant_id)]
        )


@router.post(
    "/dictionaries",
    status_code=status.HTTP_201_CREATED,
    summary="Add a keyword dictionary or an MRN pattern",
)
def create_rule(body: RuleCreate, runtime: RuntimeDep, principal: Writer) -> RuleOut:
    with runtime.bound_session(principal.keys) as session:
        rule = service.create_rule(
            session,
            principal.tenant_id,
            name=body.name,
            kind=body.kind,
            terms=body.terms,
            pattern=body.pattern,
            severity=body.severity,
            phi=body.phi,
            actor=principal.actor,
        )
        return RuleOut.of(rule)


@router.get("/dictionaries/{rule_id}", summary="One dictionary or MRN pattern")
def get_rule(rule_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> RuleOut:
    with runtime.bound_session(principal.keys) as session:
        return RuleOut.of(service.get_rule(session, principal.tenant_id, rule_id))


@router.patch("/dictionaries/{rule_id}", summary="Change a dictionary or MRN pattern")
def update_rule(
    rule_id: uuid.UUID, body: RuleUpdate, runtime: RuntimeDep, principal: Writer
) -> RuleOut:
    with runtime.bound_session(principal.keys) as session:
        rule = service.update_rule(
            session,
            principal.tenant_id,
            rule_id,
            changes=body.model_dump(exclude_unset=True),
            actor=principal.actor,
        )
        return RuleOut.of(rule)


@router.delete(
    "/dictionaries/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a dictionary or MRN pattern",
)
def delete_rule(rule_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_rule(session, principal.tenant_id, rule_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/scan",
    summary="Dry-run a DLP scan of a message: findings with locations, never the matched text",
)
def scan(body: ScanRequest, runtime: RuntimeDep, principal: Scanner) -> ScanOut:
    with runtime.bound_session(principal.keys) as session:
        result = service.scan_for_tenant(session, principal.keys, body.message())
        return ScanOut.of(result)
