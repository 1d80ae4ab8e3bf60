"""REST routes of webhooks: endpoints (CRUD, secret rotation), the delivery log,
replays and test events. Thin: permissions, shapes, service calls."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.core.runtime import Runtime
from carepost.webhooks import service
from carepost.webhooks.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("webhooks:read"))]
Writer = Annotated[Principal, Depends(require("webhooks:write"))]


def allow_loopback_http(runtime: Runtime) -> bool:
    return runtime.settings.environment in ("development", "test")


def _with_secret(created: service.CreatedSecret) -> EndpointWithSecret:
    return EndpointWithSecret(
        **EndpointOut.of(created.endpoint).model_dump(), secret=created.secret
    )


@router.get("", summary="The organization's webhook endpoints")
def list_endpoints(runtime: RuntimeDep, principal: Reader) -> EndpointList:
    with runtime.bound_session(principal.keys) as session:
        endpoints = service.list_endpoints(session, principal.tenant_id)
        return EndpointList(items=[EndpointOut.of(endpoint) for endpoint in endpoints])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add an endpoint (the answer holds its signing secret, shown once)",
)
def create_endpoint(
    body: EndpointCreate, runtime: RuntimeDep, principal: Writer
) -> EndpointWithSecret:
    with runtime.bound_session(principal.keys) as session:
        created = service.create_endpoint(
            session,
            principal.tenant_id,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            enabled=body.enabled,
            include_phi=body.include_phi,
            allow_loopback_http=allow_loopback_http(runtime),
            actor=principal.actor,
        )
        return _with_secret(created)


@router.get("/{endpoint_id}", summary="One endpoint (never its secret)")
def get_endpoint(endpoint_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> EndpointOut:
    with runtime.bound_session(principal.keys) as session:
        return EndpointOut.of(service.get_endpoint(session, principal.tenant_id, endpoint_id))


@router.patch("/{endpoint_id}", summary="Change an endpoint")
def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, runtime: RuntimeDep, principal: Writer
) -> EndpointOut:
    with runtime.bound_session(principal.keys) as session:
        endpoint = service.update_endpoint(
            session,
            principal.tenant_id,
            endpoint_id,
            changes=body.model_dump(exclude_unset=True),
            allow_loopback_http=allow_loopback_http(runtime),
            actor=principal.actor,
        )
        return EndpointOut.of(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an endpoint and its delivery log",
)
def delete_endpoint(endpoint_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_endpoint(session, principal.tenant_id, endpoint_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="Make a new secret (shown once); the old one keeps signing for 24 hours",
)
def rotate_secret(
    endpoint_id: uuid.UUID, runtime: RuntimeDep, principal: Writer
) -> EndpointWithSecret:
    with runtime.bound_session(principal.keys) as session:
        created = service.rotate_secret(
            session, principal.tenant_id, endpoint_id, actor=principal.actor
        )
        return _with_secret(created)


@router.post(
    "/{endpoint_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a webhook.test event to this endpoint",
)
def send_test_event(endpoint_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> DeliveryOut:
    with runtime.bound_session(principal.keys) as session:
        delivery = service.send_test_event(
            session, principal.tenant_id, endpoint_id, actor=principal.actor
        )
        return DeliveryOut.of(delivery)


@router.get("/{endpoint_id}/deliveries", summary="The endpoint's delivery log, newest first")
def list_deliveries(
    endpoint_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    state: Annotated[Literal["pending", "sending", "delivered", "failed"] | None, Query()] = None,
) -> Page[DeliveryOut]:
    before = decode_cursor(cursor)
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_deliveries(
            session, principal.tenant_id, endpoint_id, before=before, limit=limit + 1, state=state
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page[DeliveryOut](
            items=[DeliveryOut.of(row) for row in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )


@router.get("/{endpoint_id}/deliveries/{delivery_id}", summary="One delivery with its attempt log")
def get_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> DeliveryDetail:
    with runtime.bound_session(principal.keys) as session:
        row = service.get_delivery(session, principal.tenant_id, endpoint_id, delivery_id)
        attempts = service.delivery_attempts(session, principal.tenant_id, row.id)
        return DeliveryDetail(
            **DeliveryOut.of(row).model_dump(), log=[AttemptOut.of(a) for a in attempts]
        )


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery's event again (a new delivery with the same event id)",
)
def replay_delivery(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, runtime: RuntimeDep, principal: Writer
) -> DeliveryOut:
    with runtime.bound_session(principal.keys) as session:
        copy = service.replay_delivery(
            session, principal.tenant_id, endpoint_id, delivery_id, actor=principal.actor
        )
        return DeliveryOut.of(copy)
