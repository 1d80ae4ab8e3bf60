"""REST routes for the SMTP gateway's clients (``/gateway/clients``): list, read,
create (the SMTP AUTH secret is in the creation's answer only), change
(``PATCH``), rotate the secret (``POST .../secret``: the new one is in that answer
only, the old one stops working), delete.

Reading needs ``tenant:read`` (no secret is ever returned but once); creating,
changing, rotating and deleting need ``domains:write`` (owners and admins: a client
sends as the organization's domains).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.core.runtime import Runtime
from carepost.core.text import SingleLineText
from carepost.gateway import replies, service
from carepost.gateway.models import GatewayClient, InboundRoute

router = APIRouter(prefix="/gateway", tags=["smtp gateway"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("tenant:read"))]
Writer = Annotated[Principal, Depends(require("domains:write"))]


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=100)
    sender_domains: list[SingleLineText] = Field(
        min_length=1, max_length=50, description="Verified sending domains it may relay for"
    )
    networks: list[SingleLineText] = Field(
        default_factory=list, max_length=100, description="CIDR networks it connects from"
    )
    cert_fingerprints: list[SingleLineText] = Field(
        default_factory=list, max_length=20, description="SHA-256 of its TLS client certificates"
    )
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    max_recipients: int = Field(default=100, ge=1, le=1000)


class ClientUpdate(BaseModel):
    """The fields to change; a field left out stays as it is (a list given replaces
    the whole list)."""

    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=100)
    sender_domains: list[SingleLineText] | None = Field(default=None, min_length=1, max_length=50)
    networks: list[SingleLineText] | None = Field(default=None, max_length=100)
    cert_fingerprints: list[SingleLineText] | None = Field(default=None, max_length=20)
    max_message_bytes: int | None = Field(default=None, ge=1024, le=100 * 1024 * 1024)
    max_recipients: int | None = Field(default=None, ge=1, le=1000)


class ClientOut(BaseModel):
    id: uuid.UUID
    name: str
    username: str
    sender_domains: list[str]
    networks: list[str]
    cert_fingerprints: list[str]
    max_message_bytes: int
    max_recipients: int
    enabled: bool
    created_at: datetime

    @classmethod
    def of(cls, row: GatewayClient) -> ClientOut:
        return cls(
            id=row.id,
            name=row.name,
            username=row.username,
            sender_domains=list(row.sender_domains),
            networks=list(row.networks),
            cert_fingerprints=list(row.cert_fingerprints),
            max_message_bytes=row.max_message_bytes,
            max_recipients=row.max_recipients,
            enabled=row.enabled,
            created_at=row.created_at,
        )


class ClientCreated(ClientOut):
    secret: str = Field(description="The SMTP AUTH password: shown this once, stored hashed")


class ClientList(BaseModel):
    items: list[ClientOut]


@router.get("/clients", summary="List the SMTP gateway's clients")
def list_clients(runtime: RuntimeDep, principal: Reader) -> ClientList:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_clients(session, principal.tenant_id)
        return ClientList(items=[ClientOut.of(row) for row in rows])


@router.post(
    "/clients",
    status_code=status.HTTP_201_CREATED,
    summary="Add a gateway client (its SMTP AUTH secret is shown once)",
)
def create_client(body: ClientCreate, runtime: RuntimeDep, principal: Writer) -> ClientCreated:
    with runtime.bound_session(principal.keys) as session:
        row, secret = service.create_client(
            session,
            principal.tenant_id,
            name=body.name,
            sender_domains=body.sender_domains,
            networks=body.networks,
            cert_fingerprints=body.cert_fingerprints,
            max_message_bytes=body.max_message_bytes,
            max_recipients=body.max_recipients,
            actor=principal.actor,
        )
        return ClientCreated(**ClientOut.of(row).model_dump(), secret=secret)


@router.get("/clients/{client_id}", summary="A gateway client")
def get_client(client_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> ClientOut:
    with runtime.bound_session(principal.keys) as session:
        return ClientOut.of(service.get_client(session, principal.tenant_id, client_id))


@router.patch("/clients/{client_id}", summary="Change a gateway client")
def update_client(
    client_id: uuid.UUID, body: ClientUpdate, runtime: RuntimeDep, principal: Writer
) -> ClientOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_client(
            session,
            principal.tenant_id,
            client_id,
            actor=principal.actor,
            name=body.name,
            sender_domains=body.sender_domains,
            networks=body.networks,
            cert_fingerprints=body.cert_fingerprints,
            max_message_bytes=body.max_message_bytes,
            max_recipients=body.max_recipients,
        )
        return ClientOut.of(row)


@router.post(
    "/clients/{client_id}/secret",
    summary="Rotate a gateway client's SMTP AUTH secret (the new one is shown once)",
)
def rotate_secret(client_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> ClientCreated:
    with runtime.bound_session(principal.keys) as session:
        row, secret = service.rotate_secret(
            session, principal.tenant_id, client_id, actor=principal.actor
        )
        return ClientCreated(**ClientOut.of(row).model_dump(), secret=secret)


@router.delete(
    "/clients/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a gateway client (it can relay no more)",
)
def delete_client(client_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_client(session, principal.tenant_id, client_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- inbound secure replies: the organization's route ----------------------------------


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: SingleLineText = Field(min_length=1, max_length=253, description="Its mail server")
    port: int = Field(default=25, ge=1, le=65535)
    tls_mode: Literal["verify", "encrypt"] = Field(
        default="verify",
        description="verify: certificate checked against host; encrypt: TLS, any certificate",
    )
    ca_certificate: str = Field(
        default="", max_length=20_000, description="PEM CA certificates to trust (optional)"
    )
    enabled: bool = True


class RouteOut(BaseModel):
    host: str
    port: int
    tls_mode: str
    ca_certificate: bool
    enabled: bool
    updated_at: datetime

    @classmethod
    def of(cls, row: InboundRoute) -> RouteOut:
        return cls(
            host=row.host,
            port=row.port,
            tls_mode=row.tls_mode,
            ca_certificate=bool(row.ca_certificate),
            enabled=row.enabled,
            updated_at=row.updated_at,
        )


@router.get(
    "/inbound-route",
    summary="Where inbound secure replies are delivered (null when there is no route)",
)
def get_route(runtime: RuntimeDep, principal: Reader) -> RouteOut | None:
    with runtime.bound_session(principal.keys) as session:
        row = replies.get_route(session, principal.tenant_id)
        return None if row is None else RouteOut.of(row)


@router.put(
    "/inbound-route",
    summary="Set the mail server inbound secure replies are delivered to (TLS required)",
)
def set_route(body: RouteIn, runtime: RuntimeDep, principal: Writer) -> RouteOut:
    with runtime.bound_session(principal.keys) as session:
        row = replies.set_route(
            session,
            principal.tenant_id,
            host=body.host,
            port=body.port,
            tls_mode=body.tls_mode,
            ca_certificate=body.ca_certificate,
            enabled=body.enabled,
            actor=principal.actor,
        )
        return RouteOut.of(row)


@router.delete(
    "/inbound-route",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove the inbound route (replies are refused at RCPT from then on)",
)
def delete_route(runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        replies.delete_route(session, principal.tenant_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
