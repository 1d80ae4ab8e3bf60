"""REST routes of the protection policy: read, replace (audited), reset, and a
dry-run decision. Thin: permissions, shapes, service calls."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.errors import ValidationFailed
from carepost.core.runtime import Runtime
from carepost.policy import service
from carepost.policy.decision import SenderSettings, decide_protection
from carepost.policy.schemas import DecideRequest, DecisionOut, PolicyOut, PolicyPut

router = APIRouter(prefix="/policy", tags=["policy"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("policy:read"))]
Writer = Annotated[Principal, Depends(require("policy:write"))]
# A dry run changes nothing, but it is a POST: the people who prepare messages use it.
DryRunner = Annotated[Principal, Depends(require("dlp:scan"))]


@router.get("", summary="The organization's protection policy (the defaults until changed)")
def get_policy(runtime: RuntimeDep, principal: Reader) -> PolicyOut:
    with runtime.bound_session(principal.keys) as session:
        return PolicyOut.of(service.get_policy(session, principal.tenant_id))


@router.put("", summary="Replace the protection policy (audited)")
def put_policy(body: PolicyPut, runtime: RuntimeDep, principal: Writer) -> PolicyOut:
    with runtime.bound_session(principal.keys) as session:
        policy = service.put_policy(
            session,
            principal.tenant_id,
            body.document,
            actor=principal.actor,
            expected_revision=body.expected_revision,
        )
        return PolicyOut.of(policy)


@router.delete("", summary="Go back to the default policy (audited)")
def reset_policy(runtime: RuntimeDep, principal: Writer) -> PolicyOut:
    with runtime.bound_session(principal.keys) as session:
        return PolicyOut.of(
            service.reset_policy(session, principal.tenant_id, actor=principal.actor)
        )


@router.post("/decide", summary="Dry-run the decision for one recipient with the stored policy")
def decide(body: DecideRequest, runtime: RuntimeDep, principal: DryRunner) -> DecisionOut:
    try:
        message, keys, tls = body.facts()
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="findings") from None
    with runtime.bound_session(principal.keys) as session:
        policy = service.get_policy(session, principal.tenant_id).document
    decision = decide_protection(
        recipient_domain=body.recipient_domain,
        message=message,
        keys=keys,
        tls=tls,
        sender=SenderSettings(force_portal=body.force_portal),
        policy=policy,
    )
    return DecisionOut.of(decision)
