"""REST routes for the caller's own organization (there is no cross-tenant route)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.runtime import Runtime
from carepost.tenancy import service
from carepost.tenancy.schemas import TenantOut, TenantUpdate

router = APIRouter(tags=["organization"])


@router.get("/tenant", summary="The organization's settings")
def get_tenant(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    principal: Annotated[Principal, Depends(require("tenant:read"))],
) -> TenantOut:
    with runtime.bound_session(principal.keys) as session:
        return TenantOut.of(service.get_tenant(session, principal.tenant_id))


@router.patch("/tenant", summary="Change the organization's settings (session policy, address)")
def update_tenant(
    body: TenantUpdate,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    principal: Annotated[Principal, Depends(require("tenant:write"))],
) -> TenantOut:
    with runtime.bound_session(principal.keys) as session:
        tenant = service.update_tenant_settings(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            **body.model_dump(exclude_none=True),
        )
        return TenantOut.of(tenant)
