"""REST routes for sending domains (``/domains``): add, list, read with the DNS
records to publish, check DNS, rotate and promote DKIM keys, delete.

Reading needs ``tenant:read`` (the records are public DNS data); every change
needs ``domains:write`` (owners and admins). No response ever holds a private key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

import dns.resolver
from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.orm import Session

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.runtime import Runtime
from carepost.domains import service
from carepost.domains.schemas import CheckOut, DomainCreate, DomainDetail, DomainList, DomainOut

router = APIRouter(prefix="/domains", tags=["sending domains"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("tenant:read"))]
Writer = Annotated[Principal, Depends(require("domains:write"))]


def get_dns_resolver(request: Request) -> dns.resolver.Resolver:
    """The resolver DNS checks use (a dependency, so tests can point it at loopback)."""
    runtime: Runtime = request.app.state.runtime
    return service.resolver_for(runtime.settings)


ResolverDep = Annotated[dns.resolver.Resolver, Depends(get_dns_resolver)]


def _detail(
    session: Session, runtime: Runtime, tenant_id: uuid.UUID, domain_id: uuid.UUID
) -> DomainDetail:
    domain = service.get_domain(session, tenant_id, domain_id)
    return DomainDetail.build(
        domain,
        service.key_rows(session, tenant_id, domain_id),
        service.records_for(session, domain, runtime.settings),
    )


@router.get("", summary="List the sending domains")
def list_domains(runtime: RuntimeDep, principal: Reader) -> DomainList:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_domains(session, principal.tenant_id)
        return DomainList(items=[DomainOut.of(row) for row in rows])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a sending domain (generates its RSA and Ed25519 DKIM keys)",
)
def add_domain(body: DomainCreate, runtime: RuntimeDep, principal: Writer) -> DomainDetail:
    with runtime.bound_session(principal.keys) as session:
        row = service.add_domain(
            session, principal.tenant_id, name=body.name, actor=principal.actor
        )
        return _detail(session, runtime, principal.tenant_id, row.id)


@router.get("/{domain_id}", summary="A domain with its keys, DNS records and last check")
def get_domain(domain_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> DomainDetail:
    with runtime.bound_session(principal.keys) as session:
        return _detail(session, runtime, principal.tenant_id, domain_id)


@router.post("/{domain_id}/check", summary="Check the domain's SPF, DKIM and DMARC records now")
def check_domain(
    domain_id: uuid.UUID, runtime: RuntimeDep, principal: Writer, resolver: ResolverDep
) -> CheckOut:
    with runtime.bound_session(principal.keys) as session:
        service.check_dns(
            session, principal.tenant_id, domain_id, settings=runtime.settings, resolver=resolver
        )
        domain = service.get_domain(session, principal.tenant_id, domain_id)
        result = CheckOut.of(domain.last_check, domain.last_checked_at)
        assert result is not None
        return result


@router.post(
    "/{domain_id}/rotate",
    summary="Start a DKIM key rotation: new keys to publish under new selectors",
)
def rotate_keys(domain_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> DomainDetail:
    return _change_keys(service.rotate_keys, domain_id, runtime, principal)


@router.post(
    "/{domain_id}/promote",
    summary="Confirm the next keys are published: they sign from now on, the old ones retire",
)
def promote_keys(domain_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> DomainDetail:
    return _change_keys(service.promote_next_keys, domain_id, runtime, principal)


def _change_keys(
    change: Callable[..., object], domain_id: uuid.UUID, runtime: Runtime, principal: Principal
) -> DomainDetail:
    with runtime.bound_session(principal.keys) as session:
        change(session, principal.tenant_id, domain_id, actor=principal.actor)
        return _detail(session, runtime, principal.tenant_id, domain_id)


@router.delete(
    "/{domain_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a sending domain"
)
def delete_domain(domain_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_domain(session, principal.tenant_id, domain_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
