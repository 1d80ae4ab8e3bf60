"""REST routes for consent, topics and the suppression list (thin: permissions,
shapes, service calls, PHI-view audit).

Addresses and evidence are PHI: they travel in bodies, never in URLs, and come
back only with ``phi:read`` (each disclosure audited). Lifting a hard bounce or a
complaint needs ``suppressions:override`` (owners and admins).
"""

from __future__ import annotations

import io
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.audit import service as audit
from carepost.consent import service
from carepost.consent import suppression as suppressions
from carepost.consent.schemas import (
    ConsentCreate,
    ConsentOut,
    ContactConsents,
    CurrentConsentOut,
    ImportLineError,
    ReasonName,
    SuppressionCheck,
    SuppressionCheckOut,
    SuppressionCreate,
    SuppressionImportOut,
    SuppressionOut,
    SuppressionRemove,
    TopicCreate,
    TopicList,
    TopicOut,
)
from carepost.contacts import service as contacts
from carepost.core.errors import ValidationFailed
from carepost.core.runtime import Runtime

router = APIRouter(tags=["consent"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ConsentReader = Annotated[Principal, Depends(require("consent:read"))]
ConsentWriter = Annotated[Principal, Depends(require("consent:write"))]
SuppressionReader = Annotated[Principal, Depends(require("suppressions:read"))]
SuppressionWriter = Annotated[Principal, Depends(require("suppressions:write"))]
PHI_PERMISSION = "phi:read"


@router.post(
    "/contacts/{contact_id}/consents",
    status_code=status.HTTP_201_CREATED,
    summary="Record a consent event for a contact (appended to its history)",
)
def record_consent(
    contact_id: uuid.UUID, body: ConsentCreate, runtime: RuntimeDep, principal: ConsentWriter
) -> ConsentOut:
    with runtime.bound_session(principal.keys) as session:
        record = service.record_consent(
            session,
            principal.tenant_id,
            contact_id=contact_id,
            change=service.ConsentChange(
                channel=body.channel,
                purpose=body.purpose,
                status=body.status,
                source=body.source,
                evidence=body.evidence,
                captured_at=body.captured_at,
                expires_at=body.expires_at,
            ),
            actor=principal.actor,
        )
        # The evidence shown is what the caller just sent.
        return ConsentOut.of(record, show_phi=principal.can(PHI_PERMISSION))


@router.get(
    "/contacts/{contact_id}/consents",
    summary="A contact's current consents and their history (evidence with phi:read; audited)",
)
def contact_consents(
    contact_id: uuid.UUID, runtime: RuntimeDep, principal: ConsentReader
) -> ContactConsents:
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        contact = contacts.get_contact(session, principal.tenant_id, contact_id, with_phi=False)
        history = service.consent_history(session, principal.tenant_id, contact_id)
        current = service.current_rows(session, principal.tenant_id, contact_id)
        if show_phi and any(record.evidence is not None for record in history):
            contacts.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=[contact],
                via="consents",
            )
        return ContactConsents(
            current=[CurrentConsentOut.of(row) for row in current],
            history=[ConsentOut.of(record, show_phi=show_phi) for record in history],
        )


@router.get("/topics", summary="The organization's topics (purposes recipients choose)")
def list_topics(runtime: RuntimeDep, principal: ConsentReader) -> TopicList:
    with runtime.bound_session(principal.keys) as session:
        topics = service.list_topics(session, principal.tenant_id)
        return TopicList(items=[TopicOut.of(topic) for topic in topics])


@router.post("/topics", status_code=status.HTTP_201_CREATED, summary="Add a topic")
def create_topic(body: TopicCreate, runtime: RuntimeDep, principal: ConsentWriter) -> TopicOut:
    with runtime.bound_session(principal.keys) as session:
        topic = service.create_topic(
            session,
            principal.tenant_id,
            key=body.key,
            name=body.name,
            description=body.description,
            channels=body.channels,
            actor=principal.actor,
        )
        return TopicOut.of(topic)


@router.get(
    "/suppressions",
    summary="The suppression list (addresses only with phi:read; each page audited)",
)
def list_suppressions(
    request: Request,
    runtime: RuntimeDep,
    principal: SuppressionReader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[SuppressionOut]:
    if "address" in request.query_params:
        # A search by address in the query string would land in access logs.
        raise ValidationFailed(
            "PHI never goes in a URL: check an address with POST /api/v1/suppressions/check",
            field="#/query/address",
        )
    after = decode_cursor(cursor)
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        entries = suppressions.list_suppressions(
            session, principal.tenant_id, after=after, limit=limit + 1
        )
        more = len(entries) > limit
        entries = entries[:limit]
        if show_phi and entries:
            audit.record(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                action="suppression.view_phi",
                object_type="suppression",
                details={"count": len(entries), "suppression_ids": [str(e.id) for e in entries]},
            )
        return Page[SuppressionOut](
            items=[SuppressionOut.of(e, show_phi=show_phi) for e in entries],
            next_cursor=encode_cursor(entries[-1].id) if more else None,
        )


@router.post(
    "/suppressions",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Already listed (its scope widened if this one is broader)"}},
    summary="Suppress an address (sent in the body, never the URL)",
)
def add_suppression(
    body: SuppressionCreate, response: Response, runtime: RuntimeDep, principal: SuppressionWriter
) -> SuppressionOut:
    with runtime.bound_session(principal.keys) as session:
        entry, created = suppressions.add_suppression(
            session,
            principal.keys,
            address=body.address,
            reason=body.reason,
            scope=body.scope,
            source="api",
            actor=principal.actor,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        # Only the address the caller sent is shown back.
        return SuppressionOut.of(entry, show_phi=principal.can(PHI_PERMISSION))


@router.post("/suppressions/check", summary="Is this address suppressed for this purpose?")
def check_suppression(
    body: SuppressionCheck, runtime: RuntimeDep, principal: SuppressionReader
) -> SuppressionCheckOut:
    with runtime.bound_session(principal.keys) as session:
        match = suppressions.suppression_match(session, principal.keys, body.address)
        blocked = suppressions.is_suppressed(session, principal.keys, body.address, body.purpose)
        return SuppressionCheckOut(
            suppressed=blocked,
            listed=match is not None,
            reason=match.reason if match else None,
            scope=match.scope if match else None,
        )


@router.post(
    "/suppressions/import",
    summary="Import a CSV of addresses (columns: address, optional reason and scope)",
)
def import_suppressions(
    runtime: RuntimeDep,
    principal: SuppressionWriter,
    file: Annotated[UploadFile, File(description="UTF-8 CSV with a header line")],
    reason: Annotated[ReasonName, Form()] = "imported",
) -> SuppressionImportOut:
    # Read line by line from the spooled upload: the file is never held in memory whole.
    text = io.TextIOWrapper(file.file, encoding="utf-8-sig", errors="replace", newline="")
    with runtime.bound_session(principal.keys) as session:
        report = suppressions.import_suppressions(
            session, principal.keys, text, actor=principal.actor, default_reason=reason
        )
    text.detach()
    return SuppressionImportOut(
        imported=report.imported,
        already_listed=report.already_listed,
        rejected=report.rejected,
        errors=[
            ImportLineError(line=line, column=column, detail=detail)
            for line, column, detail in report.errors
        ],
    )


@router.delete(
    "/suppressions/{suppression_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Lift a suppression, saying why (bounces and complaints need an admin)",
)
def remove_suppression(
    suppression_id: uuid.UUID,
    body: SuppressionRemove,
    runtime: RuntimeDep,
    principal: SuppressionWriter,
) -> Response:
    with runtime.bound_session(principal.keys) as session:
        suppressions.remove_suppression(
            session,
            principal.keys,
            suppression_id=suppression_id,
            reason=body.reason,
            actor=principal.actor,
            may_override=principal.can(suppressions.OVERRIDE_PERMISSION),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
