"""REST routes of the key directory (``/keys``): recipients' certificates and
OpenPGP keys (list, upload, delete, lookup with optional WKD, import from a
received signed message) and the tenant's signing identities.

Reading needs ``recipient_keys:read``, changes ``recipient_keys:write``, the
tenant's signing keys ``signing_keys:write``. Whether a person has a key, and
their address, are PHI: a lookup needs ``phi:read`` too, and a list shows
addresses only to holders of ``phi:read`` (and is then audited). Addresses
travel in request bodies, never in URLs.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Response, status
from sqlalchemy.orm import Session

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.e2ee import directory
from carepost.e2ee.models import RecipientKey
from carepost.e2ee.schemas import (
    KeyLookup,
    KeyUpload,
    MessageImport,
    OpenpgpSigningCreate,
    RecipientKeyList,
    RecipientKeyOut,
    SigningKeyList,
    SigningKeyOut,
    SmimeSigningUpload,
)

PHI_PERMISSION = "phi:read"
WKD_TIMEOUT = 10.0
router = APIRouter(prefix="/keys", tags=["key directory"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("recipient_keys:read"))]
Writer = Annotated[Principal, Depends(require("recipient_keys:write"))]
SigningWriter = Annotated[Principal, Depends(require("signing_keys:write"))]


@dataclass
class WkdAccess:
    """How WKD lookups reach the network (a dependency, so tests point it at loopback)."""

    client: httpx.Client
    origins: Mapping[str, str] = field(default_factory=dict)


def get_wkd_access() -> Iterator[WkdAccess]:
    with httpx.Client(timeout=WKD_TIMEOUT, follow_redirects=False) as client:
        yield WkdAccess(client)


WkdDep = Annotated[WkdAccess, Depends(get_wkd_access)]


def _material(text: str) -> bytes:
    """PEM or armored text as is; anything else is taken as base64 DER or binary."""
    if "-----BEGIN" in text:
        return text.encode("utf-8")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return text.encode("utf-8")


def _shown(
    session: Session, principal: Principal, rows: list[RecipientKey], via: str
) -> list[RecipientKeyOut]:
    show = principal.can(PHI_PERMISSION)
    if show and rows:
        audit.record(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="recipient_key.view",
            object_type="recipient_key",
            details={"count": len(rows), "via": via},
        )
    return [RecipientKeyOut.of(row, show_address=show) for row in rows]


@router.get("", summary="List recipients' keys (addresses only with phi:read; audited)")
def list_keys(runtime: RuntimeDep, principal: Reader) -> RecipientKeyList:
    with runtime.bound_session(principal.keys) as session:
        rows = directory.list_keys(session, principal.tenant_id)
        return RecipientKeyList(items=_shown(session, principal, rows, "list"))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Upload a recipient's key")
def upload_key(body: KeyUpload, runtime: RuntimeDep, principal: Writer) -> RecipientKeyOut:
    with runtime.bound_session(principal.keys) as session:
        row = directory.add_key(
            session,
            principal.tenant_id,
            address=body.address,
            material=_material(body.material),
            kind=body.kind,
            source="upload",
            actor=principal.actor,
        )
        # The caller just sent the address: showing it back discloses nothing stored.
        return RecipientKeyOut.of(row, show_address=True)


@router.post("/lookup", summary="The usable keys of an address (needs phi:read; optional WKD)")
def lookup_keys(
    body: KeyLookup, runtime: RuntimeDep, principal: Reader, wkd: WkdDep
) -> RecipientKeyList:
    principal.require(PHI_PERMISSION)
    at = body.at.astimezone(UTC) if body.at is not None else utcnow()
    with runtime.bound_session(principal.keys) as session:
        if body.wkd:
            principal.require("recipient_keys:write")
            directory.lookup_wkd(
                session,
                principal.tenant_id,
                body.address,
                client=wkd.client,
                origins=wkd.origins,
                actor=principal.actor,
                now=at,
            )
        keys = directory.usable_keys(session, principal.tenant_id, body.address, at)
        return RecipientKeyList(items=_shown(session, principal, [k.row for k in keys], "lookup"))


@router.post(
    "/import-message",
    status_code=status.HTTP_201_CREATED,
    summary="Add the keys a received signed message carries for its sender",
)
def import_message(body: MessageImport, runtime: RuntimeDep, principal: Writer) -> RecipientKeyList:
    with runtime.bound_session(principal.keys) as session:
        rows = directory.import_from_message(
            session, principal.tenant_id, body.message.encode("utf-8"), actor=principal.actor
        )
        return RecipientKeyList(items=_shown(session, principal, rows, "import"))


@router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a recipient's key"
)
def delete_key(key_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        directory.delete_key(session, principal.tenant_id, key_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{key_id}/revoke", summary="Mark a recipient's key revoked")
def revoke_key(key_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> RecipientKeyOut:
    with runtime.bound_session(principal.keys) as session:
        row = directory.revoke_key(session, principal.tenant_id, key_id, actor=principal.actor)
        return RecipientKeyOut.of(row, show_address=False)


@router.get("/signing", summary="The organization's signing identities (public halves)")
def list_signing_keys(runtime: RuntimeDep, principal: Reader) -> SigningKeyList:
    with runtime.bound_session(principal.keys) as session:
        rows = directory.signing_keys(session, principal.tenant_id)
        return SigningKeyList(items=[SigningKeyOut.of(row) for row in rows])


@router.post(
    "/signing/smime",
    status_code=status.HTTP_201_CREATED,
    summary="Upload the organization's S/MIME signing certificate and key",
)
def upload_smime_signing(
    body: SmimeSigningUpload, runtime: RuntimeDep, principal: SigningWriter
) -> SigningKeyOut:
    with runtime.bound_session(principal.keys) as session:
        row = directory.add_smime_signing_identity(
            session,
            principal.tenant_id,
            address=body.address,
            certificate_pem=body.certificate.encode("utf-8"),
            private_key_pem=body.private_key.encode("utf-8"),
            chain_pem=body.chain.encode("utf-8"),
            actor=principal.actor,
        )
        return SigningKeyOut.of(row)


@router.post(
    "/signing/openpgp",
    status_code=status.HTTP_201_CREATED,
    summary="Generate the organization's OpenPGP key for a sender address",
)
def create_openpgp_signing(
    body: OpenpgpSigningCreate, runtime: RuntimeDep, principal: SigningWriter
) -> SigningKeyOut:
    with runtime.bound_session(principal.keys) as session:
        row = directory.create_openpgp_signing_key(
            session,
            principal.tenant_id,
            address=body.address,
            name=body.name,
            actor=principal.actor,
        )
        return SigningKeyOut.of(row)
